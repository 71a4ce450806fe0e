"""Patient facts: what the rules need to know, read once from the request and the resolved
prefetch.

Each fact is declared in FACTS with the prefetch keys it reads and the check a data-unavailable
card names when those keys, or a resource the fact reads, could not be had or read. A fact is
built the first time a rule asks for it, and never changes after; a rule asks for facts by name
(its function's parameters), so it cannot read one it did not declare.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from ..knowledge import Knowledge
from ..prefetch import FAILED, KeyData, Resolved
from . import conditions, counts, measurements, orders, pgx

CHECK_ORDER = "the draft order"
CHECK_MEDS = "current medications"
_NO_DATA = KeyData("none", ())


@dataclass(frozen=True)
class Request:
    """What the facts read from the hook request itself."""
    hook: str
    drafts: tuple[dict, ...]
    selections: frozenset[str] | None     # None: every draft is judged


@dataclass(frozen=True)
class FactSpec:
    keys: tuple[str, ...]                 # the prefetch keys it reads
    check: str                            # how a data-unavailable card names it
    build: Callable[[Facts], object]


def _words(key: str) -> str:
    """A prefetch key as words: medicationStatements -> medication statements."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", key).lower()


class Facts:
    """The facts of one request, each built once, on first use."""

    def __init__(self, request: Request, resolved: Resolved, knowledge: Knowledge,
                 now: datetime) -> None:
        self.request = request
        self.resolved = resolved
        self.knowledge = knowledge
        self.now = now
        self._values: dict[str, object] = {}
        self._problems: dict[str, list[str]] = {}

    def __getitem__(self, name: str) -> object:
        if name not in self._values:
            spec = FACTS[name]
            for key in spec.keys:
                item = self.data(key)
                if item.status == FAILED:  # a fact of several keys says which one failed
                    self.problem(spec.check, item.problem if len(spec.keys) == 1 else
                                 f"{item.problem} ({_words(key)})")
            self._values[name] = spec.build(self)
        return self._values[name]

    def data(self, key: str) -> KeyData:
        return self.resolved.keys.get(key, _NO_DATA)

    def complete(self, key: str) -> bool:
        return self.data(key).status != FAILED

    def problem(self, check: str, reason: str) -> None:
        self._problems.setdefault(check, []).append(reason)

    def problems(self, check: str, reasons: tuple[str, ...] | list[str]) -> None:
        for reason in reasons:
            self.problem(check, reason)

    @property
    def unavailable(self) -> Mapping[str, list[str]]:
        """check -> why, for every fact built so far (call it after the rules have run)."""
        return self._problems


def _orders(facts: Facts) -> orders.Orders:
    knowledge, request = facts.knowledge, facts.request
    medications = facts.resolved.medications
    unresolved = facts.resolved.medication_problems
    problems: dict[str, list[str]] = {CHECK_ORDER: [], CHECK_MEDS: []}
    built = []
    for resource in request.drafts:
        if resource.get("resourceType") not in orders.ORDER_TYPES:
            continue  # other request types (ServiceRequest, NutritionOrder...) are context only
        ref = orders.ref_of(resource)
        judged = request.selections is None or ref in request.selections
        built.append(orders.make_order(resource, medications, knowledge, draft=True,
                                       judged=judged, problems=problems[CHECK_ORDER],
                                       unresolved=unresolved))
    judge_active = request.hook == "patient-view"
    listed = [*facts.data("medications").resources, *facts.data("medicationStatements").resources]
    for resource in listed:
        if orders.is_active(resource):
            order = orders.make_order(resource, medications, knowledge, draft=False,
                                      judged=False, problems=problems[CHECK_MEDS],
                                      unresolved=unresolved)
            if judge_active and order.drug_class == "thiopurine":
                order = replace(order, judged=True)
            built.append(order)
    for check, reasons in problems.items():
        facts.problems(check, reasons)
    complete = facts.complete("medications") and facts.complete("medicationStatements")
    return orders.Orders.of(built, complete=complete)


def _courses(facts: Facts) -> dict[str, orders.Order]:
    """For each judged active order: the order that started its course at the current dose."""
    knowledge, problems = facts.knowledge, []
    history = [orders.make_order(r, facts.resolved.medications, knowledge, draft=False,
                                 judged=False, problems=problems)
               for r in facts.data("thiopurineHistory").resources
               if r.get("resourceType") in orders.ORDER_TYPES]
    facts.problems(FACTS["courses"].check, problems)
    mine = [*history, *facts["orders"].all]
    return {o.ref: orders.course_start(o, mine) for o in facts["orders"].judged if not o.draft}


def _pgx(facts: Facts) -> pgx.PgxResults:
    results = pgx.read_pgx(facts.data("pgxResults").resources, facts.knowledge,
                           facts.complete("pgxResults"))
    facts.problems(FACTS["pgx"].check, results.problems)
    return results


def _counts(facts: Facts) -> counts.Counts:
    found = counts.read_counts(facts.data("bloodCounts").resources, facts.knowledge, facts.now,
                               facts.complete("bloodCounts"))
    facts.problems(FACTS["counts"].check, found.problems)
    return found


def _conditions(facts: Facts) -> conditions.Conditions:
    judged = facts["orders"].judged
    return conditions.read_conditions(facts.data("conditions").resources, judged,
                                      facts.knowledge)


def _pregnancy(facts: Facts) -> dict[str, conditions.Mention]:
    """Pregnancy and breastfeeding: from active conditions, else the latest status
    Observation (an order's reason counts for that order: `Conditions.for_order`)."""
    found = facts["conditions"].active
    problems: list[str] = []
    status = conditions.status_mentions(facts.data("pregnancyStatus").resources,
                                        facts.knowledge, problems)
    facts.problems(FACTS["pregnancy"].check, problems)
    return {name: found.get(name) or status[name] for name in ("pregnancy", "breastfeeding")
            if found.get(name) or name in status}


def _weight(facts: Facts) -> measurements.Measurement | None:
    problems: list[str] = []
    weight = measurements.read_weight(facts.data("weight").resources, facts.knowledge,
                                      facts.now, problems)
    facts.problems(FACTS["weight"].check, problems)
    return weight


def _liver(facts: Facts) -> tuple[measurements.Measurement, ...]:
    problems: list[str] = []
    liver = measurements.read_liver(facts.data("liverTests").resources, facts.knowledge,
                                    facts.now, problems)
    facts.problems(FACTS["liver"].check, problems)
    return liver


def _allergies(facts: Facts) -> tuple[conditions.Allergy, ...]:
    return conditions.read_allergies(facts.data("allergies").resources, facts.knowledge)


def _alkylating(facts: Facts) -> conditions.PastDrug | None:
    return conditions.read_alkylating(facts.data("alkylatingHistory").resources,
                                      facts["orders"].all, facts.resolved.medications,
                                      facts.knowledge)


FACTS: dict[str, FactSpec] = {
    "now": FactSpec((), "the clock", lambda facts: facts.now),
    "orders": FactSpec(("medications", "medicationStatements"), CHECK_MEDS, _orders),
    "pgx": FactSpec(("pgxResults",), "TPMT/NUDT15 results", _pgx),
    "counts": FactSpec(("bloodCounts",), "blood counts", _counts),
    "conditions": FactSpec(("conditions",), "conditions (ITP, pregnancy, rheumatoid arthritis)",
                           _conditions),
    "pregnancy": FactSpec(("pregnancyStatus",),
                          "pregnancy and breastfeeding status", _pregnancy),
    "weight": FactSpec(("weight",), "body weight (dose per kg)", _weight),
    "liver": FactSpec(("liverTests",), "liver tests", _liver),
    "allergies": FactSpec(("allergies",), "allergies", _allergies),
    "courses": FactSpec(("thiopurineHistory",), "past thiopurine orders (course start)",
                        _courses),
    "alkylating": FactSpec(("alkylatingHistory",), "past alkylating agents", _alkylating),
}
# Facts a fact's builder reads: their keys count as the dependant's too (start-up wiring check).
DEPENDS = {"conditions": ("orders",), "pregnancy": ("conditions",), "alkylating": ("orders",),
           "courses": ("orders",)}


def keys_of(name: str) -> set[str]:
    """Every prefetch key a fact reads, through the facts it depends on."""
    return set(FACTS[name].keys).union(*(keys_of(d) for d in DEPENDS.get(name, ())))

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
    # (facts, problems): what the builder cannot read it appends to problems, said under check
    build: Callable[[Facts, list[str]], object]


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
            problems: list[str] = []
            self._values[name] = spec.build(self, problems)
            self.problems(spec.check, problems)
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


def _orders(facts: Facts, problems: list[str]) -> orders.Orders:
    """`problems`: the active list's (CHECK_MEDS); a draft's go under CHECK_ORDER."""
    knowledge, request = facts.knowledge, facts.request
    medications = facts.resolved.medications
    unresolved = facts.resolved.medication_problems
    drafts: list[str] = []
    built = []
    for resource in request.drafts:
        if resource.get("resourceType") not in orders.ORDER_TYPES:
            continue  # other request types (ServiceRequest, NutritionOrder...) are context only
        ref = orders.ref_of(resource)
        judged = request.selections is None or ref in request.selections
        built.append(orders.make_order(resource, medications, knowledge, draft=True,
                                       judged=judged, problems=drafts,
                                       unresolved=unresolved))
    judge_active = request.hook == "patient-view"
    listed = [*facts.data("medications").resources, *facts.data("medicationStatements").resources]
    for resource in listed:
        if orders.is_active(resource):
            order = orders.make_order(resource, medications, knowledge, draft=False,
                                      judged=False, problems=problems,
                                      unresolved=unresolved)
            if judge_active and order.drug_class == "thiopurine":
                order = replace(order, judged=True)
            built.append(order)
    facts.problems(CHECK_ORDER, drafts)
    complete = facts.complete("medications") and facts.complete("medicationStatements")
    return orders.Orders.of(built, complete=complete)


def _courses(facts: Facts, problems: list[str]) -> dict[str, orders.Order]:
    """For each judged active order: the order that started its course at the current dose."""
    knowledge = facts.knowledge
    history = [orders.make_order(r, facts.resolved.medications, knowledge, draft=False,
                                 judged=False, problems=problems)
               for r in facts.data("thiopurineHistory").resources
               if r.get("resourceType") in orders.ORDER_TYPES]
    mine = [*history, *facts["orders"].all]
    return {o.ref: orders.course_start(o, mine) for o in facts["orders"].judged if not o.draft}


def _pgx(facts: Facts, problems: list[str]) -> pgx.PgxResults:
    results = pgx.read_pgx(facts.data("pgxResults").resources, facts.knowledge,
                           facts.complete("pgxResults"))
    problems += results.problems
    return results


def _counts(facts: Facts, problems: list[str]) -> counts.Counts:
    found = counts.read_counts(facts.data("bloodCounts").resources, facts.knowledge, facts.now,
                               facts.complete("bloodCounts"))
    problems += found.problems
    return found


def _conditions(facts: Facts, _: list[str]) -> conditions.Conditions:
    judged = facts["orders"].judged
    return conditions.read_conditions(facts.data("conditions").resources, judged,
                                      facts.knowledge)


def _pregnancy(facts: Facts, problems: list[str]) -> dict[str, conditions.Mention]:
    """Pregnancy and breastfeeding: from active conditions, else the latest status
    Observation (an order's reason counts for that order: `Conditions.for_order`)."""
    found = facts["conditions"].active
    status = conditions.status_mentions(facts.data("pregnancyStatus").resources,
                                        facts.knowledge, problems)
    return {name: found.get(name) or status[name] for name in ("pregnancy", "breastfeeding")
            if found.get(name) or name in status}


def _weight(facts: Facts, problems: list[str]) -> measurements.Measurement | None:
    return measurements.read_weight(facts.data("weight").resources, facts.knowledge, facts.now,
                                    problems)


def _liver(facts: Facts, problems: list[str]) -> tuple[measurements.Measurement, ...]:
    return measurements.read_liver(facts.data("liverTests").resources, facts.knowledge,
                                   facts.now, problems)


def _allergies(facts: Facts, _: list[str]) -> tuple[conditions.Allergy, ...]:
    return conditions.read_allergies(facts.data("allergies").resources, facts.knowledge)


def _alkylating(facts: Facts, _: list[str]) -> conditions.PastDrug | None:
    return conditions.read_alkylating(facts.data("alkylatingHistory").resources,
                                      facts["orders"].all, facts.resolved.medications,
                                      facts.knowledge)


FACTS: dict[str, FactSpec] = {
    "now": FactSpec((), "the clock", lambda facts, _: facts.now),
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

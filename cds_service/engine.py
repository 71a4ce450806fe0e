"""One way through: validated request -> prefetch resolution -> facts -> rules -> cards."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from . import cards, prefetch
from .config import Settings
from .facts import CHECK_ORDER, FACTS, Facts, Request
from .facts.orders import ORDER_TYPES
from .fhir_read import reference
from .findings import Evidence, Finding
from .knowledge import Knowledge
from .protocol import HookRequest
from .rules import RULES, Rule


@dataclass(frozen=True)
class Result:
    cards: list[dict]
    findings: list[Finding]


def _judges_anything(request: HookRequest) -> bool:
    """Patient-view judges the active list; the order hooks a judged medication draft."""
    return request.hook == "patient-view" or any(
        o["resourceType"] in ORDER_TYPES and (request.selections is None or reference(o) in
                                              request.selections) for o in request.orders)


def run_rules(facts: Facts, knowledge: Knowledge, names: tuple[str, ...] | list[str]
              ) -> list[Finding]:
    """Each rule on each judged order it applies to, dose sense on each order's findings, then
    data-unavailable on the checks of the facts those rules asked for (on patient-view the
    active medication list is itself what is judged)."""
    rules = [RULES[name] for name in names]
    sense = RULES["dose-sense"]
    findings: list[Finding] = []
    hook = facts.request.hook
    needed = {"orders"} if hook == "patient-view" else set()

    def run(rule: Rule, first: object) -> list[Finding]:
        needed.update(rule.needs)
        return rule.evaluate(first, knowledge, **{name: facts[name] for name in rule.needs})

    for order in facts["orders"].judged:
        mine = [f for rule in rules if order.drug_class in rule.applies_to
                for f in run(rule, order)]
        if any(knowledge.cards.findings[f.key].if_reduced for f in mine):
            mine = run(sense, mine)
        findings += mine
    checks = {FACTS[name].check for name in needed if name in FACTS} | {CHECK_ORDER}
    unavailable = {c: r for c, r in facts.unavailable.items() if c in checks}
    return findings + RULES["data-unavailable"].evaluate(hook, knowledge,
                                                         unavailable=unavailable)


def evaluate(request: HookRequest, knowledge: Knowledge, settings: Settings, now: datetime,
             base_url: str = "") -> Result:
    """`base_url`: the service's own public URL, for the cards' links to its pages."""
    if not _judges_anything(request):
        return Result([], [])  # nothing this service judges: no data fetched
    deadline = time.monotonic() + settings.time_budget_ms / 1000
    client = prefetch.connect(request, settings, deadline)  # one per call: its caps span all
    resolved = prefetch.resolve(request, knowledge.queries(request.service.id), client,
                                knowledge.fallbacks)
    facts = Facts(Request(request.hook, request.orders, request.selections), resolved,
                  knowledge, now)
    findings = run_rules(facts, knowledge, request.service.rules)
    plan = cards.dose_plan(findings, knowledge)
    return Result([cards.render(f, knowledge, request.patient_id, base_url, plan)
                   for f in findings], findings)


def failure_card(knowledge: Knowledge, base_url: str = "") -> dict:
    """What a hook call answers if the service itself fails: never an empty, safe-looking list."""
    reason = "an internal error stopped the evaluation; it has been logged"
    finding = Finding("data-unavailable", None, {"checks": ("all checks",)},
                      (Evidence("unavailable", {"check": "all checks", "reason": reason}),))
    return cards.render(finding, knowledge, "unknown", base_url)

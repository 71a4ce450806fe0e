"""Dose sense: a card that advises a dose reduction becomes its quieter variant (`if_reduced`
in cards/rules.yaml) only when the ordered dose already sits inside every reduction that applies
to the order together (their product), judged against the lowest usual dose for the order's
indication, and never when the phenotype is uncertain. Either way, with a weight, the card
gets the per-kg evidence and the reduced limit in mg/day, which its suggested dose keeps to.

Run by the engine on each judged order's findings, after the rules that made them."""

from __future__ import annotations

import math
from dataclasses import replace

from ..facts.conditions import Conditions
from ..facts.measurements import Measurement
from ..facts.orders import Order, Orders
from ..facts.pgx import PgxResults
from ..findings import Evidence, Finding
from ..knowledge import Knowledge
from . import THIOPURINE, XO_INHIBITOR, Rule, xanthine_oxidase
from . import pgx as pgx_rule
from .dose import SENSED, lowest_usual, mg_kg_day


def _reductions(target: Order, knowledge: Knowledge, pgx: PgxResults, orders: Orders,
                conditions: Conditions) -> list[str]:
    """The findings with a reduced range that apply to the target order."""
    keys = [pgx_rule.ladder_finding(target, pgx, conditions, knowledge),
            xanthine_oxidase.inhibitor_finding(target, orders, knowledge)]
    return [k for k in keys if k and knowledge.cards.findings[k].if_reduced]


def dose_sense(findings: list[Finding], knowledge: Knowledge, *, pgx: PgxResults,
               orders: Orders, weight: Measurement | None,
               conditions: Conditions) -> list[Finding]:
    sensed = []
    for finding in findings:
        spec = knowledge.cards.findings[finding.key].if_reduced
        target = finding.target or finding.order
        if spec is None or target is None or pgx.uncertain:
            sensed.append(finding)
            continue
        keys = _reductions(target, knowledge, pgx, orders, conditions)
        fraction = math.prod(knowledge.cards.findings[k].if_reduced.max_fraction for k in keys)
        usual = lowest_usual(target, conditions, orders, knowledge)
        dose = mg_kg_day(target, weight)
        if usual is None or dose is None:
            sensed.append(finding)
            continue
        values = {"dose_kg": dose, "usual": usual[0], "indication": usual[1],
                  "limit_kg": fraction * usual[0],
                  "reductions": tuple(knowledge.cards.findings[k].if_reduced.reason
                                      for k in keys),
                  # for the suggested dose (cards.py): it must land inside this limit
                  "usual_day": usual[0] * weight.value,
                  "limit_day": fraction * usual[0] * weight.value}
        evidence = Evidence("dose-per-kg", {**values, "weight": weight.value,
                                            "resource": weight.resource})
        key = spec.finding if dose <= fraction * usual[0] else finding.key
        sensed.append(replace(finding, key=key, values={**finding.values, **values},
                              evidence=(*finding.evidence, evidence)))
    return sensed


RULE = Rule(
    name="dose-sense", evaluate=dose_sense, applies_to=frozenset({THIOPURINE, XO_INHIBITOR}),
    values=SENSED, evidence={"dose-per-kg": SENSED | {"weight", "resource"}},
)

"""Label drug interactions, from either side: an interacting drug next to a thiopurine order,
or an interacting drug ordered for a patient on a thiopurine. The drugs, their effect and the
finding each gives are data (cards/drugs.yaml `interaction`)."""

from __future__ import annotations

from ..facts.orders import Order, Orders
from ..findings import Finding
from ..knowledge import Knowledge
from . import THIOPURINE, Rule
from .evidence import ORDER, order_evidence

INTERACTING = "interacting"
FINDINGS = ("drug-interaction-warning", "drug-interaction-info")


def _finding(order: Order, thiopurine: Order, other: Order, knowledge: Knowledge) -> Finding:
    spec = knowledge.drugs[other.drug].interaction
    partner = other if order is thiopurine else thiopurine
    values = {"drug": knowledge.drugs[thiopurine.drug].display,
              "other": knowledge.drugs[other.drug].display, "effect": spec.effect}
    return Finding(spec.finding, order, values, (order_evidence(partner, knowledge),),
                   partner=partner)


def interactions(order: Order, knowledge: Knowledge, *, orders: Orders) -> list[Finding]:
    if order.drug_class == INTERACTING:
        # the interacting drug is ordered: against an active thiopurine (a judged thiopurine
        # draft gets the card from its own side)
        thiopurine = orders.first(THIOPURINE, "unjudged")
        return [_finding(order, thiopurine, order, knowledge)] if thiopurine else []
    findings = []
    for drug, others in orders.by_drug.items():
        other = next((o for o in others if o is not order), None)
        if knowledge.drugs[drug].interaction and other is not None:
            findings.append(_finding(order, order, other, knowledge))
    return findings


RULE = Rule(
    name="interactions", evaluate=interactions, applies_to=frozenset({THIOPURINE, INTERACTING}),
    values=frozenset({"drug", "other", "effect"}), findings=FINDINGS, evidence=ORDER,
    findings_in=lambda k: {d.interaction.finding for d in k.drugs.values() if d.interaction},
)

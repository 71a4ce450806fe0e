"""Label drug interactions: one card per interacting drug next to the thiopurine order. The
drugs, their effect and the finding each gives are data (cards/drugs.yaml `interaction`)."""

from __future__ import annotations

from ..facts.orders import Order, Orders
from ..findings import Finding
from ..knowledge import Knowledge
from . import THIOPURINE, Rule
from .evidence import ORDER, order_evidence

FINDINGS = ("drug-interaction-warning", "drug-interaction-info")


def interactions(order: Order, knowledge: Knowledge, *, orders: Orders) -> list[Finding]:
    findings = []
    for drug, others in orders.by_drug.items():
        spec = knowledge.drugs[drug].interaction
        other = next((o for o in others if o is not order), None)
        if spec is None or other is None:
            continue
        values = {"drug": knowledge.drugs[order.drug].display,
                  "other": knowledge.drugs[drug].display, "effect": spec.effect}
        findings.append(Finding(spec.finding, order, values, (order_evidence(other, knowledge),)))
    return findings


RULE = Rule(
    name="interactions", evaluate=interactions, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "other", "effect"}), findings=FINDINGS, evidence=ORDER,
    findings_in=lambda k: {d.interaction.finding for d in k.drugs.values() if d.interaction},
)

"""Pregnancy (contraindicated with rheumatoid arthritis) and breastfeeding."""

from __future__ import annotations

from ..facts.conditions import Conditions, Mention
from ..facts.orders import Order
from ..findings import Finding
from ..knowledge import Knowledge
from . import THIOPURINE, Rule
from .evidence import CONDITION, condition_evidence


def pregnancy(order: Order, knowledge: Knowledge, *, pregnancy: dict[str, Mention],
              conditions: Conditions) -> list[Finding]:
    values = {"drug": knowledge.drugs[order.drug].display}
    findings = []
    own = conditions.for_order(order)
    found = {name: own.get(name) or pregnancy.get(name) for name in ("pregnancy", "breastfeeding")}
    pregnant, ra = found["pregnancy"], own.get("rheumatoid-arthritis")
    if pregnant:
        evidence = [condition_evidence("pregnancy", pregnant, knowledge)]
        if ra:
            evidence.append(condition_evidence("rheumatoid-arthritis", ra, knowledge))
        findings.append(Finding("pregnancy-ra" if ra else "pregnancy", order, values,
                                tuple(evidence)))
    if found["breastfeeding"]:
        evidence = (condition_evidence("breastfeeding", found["breastfeeding"], knowledge),)
        findings.append(Finding("breastfeeding", order, values, evidence))
    return findings


RULE = Rule(
    name="pregnancy", evaluate=pregnancy, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug"}), findings=("pregnancy", "pregnancy-ra", "breastfeeding"),
    evidence=CONDITION,
)

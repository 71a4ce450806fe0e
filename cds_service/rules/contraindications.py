"""Contraindications: a recorded allergy to azathioprine or mercaptopurine; rheumatoid arthritis
after an alkylating agent (azathioprine)."""

from __future__ import annotations

from ..facts.conditions import Allergy, Conditions, PastDrug
from ..facts.orders import Order
from ..findings import Evidence, Finding
from ..knowledge import Knowledge
from . import THIOPURINE, Rule
from .evidence import CONDITION, condition_evidence


def contraindications(order: Order, knowledge: Knowledge, *, allergies: tuple[Allergy, ...],
                      conditions: Conditions, alkylating: PastDrug | None) -> list[Finding]:
    findings = []
    drug = knowledge.drugs[order.drug].display
    group = knowledge.drugs[order.drug].allergy_group
    allergy = next((a for a in allergies
                    if group and knowledge.drugs[a.drug].allergy_group == group), None)
    if allergy:
        values = {"drug": drug, "allergen": knowledge.drugs[allergy.drug].display}
        findings.append(Finding("hypersensitivity", order, values,
                                (Evidence("allergy", {"resource": allergy.resource}),)))
    ra = conditions.for_order(order).get("rheumatoid-arthritis")
    if order.drug == "azathioprine" and ra and alkylating:
        evidence = (condition_evidence("rheumatoid-arthritis", ra, knowledge),
                    Evidence("alkylating", {"resource": alkylating.resource,
                                            "status": alkylating.status}))
        values = {"drug": drug, "agent": knowledge.drugs[alkylating.drug].display}
        findings.append(Finding("ra-alkylating", order, values, evidence))
    return findings


RULE = Rule(
    name="contraindications", evaluate=contraindications, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "allergen", "agent"}), findings=("hypersensitivity", "ra-alkylating"),
    evidence={"allergy": frozenset({"resource"}),
              "alkylating": frozenset({"resource", "status"}), **CONDITION},
)

"""Patient-view: ALT or AST above a multiple of the lab's upper limit, or flagged critical."""

from __future__ import annotations

from ..facts.measurements import Measurement
from ..facts.orders import Order
from ..findings import Evidence, Finding
from ..knowledge import Knowledge
from . import THIOPURINE, Rule

LIVER = frozenset({"analyte", "value", "unit", "date", "resource", "limit"})


def hepatotoxicity(order: Order, knowledge: Knowledge, *,
                   liver: tuple[Measurement, ...]) -> list[Finding]:
    spec = knowledge.labs.liver_enzymes
    worst = None
    for result in liver:
        ratio = result.value / result.upper_limit if result.upper_limit else None
        flagged = ratio is None and bool(result.flags & set(spec.critical_flags))
        raised = (ratio is not None and ratio > spec.uln_multiple) or flagged
        if raised and (worst is None or (ratio or 0) > (worst[1] or 0)):
            worst = (result, ratio)
    if worst is None:
        return []
    result, ratio = worst
    values = {"drug": knowledge.drugs[order.drug].display, "analyte": result.name,
              "value": result.value, "times": ratio or 0}
    evidence = tuple(Evidence("liver" if r.upper_limit is not None else "liver-no-limit", {
        "analyte": r.name, "value": r.value, "unit": r.unit, "date": r.when,
        "resource": r.resource, "limit": r.upper_limit or 0}) for r in liver)
    key = "hepatotoxicity" if ratio else "hepatotoxicity-flagged"
    return [Finding(key, order, values, evidence)]


RULE = Rule(
    name="hepatotoxicity", evaluate=hepatotoxicity, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "analyte", "value", "times"}),
    findings=("hepatotoxicity", "hepatotoxicity-flagged"),
    evidence={"liver": LIVER, "liver-no-limit": LIVER},
)

"""Dose per kg: above the indication's labelled range, and whether a dose is already reduced."""

from __future__ import annotations

from dataclasses import replace

from ..facts.conditions import Conditions
from ..facts.measurements import Measurement
from ..facts.orders import Order, Orders
from ..fhir_read import concept_texts
from ..findings import Evidence, Finding
from ..knowledge import Knowledge
from . import THIOPURINE, Rule

PER_KG = frozenset({"dose_kg", "weight", "normal", "resource"})


def mg_kg_day(order: Order | None, weight: Measurement | None) -> float | None:
    if order is None or order.dose is None or weight is None or weight.value <= 0:
        return None
    per_day = order.dose.mg_per_day
    return None if per_day is None else per_day / weight.value


def maybe_reduced(finding: Finding, weight: Measurement | None,
                  knowledge: Knowledge) -> Finding:
    """A dose already inside the reduced range gets the finding's quieter variant."""
    reduced = knowledge.cards.findings[finding.key].if_reduced
    order = finding.target or finding.order
    dose = mg_kg_day(order, weight)
    normal = knowledge.drugs[order.drug].normal_mg_kg_day if order and order.drug else None
    if not reduced or dose is None or not normal or dose > reduced.max_fraction * normal:
        return finding
    evidence = Evidence("dose-per-kg", {"dose_kg": dose, "weight": weight.value,
                                        "resource": weight.resource, "normal": normal})
    return replace(finding, key=reduced.finding, evidence=(*finding.evidence, evidence),
                   values={**finding.values, "dose_kg": dose})


def dose(order: Order, knowledge: Knowledge, *, orders: Orders, weight: Measurement | None,
         conditions: Conditions) -> list[Finding]:
    """Above the indication's labelled mg/kg/day range (drugs with ranges in cards/)."""
    ranges = knowledge.drugs[order.drug].dose_ranges_mg_kg_day
    per_kg = mg_kg_day(order, weight)
    if not ranges or per_kg is None:
        return []
    texts = " ".join([conditions.texts, *(t.lower() for t in concept_texts(order.reasons))])
    new_start = not orders.established(order.drug)
    spec = next((r for r in ranges.values() if any(w in texts for w in r.words) and (
        new_start or not r.new_start_only)), ranges["default"])
    low, high = spec.range
    if per_kg <= high:
        return []
    values = {"drug": knowledge.drugs[order.drug].display, "dose_kg": per_kg, "low": low,
              "high": high, "indication": spec.label, "dose_day": order.dose.mg_per_day,
              "weight": weight.value, "fraction": high / per_kg}
    evidence = Evidence("dose-weight", {"dose_day": order.dose.mg_per_day, "weight": weight.value,
                                        "date": weight.when, "resource": weight.resource})
    return [Finding("dose-above-range", order, values, (evidence,))]


RULE = Rule(
    name="dose", evaluate=dose, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "dose_kg", "low", "high", "indication", "dose_day", "weight",
                      "fraction"}),
    findings=("dose-above-range",),
    evidence={"dose-weight": frozenset({"dose_day", "weight", "date", "resource"})},
)

"""Dose per kg against the usual dose for the order's indication (cards/drugs.yaml)."""

from __future__ import annotations

from ..facts.conditions import Conditions
from ..facts.measurements import Measurement
from ..facts.orders import Order, Orders
from ..findings import Evidence, Finding
from ..knowledge import Knowledge, schema
from . import THIOPURINE, Rule

# The values dose sense adds to a card it makes quieter (rules/dose_sense.py).
SENSED = frozenset({"dose_kg", "usual", "indication", "limit_kg", "reductions", "usual_day",
                    "limit_day"})


def mg_kg_day(order: Order | None, weight: Measurement | None) -> float | None:
    if order is None or order.dose is None or weight is None or weight.value <= 0:
        return None
    per_day = order.dose.mg_per_day
    return None if per_day is None else per_day / weight.value


def _entries(order: Order, orders: Orders, knowledge: Knowledge) -> list[schema.DoseRange]:
    new_start = not orders.established(order.drug)
    return [e for e in knowledge.drugs[order.drug].dose_mg_kg_day
            if new_start or not e.new_start_only]


def usual_dose(order: Order, conditions: Conditions, orders: Orders,
               knowledge: Knowledge) -> schema.DoseRange | None:
    """The entry for the order's indication (its reason, else an active condition), else the
    last entry (no known indication); None for a drug without ranges."""
    entries = _entries(order, orders, knowledge)
    found = conditions.for_order(order)
    return next((e for e in entries if e.indication in found), entries[-1] if entries else None)


def lowest_usual(order: Order, conditions: Conditions, orders: Orders,
                 knowledge: Knowledge) -> tuple[float, str] | None:
    """(mg/kg/day, indication label) a reduced dose is judged against: the low end for the
    known indication, else the lowest of any indication (conservative)."""
    entries = _entries(order, orders, knowledge)
    entry = usual_dose(order, conditions, orders, knowledge)
    if entry is None:
        return None
    if entry.indication is None:
        lowest = min(entries, key=lambda e: e.range[0])
        return lowest.range[0], f"any indication ({lowest.label})"
    return entry.range[0], entry.label


def dose(order: Order, knowledge: Knowledge, *, orders: Orders, weight: Measurement | None,
         conditions: Conditions) -> list[Finding]:
    """Above the usual mg/kg/day range for the indication."""
    per_kg = mg_kg_day(order, weight)
    entry = usual_dose(order, conditions, orders, knowledge)
    if entry is None or per_kg is None:
        return []
    low, high = entry.range
    if per_kg <= high:
        return []
    critical = knowledge.drugs[order.drug].critical_above_mg_kg_day
    key = "dose-far-above-range" if critical and per_kg > critical else "dose-above-range"
    values = {"drug": knowledge.drugs[order.drug].display, "dose_kg": per_kg, "low": low,
              "high": high, "indication": entry.label, "dose_day": order.dose.mg_per_day,
              "weight": weight.value, "fraction": high / per_kg}
    evidence = Evidence("dose-weight", {"dose_day": order.dose.mg_per_day, "weight": weight.value,
                                        "date": weight.when, "resource": weight.resource})
    return [Finding(key, order, values, (evidence,))]


RULE = Rule(
    name="dose", evaluate=dose, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "dose_kg", "low", "high", "indication", "dose_day", "weight",
                      "fraction"}),
    findings=("dose-above-range", "dose-far-above-range"),
    evidence={"dose-weight": frozenset({"dose_day", "weight", "date", "resource"})},
)

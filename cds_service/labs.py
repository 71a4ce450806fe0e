"""Blood counts from Observations: pick by code, keep valid final results, normalise units.

Only the observations inside the look-back window are validated (they are the only ones a rule
reads); older ones only tell that counts exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .fhir_read import as_list, codings, parse_time, reference, validate
from .knowledge import Analyte, Knowledge

COUNTED_STATUSES = frozenset({"final", "amended", "corrected"})
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class Count:
    analyte: str
    value: float              # 10*9/L
    when: datetime
    lower_limit: float | None  # the lab's own referenceRange.low, 10*9/L
    inferred_unit: bool
    resource: str


@dataclass
class Counts:
    by_analyte: dict[str, list[Count]] = field(default_factory=dict)  # newest first, in window
    older: set[str] = field(default_factory=set)                       # analytes seen before window
    problems: list[str] = field(default_factory=list)


def effective_time(observation: dict) -> datetime | None:
    period = observation.get("effectivePeriod")
    start = period.get("start") if isinstance(period, dict) else None
    return parse_time(observation.get("effectiveDateTime") or observation.get(
        "effectiveInstant") or start or observation.get("issued"))


def _analyte(observation: dict, knowledge: Knowledge) -> str | None:
    for system, code in codings(observation.get("code")):
        if system in ("http://loinc.org", "") and code in knowledge.analyte_by_code:
            return knowledge.analyte_by_code[code]
    return None


def _factor(quantity: dict, knowledge: Knowledge) -> float | None:
    for unit in (quantity.get("code"), quantity.get("unit")):
        if isinstance(unit, str) and unit.strip() in knowledge.unit_factors:
            return knowledge.unit_factors[unit.strip()]
    return None


def _inferred_factor(value: float, analyte: Analyte) -> float | None:
    low, high = analyte.infer_ranges.get("per_L9", (0, 0))
    if low <= value <= high:
        return 1.0
    low, high = analyte.infer_ranges.get("per_uL", (0, 0))
    return 0.001 if low <= value <= high else None


def _count(observation: dict, analyte: Analyte, when: datetime, knowledge: Knowledge,
           problems: list[str]) -> Count | None:
    ref = reference(observation)
    quantity = observation.get("valueQuantity")
    if not isinstance(quantity, dict) or not isinstance(quantity.get("value"), int | float):
        problems.append(f"{analyte.display} {ref} has no numeric value")
        return None
    value = float(quantity["value"])
    has_unit = bool(quantity.get("code") or quantity.get("unit"))
    factor = _factor(quantity, knowledge)
    if factor is None and has_unit:
        unit = quantity.get("code") or quantity.get("unit")
        problems.append(f"{analyte.display} {ref}: unit '{unit}' is not recognised")
        return None
    inferred = factor is None
    if inferred:
        factor = _inferred_factor(value, analyte)
        if factor is None:
            problems.append(f"{analyte.display} {ref}: no unit, and {value:g} fits no known scale")
            return None
    return Count(analyte.name, value * factor, when, _lower_limit(observation, factor, knowledge),
                 inferred, ref)


def _lower_limit(observation: dict, factor: float, knowledge: Knowledge) -> float | None:
    for ranges in as_list(observation.get("referenceRange")):
        low = ranges.get("low") if isinstance(ranges, dict) else None
        if isinstance(low, dict) and isinstance(low.get("value"), int | float):
            own = _factor(low, knowledge)
            return float(low["value"]) * (own if own is not None else factor)
    return None


def read_counts(observations: tuple[dict, ...], knowledge: Knowledge, now: datetime,
                version: str) -> Counts:
    since = now - timedelta(days=knowledge.lookback_days)
    counts = Counts()
    candidates = []
    for observation in observations:
        analyte = _analyte(observation, knowledge)
        if analyte is None or observation.get("status") not in COUNTED_STATUSES:
            continue
        when = effective_time(observation)
        if when is None:
            counts.problems.append(f"{reference(observation)} has no date")
        elif when < since:
            counts.older.add(analyte)
        elif when <= now + timedelta(days=1):
            candidates.append((when, analyte, observation))
    candidates.sort(key=lambda c: c[0], reverse=True)
    for when, analyte, observation in candidates:
        observation, error = validate(observation, version)
        if error:
            counts.problems.append(f"{reference(observation)} could not be read ({error})")
            continue
        count = _count(observation, knowledge.analytes[analyte], when, knowledge, counts.problems)
        if count:
            counts.by_analyte.setdefault(analyte, []).append(count)
    return counts

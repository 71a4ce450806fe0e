"""Blood counts from Observations: pick by code, keep valid final results, normalise units.

Only the observations inside the look-back window are validated (they are the only ones a rule
reads); older ones only tell that counts exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .fhir_read import as_list, codings, parse_time, reference, status, validate
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
    latest: datetime | None = None                                     # newest count of any age
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
        if analyte is None or status(observation) not in COUNTED_STATUSES:
            continue
        when = effective_time(observation)
        if when is None:
            counts.problems.append(f"{reference(observation)} has no date")
            continue
        if when <= now + timedelta(days=1) and (counts.latest is None or when > counts.latest):
            counts.latest = when
        if when < since:
            counts.older.add(analyte)
        elif when <= now + timedelta(days=1):
            candidates.append((when, analyte, observation))
    candidates.sort(key=lambda c: c[0], reverse=True)
    for name, analyte in knowledge.analytes.items():
        mine = [(when, o) for when, a, o in candidates if a == name]
        _latest_and_peak(mine, analyte, knowledge, version, counts)
    return counts


def _latest_and_peak(candidates: list[tuple[datetime, dict]], analyte: Analyte,
                     knowledge: Knowledge, version: str, counts: Counts) -> None:
    """The two counts the rules read: the latest readable one, and the highest before it (the
    trend's baseline). Only these are validated: 2,000 counts cost two validations, not 2,000;
    the peak not even that when no earlier count is high enough to make a falling trend."""
    latest, index = _first_readable(candidates, analyte, knowledge, version, counts)
    if latest is None:
        return
    earlier = sorted(((_rough_value(o, analyte, knowledge), when, o)
                      for when, o in candidates[index + 1:]), key=lambda c: c[0], reverse=True)
    if not earlier or earlier[0][0] * (1 - knowledge.trend_fall) < latest.value:
        counts.by_analyte[analyte.name] = [latest]
        return
    peak, _ = _first_readable([(when, o) for _, when, o in earlier], analyte, knowledge,
                              version, counts)
    counts.by_analyte[analyte.name] = [latest, *([peak] if peak and peak.value > latest.value
                                                  else [])]


def _first_readable(candidates: list[tuple[datetime, dict]], analyte: Analyte,
                    knowledge: Knowledge, version: str,
                    counts: Counts) -> tuple[Count | None, int]:
    for index, (when, observation) in enumerate(candidates):
        observation, error = validate(observation, version)
        if error:
            counts.problems.append(f"{reference(observation)} could not be read ({error})")
            continue
        count = _count(observation, analyte, when, knowledge, counts.problems)
        if count:
            return count, index
    return None, len(candidates)


def _rough_value(observation: dict, analyte: Analyte, knowledge: Knowledge) -> float:
    """The count in 10*9/L before validation, only to order the candidates for the peak."""
    quantity = observation.get("valueQuantity")
    value = quantity.get("value") if isinstance(quantity, dict) else None
    if not isinstance(value, int | float):
        return -1.0
    factor = _factor(quantity, knowledge) or _inferred_factor(value, analyte) or 0.0
    return value * factor


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    when: datetime
    resource: str
    upper_limit: float | None = None
    flags: frozenset[str] = frozenset()
    unit: str = ""


def _latest_valid(observations: tuple[dict, ...], codes: dict[str, str], since: datetime,
                  now: datetime, version: str, problems: list[str]) -> dict[str, tuple]:
    """Newest valid observation per name among those whose LOINC code is in `codes`."""
    found: dict[str, tuple] = {}
    dated = []
    for observation in observations:
        name = next((codes[c] for s, c in codings(observation.get("code"))
                     if s in ("http://loinc.org", "") and c in codes), None)
        when = effective_time(observation)
        if name and status(observation) in COUNTED_STATUSES and when and (
                since <= when <= now + timedelta(days=1)):
            dated.append((when, name, observation))
    for when, name, observation in sorted(dated, key=lambda d: d[0], reverse=True):
        if name in found:
            continue
        observation, error = validate(observation, version)
        quantity = observation.get("valueQuantity")
        if error or not isinstance(quantity, dict) or not isinstance(
                quantity.get("value"), int | float):
            problems.append(f"{reference(observation)} could not be read ({error or 'no value'})")
            continue
        found[name] = (when, observation, quantity)
    return found


def read_weight(observations: tuple[dict, ...], knowledge: Knowledge, now: datetime,
                version: str, problems: list[str]) -> Measurement | None:
    spec = knowledge.weight
    since = now - timedelta(days=spec["max_age_days"])
    found = _latest_valid(observations, dict.fromkeys(spec["codes"], "weight"), since, now,
                          version, problems)
    if "weight" not in found:
        return None
    when, observation, quantity = found["weight"]
    unit = quantity.get("code") or quantity.get("unit")
    factor = spec["units"].get(unit)
    if factor is None:
        problems.append(f"body weight {reference(observation)}: unit '{unit}' is not recognised")
        return None
    return Measurement("weight", float(quantity["value"]) * factor, when, reference(observation))


def read_liver(observations: tuple[dict, ...], knowledge: Knowledge, now: datetime,
               version: str, problems: list[str]) -> list[Measurement]:
    spec = knowledge.liver
    since = now - timedelta(days=spec["lookback_days"])
    found = _latest_valid(observations, spec["analytes"], since, now, version, problems)
    results = []
    for name, (when, observation, quantity) in found.items():
        high = next((r["high"]["value"] for r in as_list(observation.get("referenceRange"))
                     if isinstance(r, dict) and isinstance(r.get("high"), dict)
                     and isinstance(r["high"].get("value"), int | float)), None)
        flags = frozenset(c for _, c in codings(observation.get("interpretation")))
        unit = str(quantity.get("unit") or quantity.get("code") or "")
        results.append(Measurement(name, float(quantity["value"]), when,
                                   reference(observation), high, flags, unit))
    return results

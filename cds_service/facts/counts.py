"""Blood counts from Observations: pick by code, keep results that count, normalise units.

The rules read two counts per analyte: the latest readable one in the look-back window, and the
highest before it (the baseline of a falling trend). Only those are read in full, so 2,000 counts
cost a few element reads, not 2,000. A newer count that cannot be read is remembered, so the
latest readable one is never shown as the current count. A preliminary count is evidence: it is
used, and said to be preliminary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..fhir_read import (
    Invalid,
    as_list,
    codings,
    observed_at,
    read_quantity,
    reference,
    status,
    unit_key,
)
from ..knowledge import Knowledge, schema

COUNTED_STATUSES = frozenset({"final", "amended", "corrected"})
STATUSES = COUNTED_STATUSES | {"preliminary"}


@dataclass(frozen=True)
class Count:
    analyte: str
    value: float                # 10*9/L
    when: datetime
    lower_limit: float | None   # the lab's own referenceRange.low, 10*9/L
    inferred_unit: bool
    resource: str
    status: str = "final"
    derived: bool = False       # leukocytes x neutrophil %
    newer_unreadable: tuple[str, ...] = ()  # newer counts of this analyte that could not be read


@dataclass(frozen=True)
class Counts:
    by_analyte: dict[str, tuple[Count, ...]] = field(default_factory=dict)  # latest, then peak
    latest: datetime | None = None     # newest count of any age
    complete: bool = True              # False: the counts could not all be had or read
    problems: tuple[str, ...] = ()


def _code_index(knowledge: Knowledge) -> dict[str, tuple[str, bool]]:
    """LOINC code -> (analyte, is a percentage of another count)."""
    index = {code: (name, False) for code, name in knowledge.analyte_by_code.items()}
    for name, analyte in knowledge.labs.analytes.items():
        if analyte.from_percent:
            index.update({code: (name, True) for code in analyte.from_percent.codes})
    return index


def _analyte(observation: dict, index: dict, knowledge: Knowledge) -> tuple[str, bool] | None:
    for system, code in codings(observation.get("code")):
        if code in index and system in (knowledge.labs.loinc, ""):  # most codes miss the index
            return index[code]
    return None


def _factor(unit: str, knowledge: Knowledge) -> float | None:
    return knowledge.labs.units.factors.get(unit_key(unit)) if unit else None


def _inferred_factor(value: float, analyte: schema.Analyte) -> float | None:
    low, high = analyte.infer_unit.get("per_L9", (0, 0))
    if low <= value <= high:
        return 1.0
    low, high = analyte.infer_unit.get("per_uL", (0, 0))
    return 0.001 if low <= value <= high else None


def _count(observation: dict, name: str, when: datetime, knowledge: Knowledge,
           problems: list[str]) -> Count | None:
    analyte = knowledge.labs.analytes[name]
    ref = reference(observation)
    try:
        quantity = read_quantity(observation.get("valueQuantity"), "valueQuantity")
        low = _lower_limit(observation)
    except Invalid as error:
        problems.append(f"{analyte.display} {ref}: {error}")
        return None
    if quantity is None:
        problems.append(f"{analyte.display} {ref} has no numeric value")
        return None
    factor = _factor(quantity.unit, knowledge)
    if factor is None and quantity.unit:
        problems.append(f"{analyte.display} {ref}: unit '{quantity.display}' is not recognised")
        return None
    inferred = factor is None
    if inferred:
        factor = _inferred_factor(quantity.value, analyte)
        if factor is None:
            problems.append(f"{analyte.display} {ref}: no unit, and {quantity.value:g} fits no"
                            " known scale")
            return None
    limit = None
    if low is not None:
        own = _factor(low.unit, knowledge)
        limit = low.value * (own if own is not None else factor)
    return Count(name, quantity.value * factor, when, limit, inferred, ref, status(observation))


def _lower_limit(observation: dict):
    for index, ranges in enumerate(as_list(observation.get("referenceRange"))):
        if isinstance(ranges, dict) and ranges.get("low") is not None:
            return read_quantity(ranges["low"], f"referenceRange[{index}].low")
    return None


def _rough_value(observation: dict, name: str, knowledge: Knowledge) -> float:
    """The count in 10*9/L without checks, only to order the candidates for the peak."""
    quantity = observation.get("valueQuantity")
    value = quantity.get("value") if isinstance(quantity, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return -1.0
    unit = quantity.get("code") or quantity.get("unit")
    factor = (_factor(unit, knowledge) if isinstance(unit, str) else None) or (
        _inferred_factor(value, knowledge.labs.analytes[name])) or 0.0
    return value * factor


def _first_readable(candidates: list[tuple[datetime, dict]], name: str, knowledge: Knowledge,
                    problems: list[str]) -> tuple[Count | None, int]:
    unreadable = []
    for index, (when, observation) in enumerate(candidates):
        count = _count(observation, name, when, knowledge, problems)
        if count:
            return Count(**{**count.__dict__, "newer_unreadable": tuple(unreadable)}), index
        unreadable.append(reference(observation))
    return None, len(candidates)


def _latest_and_peak(candidates: list[tuple[datetime, dict]], name: str, knowledge: Knowledge,
                     problems: list[str]) -> tuple[Count, ...]:
    latest, index = _first_readable(candidates, name, knowledge, problems)
    if latest is None:
        return ()
    fall = min(knowledge.labs.trend_fall_fraction, knowledge.labs.itp.fall_fraction)
    earlier = sorted(((_rough_value(o, name, knowledge), when, o)
                      for when, o in candidates[index + 1:]), key=lambda c: c[0], reverse=True)
    if not earlier or earlier[0][0] * (1 - fall) < latest.value:
        return (latest,)  # no earlier count is high enough to make a falling trend
    peak, _ = _first_readable([(when, o) for _, when, o in earlier], name, knowledge, problems)
    return (latest, peak) if peak and peak.value > latest.value else (latest,)


def _from_percent(percents: list[tuple[datetime, dict]], name: str,
                  candidates: dict[str, list[tuple[datetime, dict]]], knowledge: Knowledge,
                  problems: list[str]) -> tuple[Count, ...]:
    """An absolute count from the newest percentage with a whole count taken at the same time."""
    spec = knowledge.labs.analytes[name].from_percent
    wholes = {when: o for when, o in candidates.get(spec.of, ())}
    for when, observation in sorted(percents, key=lambda c: c[0], reverse=True):
        if when not in wholes:
            continue
        whole = _count(wholes[when], spec.of, when, knowledge, problems)
        try:
            percent = read_quantity(observation.get("valueQuantity"), "valueQuantity")
        except Invalid as error:
            problems.append(f"{reference(observation)}: {error}")
            continue
        if whole and percent and percent.unit in ("%", "") and 0 <= percent.value <= 100:
            ref = f"{reference(observation)} x {whole.resource}"
            return (Count(name, whole.value * percent.value / 100, when, None,
                          whole.inferred_unit, ref, status(observation), derived=True),)
    return ()


def read_counts(observations: tuple[dict, ...], knowledge: Knowledge, now: datetime,
                complete: bool) -> Counts:
    since = now - timedelta(days=knowledge.labs.lookback_days)
    soon = now + timedelta(days=1)  # a clock a little ahead is not a future result
    index = _code_index(knowledge)
    problems: list[str] = []
    latest = None
    candidates: dict[str, list[tuple[datetime, dict]]] = {}
    percents: dict[str, list[tuple[datetime, dict]]] = {}
    for observation in observations:
        found = _analyte(observation, index, knowledge)
        if found is None or status(observation) not in STATUSES:
            continue
        when = observed_at(observation, problems)
        if when is None:
            continue
        name, percent = found
        if when <= soon and not percent and (latest is None or when > latest):
            latest = when
        if since <= when <= soon:
            (percents if percent else candidates).setdefault(name, []).append((when, observation))
    by_analyte = {}
    for name in knowledge.labs.analytes:
        # newest first; at the same time a final result before a preliminary one
        mine = sorted(candidates.get(name, ()), key=lambda c: (c[0], status(c[1]) in
                                                              COUNTED_STATUSES), reverse=True)
        counts = _latest_and_peak(mine, name, knowledge, problems)
        if not counts and percents.get(name):
            counts = _from_percent(percents[name], name, candidates, knowledge, problems)
        if counts:
            by_analyte[name] = counts
    return Counts(by_analyte, latest, complete, tuple(problems))

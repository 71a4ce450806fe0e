"""Body weight (dose per kg) and liver enzymes (hepatotoxicity): the latest readable value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..fhir_read import Invalid, as_list, codings, observed_at, read_quantity, reference, status
from ..knowledge import Knowledge
from .counts import COUNTED_STATUSES


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    when: datetime
    resource: str
    unit: str = ""
    upper_limit: float | None = None
    flags: frozenset[str] = frozenset()


def _latest(observations: tuple[dict, ...], codes: dict[str, str], loinc: str, since: datetime,
            now: datetime, problems: list[str]) -> dict[str, tuple[datetime, dict, object]]:
    """Newest readable value per name among the observations whose code is in `codes`."""
    dated = []
    for observation in observations:
        name = next((codes[c] for s, c in codings(observation.get("code"))
                     if s in (loinc, "") and c in codes), None)
        if name is None or status(observation) not in COUNTED_STATUSES:
            continue
        when = observed_at(observation, problems)
        if when and since <= when <= now + timedelta(days=1):
            dated.append((when, name, observation))
    found: dict[str, tuple[datetime, dict, object]] = {}
    for when, name, observation in sorted(dated, key=lambda d: d[0], reverse=True):
        if name in found:
            continue
        try:
            quantity = read_quantity(observation.get("valueQuantity"), "valueQuantity")
        except Invalid as error:
            problems.append(f"{reference(observation)}: {error}")
            continue
        if quantity is None:
            problems.append(f"{reference(observation)} has no numeric value")
            continue
        found[name] = (when, observation, quantity)
    return found


def read_weight(observations: tuple[dict, ...], knowledge: Knowledge, now: datetime,
                problems: list[str]) -> Measurement | None:
    spec = knowledge.labs.body_weight
    since = now - timedelta(days=spec.max_age_days)
    found = _latest(observations, dict.fromkeys(spec.codes, "weight"), knowledge.labs.loinc,
                    since, now, problems)
    if "weight" not in found:
        return None
    when, observation, quantity = found["weight"]
    factor = spec.units.get(quantity.unit)
    if factor is None:
        problems.append(f"body weight {reference(observation)}: unit '{quantity.display}' is not"
                        " recognised")
        return None
    return Measurement("weight", quantity.value * factor, when, reference(observation), "kg")


def read_liver(observations: tuple[dict, ...], knowledge: Knowledge, now: datetime,
               problems: list[str]) -> tuple[Measurement, ...]:
    spec = knowledge.labs.liver_enzymes
    since = now - timedelta(days=spec.lookback_days)
    found = _latest(observations, spec.analytes, knowledge.labs.loinc, since, now, problems)
    results = []
    for name, (when, observation, quantity) in found.items():
        high = None
        for index, rng in enumerate(as_list(observation.get("referenceRange"))):
            if isinstance(rng, dict) and rng.get("high") is not None:
                try:
                    high = read_quantity(rng["high"], f"referenceRange[{index}].high").value
                except Invalid as error:
                    problems.append(f"{reference(observation)}: {error}")
                break
        flags = frozenset(c for _, c in codings(observation.get("interpretation")))
        results.append(Measurement(name, quantity.value, when, reference(observation),
                                   quantity.display, high, flags))
    return tuple(results)

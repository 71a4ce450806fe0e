"""Reading FHIR JSON element by element, leniently across R4, STU3 and DSTU2 shapes.

Only the elements a rule reads are looked at, and each is checked as FHIR defines its datatype
(a decimal is a JSON number, a dateTime matches the FHIR pattern, a code is a string). An element
that is present but invalid is an `Invalid` problem for the caller to report; a field no rule
reads can never void a resource. Arrays sent as single objects, and single objects sent as
arrays, are both read.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# FHIR R4 dateTime (also covers date and instant). A time without a zone, common in EHR exports
# though FHIR asks for one, is read as UTC rather than voiding the element.
_DATETIME = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
    r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?"
    r"(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?")


MAX_DEPTH = 64  # JSON nesting within one draft: nothing downstream may recurse deeper


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Objects and arrays nested more than `limit` levels (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


class Invalid(ValueError):
    """An element a rule reads is present but not valid FHIR; the message names it."""


def as_list(value: Any) -> list:
    """A FHIR array that a client may have sent as a single object (or not at all)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def codings(concepts: Any) -> Iterator[tuple[str, str]]:
    """(system, code) of every Coding in a CodeableConcept or a list of them."""
    # The hottest reader (every code of every resource): no helper calls, one lookup each.
    for concept in concepts if isinstance(concepts, list) else (concepts,):
        if not isinstance(concept, dict):
            continue
        items = concept.get("coding")
        for coding in items if isinstance(items, list) else (items,):
            if isinstance(coding, dict):
                code, system = coding.get("code"), coding.get("system")
                if isinstance(code, str):
                    yield (system if isinstance(system, str) else "", code)


def concept_texts(concept: Any) -> Iterator[str]:
    """The human-readable strings of a CodeableConcept: text and coding displays."""
    for item in as_list(concept):
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("text"), str):
            yield item["text"]
        for coding in as_list(item.get("coding")):
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                yield coding["display"]


def code_set(value: Any) -> set[str]:
    """Codes of a CodeableConcept, or the plain code string DSTU2/STU3 use for statuses."""
    return {value} if isinstance(value, str) else {c for _, c in codings(value)}


def parse_time(value: Any) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware UTC datetime (dates at midnight UTC);
    None when absent or not a valid FHIR dateTime."""
    return _parse_time(value) if isinstance(value, str) else None


@functools.lru_cache(maxsize=4096)  # a CBC's analytes share their time; repeat calls too
def _parse_time(value: str) -> datetime | None:
    if not _DATETIME.fullmatch(value):
        return None
    if len(value) == 4:
        return datetime(int(value), 1, 1, tzinfo=UTC)
    if len(value) == 7:
        return datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # e.g. 31 February, which the pattern lets through
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_time(resource: dict, *paths: str) -> datetime | None:
    """The first of the named dateTime elements that is present (`a.b` reads a nested one);
    raises Invalid when that element is not a valid dateTime."""
    for path in paths:
        value: Any = resource
        for step in path.split("."):
            value = value.get(step) if isinstance(value, dict) else None
        if value is None:
            continue
        parsed = parse_time(value)
        if parsed is None:
            raise Invalid(f"{path} is not a valid FHIR dateTime")
        return parsed
    return None


def effective_time(observation: dict) -> datetime | None:
    """When an observation was taken: effective[x], else issued (raises Invalid)."""
    return read_time(observation, "effectiveDateTime", "effectiveInstant",
                     "effectivePeriod.start", "issued")


def observed_at(observation: dict, problems: list[str]) -> datetime | None:
    """When an observation was taken; a time that is missing or not valid is a problem."""
    value = observation.get("effectiveDateTime")  # the common case, read once and cached
    if isinstance(value, str) and (parsed := _parse_time(value)) is not None:
        return parsed
    try:
        when = effective_time(observation)
    except Invalid as error:
        problems.append(f"{reference(observation)}: {error}")
        return None
    if when is None:
        problems.append(f"{reference(observation)} has no date")
    return when


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str           # the UCUM code, else the display unit ("" when neither is given)
    display: str        # the unit as the lab wrote it, for evidence
    comparator: str | None = None


def read_quantity(value: Any, where: str) -> Quantity | None:
    """A Quantity element (None when absent); raises Invalid for a malformed one."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid(f"{where} is not a Quantity")
    number = value.get("value")
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise Invalid(f"{where}.value is not a number")
    strings = {k: value.get(k) for k in ("code", "unit", "comparator")}
    for key, text in strings.items():
        if text is not None and not isinstance(text, str):
            raise Invalid(f"{where}.{key} is not a string")
    code, unit = (strings["code"] or "").strip(), (strings["unit"] or "").strip()
    return Quantity(float(number), code or unit, unit or code, strings["comparator"])


def unit_key(unit: str) -> str:
    """A unit as labs write it, compared case-insensitively without blanks or dots, with the
    micro signs read as "u": "Thousand/uL", "K/mcL" and "x10(9)/L" each match one entry."""
    text = unit.lower().replace("µ", "u").replace("μ", "u")
    return "".join(text.replace(".", "").split())


def status(resource: dict) -> str:
    """The status code as a string ("" when absent or malformed), safe for set membership."""
    value = resource.get("status")
    return value if isinstance(value, str) else ""


def reference(resource: dict) -> str:
    """`Type/id` of a resource, for evidence lines and suggestions."""
    rid = resource.get("id")
    kind = resource.get("resourceType", "Resource")
    return f"{kind}/{rid}" if isinstance(rid, str) and rid else str(kind)

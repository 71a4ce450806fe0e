"""Lenient reading of FHIR JSON: codings, dates, and validation one resource at a time.

EHR payloads are untidy (the sandbox sends `category` as an object, Bundles without `type`), so
field access is lenient; validation with the fhir.resources models is a separate gate applied only
to the resources a rule actually uses.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

from pydantic import ValidationError

R4, STU3, DSTU2 = "R4", "STU3", "DSTU2"
_PACKAGES = {R4: "fhir.resources.R4B", STU3: "fhir.resources.STU3"}
MAX_DEPTH = 64  # JSON nesting within one resource: deeper would exhaust the models' recursion
# Resource types the rules read; their model classes load once at start-up.
MODEL_TYPES = ("MedicationRequest", "Medication", "Observation", "Condition", "Patient",
               "AllergyIntolerance")


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


def as_list(value: Any) -> list:
    """A FHIR array that a client may have sent as a single object (or not at all)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def codings(concepts: Any) -> Iterator[tuple[str, str]]:
    """(system, code) of every Coding in a CodeableConcept or a list of them."""
    for concept in as_list(concepts):
        if not isinstance(concept, dict):
            continue
        for coding in as_list(concept.get("coding")):
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                system = coding.get("system")
                yield (system if isinstance(system, str) else "", coding["code"])


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


def parse_time(value: Any) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware UTC datetime (dates at midnight UTC)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value.replace("Z", "+00:00")
    try:
        if len(text) == 4:
            parsed = datetime(int(text), 1, 1)
        elif len(text) == 7:
            parsed = datetime(int(text[:4]), int(text[5:7]), 1)
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def status(resource: dict) -> str:
    """The status code as a string ("" when absent or malformed), safe for set membership."""
    value = resource.get("status")
    return value if isinstance(value, str) else ""


def reference(resource: dict) -> str:
    """`Type/id` of a resource, for evidence lines and suggestions."""
    rid = resource.get("id")
    kind = resource.get("resourceType", "Resource")
    return f"{kind}/{rid}" if isinstance(rid, str) and rid else str(kind)


@cache
def model_class(version: str, resource_type: str) -> type | None:
    package = _PACKAGES.get(version)
    if package is None or not resource_type.isalpha():
        return None
    try:
        module = importlib.import_module(f"{package}.{resource_type.lower()}")
    except ImportError:
        return None
    return getattr(module, resource_type, None)


@cache
def _array_fields(cls: type) -> frozenset[str]:
    """Top-level elements the model declares as arrays (by their JSON names)."""
    def is_list(annotation: object) -> bool:
        return typing.get_origin(annotation) is list or any(
            typing.get_origin(a) is list for a in typing.get_args(annotation))
    return frozenset(f.alias or name for name, f in cls.model_fields.items()
                     if is_list(f.annotation))


def preload_models() -> None:
    for version in _PACKAGES:
        for resource_type in MODEL_TYPES:
            cls = model_class(version, resource_type)
            if cls is not None:
                _array_fields(cls)


def validate(resource: dict, version: str) -> tuple[dict, str | None]:
    """Validate one resource; returns (resource as read, error or None).

    A top-level array sent as a single object is wrapped first, so the sandbox's
    `category: {...}` does not cost the whole order. fhir.resources has no DSTU2
    models: DSTU2 resources are checked against the STU3 model of the same type, whose shape
    is close for the elements read here; a DSTU2-only type (MedicationOrder) is read leniently.
    """
    if too_deep(resource):
        return resource, f"nested deeper than {MAX_DEPTH} levels"
    resource_type = str(resource.get("resourceType", ""))
    cls = model_class(STU3 if version == DSTU2 else version, resource_type)
    if cls is None:
        return resource, None if version == DSTU2 else f"unsupported type for {version}"
    resource = _wrap_singletons(resource, _array_fields(cls))
    try:
        cls.model_validate(resource)
        return resource, None
    except ValidationError as error:
        return resource, _describe(error)
    except (ValueError, TypeError) as error:  # some models raise these for odd primitives
        return resource, str(error)[:200]


def _wrap_singletons(resource: dict, arrays: frozenset[str]) -> dict:
    """A top-level array sent as one object (the sandbox's `category: {...}`) is wrapped."""
    if not any(isinstance(resource.get(k), dict) for k in arrays):
        return resource
    return {k: ([v] if k in arrays and isinstance(v, dict) else v) for k, v in resource.items()}


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "resource"
    return f"{where}: {first['msg']}"

"""CDS Hooks 2.0 request validation: the body's shape per hook, before any clinical work.

Everything here raises CDSError(400) naming the offending field. Real clients are lenient in
places the spec is not (the sandbox omits selections/draftOrders when no medication is chosen),
so those omissions mean "nothing to judge", not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import CDSError
from .fhir_read import as_list
from .knowledge.schema import Service

_ORDER_FIELD = {"order-select": "draftOrders", "order-sign": "draftOrders",
                "medication-prescribe": "medications"}


@dataclass(frozen=True)
class HookRequest:
    service: Service
    hook_instance: str
    fhir_server: str | None
    access_token: str | None
    patient_id: str
    user_id: str
    orders: tuple[dict, ...]
    selections: frozenset[str] | None  # None: every order is judged (order-sign, prescribe)
    hook: str
    prefetch: dict
    full_urls: dict[str, dict]   # fullUrl -> resource, for `urn:uuid:` references in drafts


def _fail(field: str, problem: str) -> CDSError:
    return CDSError(400, f"{field}: {problem}")


def _string(body: dict, field: str, where: str = "") -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{where}{field}", "a non-empty string is required")
    return value


def _http_url(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _fail(field, "must be a string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _fail(field, "must be an absolute http(s) URL")
    return value.rstrip("/")


def _access_token(body: dict) -> str | None:
    auth = body.get("fhirAuthorization")
    if auth is None:
        return None
    if not isinstance(auth, dict):
        raise _fail("fhirAuthorization", "must be an object")
    if "fhirServer" not in body:
        raise _fail("fhirServer", "is required when fhirAuthorization is present")
    token = _string(auth, "access_token", "fhirAuthorization.")
    if str(auth.get("token_type", "")).lower() != "bearer":
        raise _fail("fhirAuthorization.token_type", "must be 'Bearer'")
    return token


def _limit(items: object, field: str, limit: int) -> None:
    if isinstance(items, list) and len(items) > limit:
        raise CDSError(413, f"{field}: more than {limit} items", code="too-costly")


def _bundle_resources(bundle: object, field: str, limit: int
                      ) -> tuple[tuple[dict, ...], dict[str, dict]]:
    """The resources of a Bundle, and those of them that carry a fullUrl, by it."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise _fail(field, "must be a FHIR Bundle")
    _limit(bundle.get("entry"), f"{field}.entry", limit)
    resources, full_urls = [], {}
    for i, entry in enumerate(as_list(bundle.get("entry"))):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise _fail(f"{field}.entry[{i}].resource", "must be a FHIR resource")
        resources.append(resource)
        if isinstance(entry.get("fullUrl"), str):
            full_urls[entry["fullUrl"]] = resource
    return tuple(resources), full_urls


def _selections(context: dict, limit: int) -> frozenset[str]:
    value = context.get("selections", [])
    _limit(value, "context.selections", limit)
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _fail("context.selections", "must be an array of 'Type/id' strings")
    return frozenset(value)


def parse_request(body: object, service: Service, limit: int) -> HookRequest:
    """`limit`: the most items any array may hold (drafts, selections, a prefetch Bundle)."""
    if not isinstance(body, dict):
        raise CDSError(400, "the request body must be a JSON object")
    hook = _string(body, "hook")
    if hook != service.hook:
        raise _fail("hook", f"service '{service.id}' serves '{service.hook}', not '{hook}'")
    hook_instance = _string(body, "hookInstance")
    fhir_server = _http_url(body["fhirServer"], "fhirServer") if "fhirServer" in body else None
    token = _access_token(body)
    context = body.get("context")
    if not isinstance(context, dict):
        raise _fail("context", "an object is required")
    patient_id, user_id = _string(context, "patientId", "context."), _string(
        context, "userId", "context.")
    field = _ORDER_FIELD.get(hook)  # patient-view has no orders
    orders, full_urls = (_bundle_resources(context[field], f"context.{field}", limit)
                         if field in context else ((), {}))
    prefetch = body.get("prefetch", {})
    if not isinstance(prefetch, dict) or not all(
            v is None or isinstance(v, dict) for v in prefetch.values()):
        raise _fail("prefetch", "must be an object whose values are FHIR resources or null")
    for key, value in prefetch.items():
        _limit((value or {}).get("entry"), f"prefetch.{key}.entry", limit)
    if "extension" in body and not isinstance(body["extension"], dict):
        raise _fail("extension", "must be an object")
    return HookRequest(
        service=service, hook_instance=hook_instance, fhir_server=fhir_server,
        access_token=token, patient_id=patient_id, user_id=user_id, orders=orders,
        selections=_selections(context, limit) if hook == "order-select" else None,
        prefetch=prefetch, full_urls=full_urls, hook=hook,
    )

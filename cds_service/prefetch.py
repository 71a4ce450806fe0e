"""Prefetch resolution: each declared key as the CDS Hooks 2.0 decision table says.

present -> use it; null -> no data (no refetch); OperationOutcome -> failed; absent -> fetch from
fhirServer. Missing keys and `next` pages are fetched concurrently under one time budget, then the
Medications that orders reference and nobody sent; whatever cannot be had is reported, never
silently empty.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import quote

from .config import Settings
from .fhir_client import PER_CALL, FetchError, FhirClient, entries, executor, next_link
from .fhir_read import as_list, reference
from .protocol import HookRequest

log = logging.getLogger(__name__)

OK, NONE, FAILED = "ok", "none", "failed"


@dataclass(frozen=True)
class KeyData:
    status: str                  # OK | NONE | FAILED
    resources: tuple[dict, ...]
    problem: str | None = None   # why it failed or is incomplete


@dataclass(frozen=True)
class Resolved:
    """Everything the request and the FHIR server gave: each prefetch key, and each Medication
    an order references (by the reference string as written), or why it could not be had."""
    keys: dict[str, KeyData]
    medications: dict[str, dict] = field(default_factory=dict)
    medication_problems: dict[str, str] = field(default_factory=dict)


def _tokens(request: HookRequest) -> dict[str, str]:
    user_type, _, user_id = request.user_id.partition("/")
    tokens = {"context.patientId": request.patient_id, "context.userId": request.user_id}
    for kind in ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson"):
        if user_type == kind and user_id:
            tokens[f"user{kind}Id"] = user_id
    return tokens


def _fill(template: str, tokens: dict[str, str]) -> str | None:
    for name, value in tokens.items():  # encoded: a value can never add a parameter or segment
        template = template.replace("{{" + name + "}}", quote(value, safe=""))
    return None if "{{" in template else template


def _split(resources: list[dict]) -> tuple[tuple[dict, ...], bool]:
    """(the results, whether an OperationOutcome among them reports an error): servers also
    add informational outcomes, e.g. an ignored parameter, beside complete results."""
    results, failed = [], False
    for resource in resources:
        if resource.get("resourceType") != "OperationOutcome":
            results.append(resource)
        elif any(isinstance(i, dict) and i.get("severity") in ("error", "fatal")
                 for i in as_list(resource.get("issue"))):
            failed = True
    return tuple(results), failed


def _from_prefetch(value: dict) -> KeyData:
    if value.get("resourceType") == "OperationOutcome":
        return KeyData(FAILED, (), "the EHR reported an error retrieving it")
    if value.get("resourceType") != "Bundle":
        return KeyData(OK, (value,))
    try:
        resources, failed = _split(entries(value))
        next_link(value)
    except FetchError as error:
        return KeyData(FAILED, (), f"the EHR's prefetch is unreadable: {error}")
    if failed:
        return KeyData(FAILED, (), "the EHR reported an error retrieving it")
    return KeyData(OK if resources else NONE, resources)


# A server that does not know the search answers 4xx or with an OperationOutcome: then the
# key's fallback (a DSTU2 server has MedicationOrder, not MedicationRequest) is asked instead.
_REFUSED = ("http-4xx", "operation-outcome")


def _fetch(client: FhirClient, query: str, fallback: str | None = None) -> KeyData:
    try:
        resources, incomplete = client.get_all(query)
    except FetchError as error:
        if fallback and error.reason in _REFUSED:
            tried = _fetch(client, fallback)
            if tried.status != FAILED:
                return tried
        return KeyData(FAILED, (), str(error))
    results, failed = _split(resources)
    if failed:
        return KeyData(FAILED, (), "the FHIR server reported an error in its results")
    if incomplete:
        return KeyData(FAILED, results, incomplete)
    return KeyData(OK if results else NONE, results)


def _next_pages(client: FhirClient, value: dict, first: KeyData) -> KeyData:
    try:
        resources, incomplete = client.follow(next_link(value), list(first.resources))
    except FetchError as error:
        return KeyData(FAILED, first.resources, f"only the first page could be read: {error}")
    if incomplete:
        return KeyData(FAILED, tuple(resources), incomplete)
    return KeyData(OK if resources else NONE, tuple(resources))


def _read(client: FhirClient, reference: str) -> KeyData:
    try:
        return KeyData(OK, (client.read(reference),))
    except FetchError as error:
        return KeyData(FAILED, (), str(error))


def _outcome(future: Future) -> KeyData:
    try:
        return future.result()
    except Exception:  # a bug in reading one key must cost that key only
        log.exception("a FHIR fetch failed unexpectedly")
        return KeyData(FAILED, (), "an unexpected error stopped it (logged)")


def _run(jobs: dict[str, Callable[[], KeyData]], deadline: float) -> dict[str, KeyData]:
    """Every job's result, at most PER_CALL of them in flight at once, so that one call never
    holds more than its share of the shared pool; what the deadline cuts off is reported."""
    waiting, running, results = deque(jobs.items()), {}, {}
    while (waiting or running) and time.monotonic() < deadline:
        while waiting and len(running) < PER_CALL:
            key, job = waiting.popleft()
            running[executor().submit(job)] = key
        done, _ = wait(running, timeout=max(0.0, deadline - time.monotonic()),
                       return_when=FIRST_COMPLETED)
        for future in done:
            results[running.pop(future)] = _outcome(future)
    for future, key in running.items():
        future.cancel()  # a GET under way ends at the deadline too (deadline_http)
        results[key] = KeyData(FAILED, (), "the time budget ran out")
    for key, _ in waiting:
        results[key] = KeyData(FAILED, (), "the time budget ran out before it was fetched")
    return {key: results[key] for key in jobs}


def connect(request: HookRequest, settings: Settings, deadline: float) -> FhirClient | None:
    """The call's one FhirClient (None without a fhirServer): its caps on GETs and bytes span
    every key and Medication the call fetches."""
    if not request.fhir_server:
        return None
    return FhirClient(request.fhir_server, request.access_token, settings, deadline)


def resolve(request: HookRequest, queries: dict[str, str], client: FhirClient | None,
            fallbacks: dict[str, str] | None = None) -> Resolved:
    """`queries`: the service's prefetch templates by key; `fallbacks`: what to search instead
    when the server refuses a key's query."""
    keys = _resolve_keys(request, queries, client, fallbacks or {})
    medications, problems = _medications(request, keys, client)
    return Resolved(keys, medications, problems)


def _resolve_keys(request: HookRequest, queries: dict[str, str], client: FhirClient | None,
                  fallbacks: dict[str, str]) -> dict[str, KeyData]:
    tokens = _tokens(request)
    results: dict[str, KeyData] = {}
    jobs: dict[str, Callable[[], KeyData]] = {}
    for key, template in queries.items():
        if key in request.prefetch:
            value = request.prefetch[key]
            results[key] = KeyData(NONE, ()) if value is None else _from_prefetch(value)
            paged = value is not None and value.get("resourceType") == "Bundle"  # links checked
            if paged and client and results[key].status != FAILED and next_link(value):
                jobs[key] = partial(_next_pages, client, value, results[key])
            continue
        query = _fill(template, tokens)
        if client is None:
            results[key] = KeyData(FAILED, (), "not in the prefetch and no fhirServer was given")
        elif query is None:
            results[key] = KeyData(FAILED, (), "its query could not be built from the context")
        else:
            jobs[key] = partial(_fetch, client, query, _fill(fallbacks.get(key, ""), tokens))
    if client and jobs:
        results.update(_run(jobs, client.deadline))
    return results


_ORDER_TYPES = ("MedicationRequest", "MedicationOrder", "MedicationStatement")


def _medication_ref(resource: dict) -> str | None:
    """The Medication an order or statement references, unless it is contained."""
    if resource.get("resourceType") not in _ORDER_TYPES:
        return None
    medication = resource.get("medicationReference")
    ref = medication.get("reference") if isinstance(medication, dict) else None
    return ref if isinstance(ref, str) and not ref.startswith("#") else None


def _relative(ref: str, base: str | None) -> str | None:
    """`Medication/<id>` for a reference the FHIR server can be asked for, else None."""
    if base and ref.startswith(base + "/"):
        ref = ref[len(base) + 1:]
    kind, _, rid = ref.partition("/")
    return ref if kind == "Medication" and rid and "/" not in rid else None


def _medications(request: HookRequest, keys: dict[str, KeyData], client: FhirClient | None
                 ) -> tuple[dict[str, dict], dict[str, str]]:
    """The Medications orders reference: sent in the request (by id or fullUrl), else read
    from the FHIR server; for each that cannot be had, why."""
    sent: dict[str, dict] = dict(request.full_urls)
    refs = {_medication_ref(order) for order in request.orders}
    for item in keys.values():  # one pass over the resources: Medications and references
        for resource in item.resources:
            if resource.get("resourceType") == "Medication":
                sent[reference(resource)] = resource
            else:
                refs.add(_medication_ref(resource))
    refs.discard(None)
    found, problems, wanted = {}, {}, {}
    for ref in refs:
        relative = _relative(ref, request.fhir_server)
        if ref in sent or relative in sent:
            found[ref] = sent.get(ref) or sent[relative]
        elif ref.startswith("urn:"):
            problems[ref] = "not among the resources sent with the request"
        elif client is None:
            problems[ref] = "not sent, and no fhirServer to read it from"
        else:  # read() refuses what is not a reference under fhirServer, and says so
            wanted[ref] = partial(_read, client, ref)
    for ref, item in (_run(wanted, client.deadline) if wanted else {}).items():
        if item.status == OK and item.resources[0].get("resourceType") == "Medication":
            found[ref] = item.resources[0]
        else:
            problems[ref] = item.problem or "the FHIR server did not return a Medication"
    return found, problems

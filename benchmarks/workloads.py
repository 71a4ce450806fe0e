"""Request bodies for the benchmark, built with the test factories (tests/factories.py: codes
from cards/) and the sandbox capture in fixtures/sandbox/; nothing here is hand-written FHIR.

Blood counts are clones of the baseline CBC (platelets, neutrophils, leukocytes) spread evenly
over two years ending yesterday, dated from the real clock: the service uses the real clock, so
about 90/730 of them fall in its look-back window whatever day the benchmark runs.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_service.knowledge import Knowledge, load_knowledge  # noqa: E402
from tests.factories import FHIR_SERVER, PATIENT, Factory, Scenario  # noqa: E402

SANDBOX = ROOT / "fixtures/sandbox/sandbox-order-select-r4-azathioprine-active-allopurinol.json"
SPAN_DAYS = 730
EMPTY = {"resourceType": "Bundle", "type": "searchset", "total": 0}

OTHER_DRUGS = (  # the patient's non-thiopurine medicines, named by text only as many EHRs do
    "metformin 500 MG Oral Tablet", "lisinopril 10 MG Oral Tablet",
    "atorvastatin 20 MG Oral Tablet", "amlodipine 5 MG Oral Tablet",
    "omeprazole 20 MG Delayed Release Oral Capsule", "levothyroxine 0.1 MG Oral Tablet",
    "sertraline 50 MG Oral Tablet", "mesalamine 1.2 G Delayed Release Oral Tablet",
    "budesonide 3 MG Delayed Release Oral Capsule", "folic acid 1 MG Oral Tablet",
    "cholecalciferol 1000 UNT Oral Tablet", "calcium carbonate 500 MG Oral Tablet",
    "ferrous sulfate 325 MG Oral Tablet", "metoprolol succinate 50 MG Extended Release Tablet",
    "acetaminophen 500 MG Oral Tablet", "loperamide 2 MG Oral Capsule",
    "ondansetron 4 MG Oral Tablet", "prednisone 5 MG Oral Tablet",
    "cyanocobalamin 1 MG Oral Tablet",
)
OTHER_CONDITIONS = (
    "Essential hypertension", "Type 2 diabetes mellitus", "Hyperlipidemia", "Hypothyroidism",
    "Iron deficiency anemia", "Vitamin D deficiency", "Gastroesophageal reflux disease",
    "Major depressive disorder", "Osteopenia",
)


@functools.cache
def knowledge() -> Knowledge:
    return load_knowledge()


def sandbox() -> dict:
    """Workload 1: the sandbox's order-select capture, quirks included."""
    return json.loads(SANDBOX.read_text(encoding="utf-8"))


def searchset(key: str, items: list[dict]) -> dict:
    """A searchset Bundle as a server answers the service's query for `key`: meta, a self link
    with the query (the FHIR stub matches searches by it), fullUrl and search mode."""
    query = knowledge().prefetch[key].replace("{{context.patientId}}", PATIENT)
    bundle = {"resourceType": "Bundle", "meta": {"lastUpdated": "2026-11-23T11:59:58Z"},
              "type": "searchset", "total": len(items),
              "link": [{"relation": "self", "url": f"{FHIR_SERVER}/{query}"}]}
    if items:
        bundle["entry"] = [{"fullUrl": f"{FHIR_SERVER}/{r['resourceType']}/{r['id']}",
                            "resource": r, "search": {"mode": "match"}} for r in items]
    return bundle


def baseline(hook: str = "order-select") -> tuple[Scenario, dict]:
    """The baseline patient of the tests (no cards) and its request, every key a searchset."""
    scenario = Scenario(knowledge(), hook)
    body = scenario.body(knowledge())
    for key, value in body["prefetch"].items():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            body["prefetch"][key] = searchset(key, scenario.resources(key))
    return scenario, body


def blood_counts(n: int, templates: list[dict], now: datetime) -> list[dict]:
    """n CBC Observations: the templates cloned across evenly spaced dates, values within ±5%
    (a stable patient, so no falling-trend card: the common, no-card path)."""
    dates = max(1, math.ceil(n / len(templates)))
    step = timedelta(days=SPAN_DAYS / dates)
    rng = random.Random(4)  # fixed seed: the same bodies on every run
    out = []
    for i in range(n):
        when = now - timedelta(days=1) - step * (i // len(templates))
        observation = copy.deepcopy(templates[i % len(templates)])
        observation["id"] = f"{observation['id'].split('-')[0]}-{i}"
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        observation["effectiveDateTime"] = stamp
        observation["issued"] = stamp
        quantity = observation["valueQuantity"]
        quantity["value"] = round(quantity["value"] * rng.uniform(0.95, 1.05), 2)
        out.append(observation)
    return out


def medications(f: Factory) -> list[dict]:
    """19 active non-thiopurine MedicationRequests plus one active azathioprine (a renewal)."""
    out = []
    for i, text in enumerate(OTHER_DRUGS):
        request = f.order("other", id=f"mr-active-{i}", status="active", text=text, tablets=1)
        request["dosageInstruction"][0]["text"] = f"1 tablet by mouth once daily ({text})"
        out.append(request)
    return out + [f.order("azathioprine", id="mr-aza-active", status="active")]


LOCAL_SYSTEM = "urn:oid:2.16.840.1.113883.3.9999.1"  # a hospital's own formulary codes


def locally_coded(f: Factory) -> list[dict]:
    """The 20 active medicines of `medications`, each non-thiopurine one coded only in the
    hospital's local formulary (a code no rule knows) beside its text, as the issue's EHR sends."""
    out = medications(f)
    for i, request in enumerate(out[:-1]):
        concept = request["medicationCodeableConcept"]
        concept["coding"] = [{"system": LOCAL_SYSTEM, "code": f"F{40000 + i}",
                              "display": concept["text"]}]
    return out


def conditions(scenario: Scenario) -> list[dict]:
    return [*scenario.resources("conditions"), *(scenario.f.condition(text=text, id=f"cond-{i}")
                                            for i, text in enumerate(OTHER_CONDITIONS))]


def order_sign(now: datetime, counts: int, full_record: bool) -> dict:
    """The baseline order-sign with `counts` blood counts; `full_record` adds 20 active
    medicines and 10 conditions (the realistic outpatient record of workloads 2 and 3)."""
    scenario, body = baseline("order-sign")
    prefetch = body["prefetch"]
    prefetch["bloodCounts"] = searchset("bloodCounts", blood_counts(
        counts, scenario.resources("bloodCounts"), now))
    if full_record:
        prefetch["medications"] = searchset("medications", medications(scenario.f))
        prefetch["conditions"] = searchset("conditions", conditions(scenario))
    return body


def complex_order_sign(now: datetime) -> dict:
    """Workload 5 (issue 13): a complex patient's order-sign, about 140 prefetched resources:
    two years of CBCs, 20 active medicines of which 19 carry only a local code and text, 10
    conditions, the PGx results and a weight. The draft renews the active azathioprine."""
    scenario, body = baseline("order-sign")
    prefetch = body["prefetch"]
    prefetch["bloodCounts"] = searchset("bloodCounts", blood_counts(
        105, scenario.resources("bloodCounts"), now))
    prefetch["medications"] = searchset("medications", locally_coded(scenario.f))
    prefetch["conditions"] = searchset("conditions", conditions(scenario))
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    draft["priorPrescription"] = {"reference": "MedicationRequest/mr-aza-active"}
    return body


def fetch_path() -> dict:
    """Workload 4: the baseline order-select with no prefetch at all: every key is fetched from
    the body's fhirServer."""
    _, body = baseline()
    del body["prefetch"]
    return body


def fhir_documents() -> list[bytes]:
    """What the FHIR stub serves: the baseline patient's data for every key an order service
    declares (the Patient by id, the rest as searchsets carrying their query)."""
    _, body = baseline()
    return [json.dumps(value).encode() for value in body["prefetch"].values()]


def complete(body: dict, fhir_base: str, keys: list[str]) -> None:
    """Point the body at the local FHIR stub and, if it has a prefetch, fill every declared
    key it lacks: from the baseline patient, else an empty searchset (an EHR that found nothing).
    The service gains prefetch keys over time; a key left out would be fetched, turning a
    prefetch workload into a fetch one (the table's "FHIR q" column would show it)."""
    body["fhirServer"] = fhir_base
    if "prefetch" not in body:
        return
    _, full = baseline()
    for key in keys:
        if key not in body["prefetch"]:
            body["prefetch"][key] = full["prefetch"].get(key, EMPTY)


def prefetch_size(body: dict) -> int:
    total = 0
    for value in (body.get("prefetch") or {}).values():
        if value is None:
            continue
        total += len(value.get("entry", [])) if value.get("resourceType") == "Bundle" else 1
    return total


def scaling_body(size: int, now: datetime, fhir_base: str, keys: list[str]) -> dict:
    """The baseline order-sign whose prefetch holds `size` resources: the baseline's other
    keys (patient, PGx results, a condition...) and blood counts for the rest."""
    body = order_sign(now, 1, full_record=False)
    complete(body, fhir_base, keys)
    body = order_sign(now, max(1, size - (prefetch_size(body) - 1)), full_record=False)
    complete(body, fhir_base, keys)
    return body


def now_utc() -> datetime:
    return datetime.now(UTC)

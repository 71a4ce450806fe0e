"""Request bodies for the benchmark, built from the fixtures (nothing here is hand-written FHIR).

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = ROOT / "fixtures" / "requests"
FETCH_FIXTURE = "fetch-all-keys-absent-baseline-none"
FHIR_DOCUMENTS = ROOT / "fixtures" / "fhir-server" / FETCH_FIXTURE
SPAN_DAYS = 730
BASE = "http://fhir.example.test/r4"
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
def _text(path: Path) -> str:
    # Read each fixture once: the fixtures may be regenerated while a run is under way.
    return path.read_text(encoding="utf-8")


def load(name: str) -> dict:
    return json.loads(_text(REQUESTS / f"{name}.json"))


def resources(bundle: dict) -> list[dict]:
    return [entry["resource"] for entry in bundle.get("entry", [])]


def searchset(items: list[dict], template: dict) -> dict:
    """A searchset Bundle shaped like the fixture's (meta, self link), holding `items`."""
    bundle = {k: v for k, v in template.items() if k not in ("entry", "total")}
    bundle["total"] = len(items)
    bundle["entry"] = [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r,
                        "search": {"mode": "match"}} for r in items]
    return bundle


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


def medications(template: dict, thiopurine: dict) -> list[dict]:
    """19 active non-thiopurine MedicationRequests plus one active azathioprine (a renewal)."""
    out = []
    for i, text in enumerate(OTHER_DRUGS):
        request = copy.deepcopy(template)
        request["id"] = f"mr-active-{i}"
        request["medicationCodeableConcept"] = {"text": text}
        request["dosageInstruction"][0]["text"] = f"1 tablet by mouth once daily ({text})"
        out.append(request)
    active = copy.deepcopy(template)
    active["id"] = "mr-aza-active"
    active["medicationCodeableConcept"] = copy.deepcopy(thiopurine["medicationCodeableConcept"])
    return out + [active]


def conditions(template: dict) -> list[dict]:
    out = [template]
    for i, text in enumerate(OTHER_CONDITIONS):
        condition = copy.deepcopy(template)
        condition["id"] = f"cond-{i}"
        condition["code"] = {"text": text}
        out.append(condition)
    return out


def order_sign(now: datetime, counts: int, full_record: bool) -> dict:
    """The baseline order-sign with `counts` blood counts; `full_record` adds 20 active
    medicines and 10 conditions (the realistic outpatient record of workloads 2 and 3)."""
    body = load("baseline-order-sign-azathioprine-none")
    prefetch = body["prefetch"]
    cbc = resources(prefetch["bloodCounts"])
    prefetch["bloodCounts"] = searchset(blood_counts(counts, cbc, now), prefetch["bloodCounts"])
    if full_record:
        active = resources(load("xo-active-allopurinol-azathioprine-warning")
                           ["prefetch"]["medications"])[0]
        draft = resources(body["context"]["draftOrders"])[0]
        prefetch["medications"] = searchset(medications(active, draft), prefetch["medications"])
        prefetch["conditions"] = searchset(conditions(resources(prefetch["conditions"])[0]),
                                           prefetch["conditions"])
    return body


def fetch_path() -> dict:
    """No prefetch at all: every key is fetched from the body's fhirServer."""
    return load(FETCH_FIXTURE)


def complete(body: dict, fhir_base: str, keys: list[str]) -> None:
    """Point the body at the local FHIR stub and, if it has a prefetch, fill every declared
    key it lacks: from the fetch fixture, else an empty searchset (an EHR that found nothing).
    The service gains prefetch keys over time; a key left out would be fetched, turning a
    prefetch workload into a fetch one (the table's "FHIR q" column would show it)."""
    body["fhirServer"] = fhir_base
    if "prefetch" not in body:
        return
    for key in keys:
        path = FHIR_DOCUMENTS / f"{key}.json"
        if key not in body["prefetch"]:
            body["prefetch"][key] = json.loads(_text(path)) if path.exists() else EMPTY


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

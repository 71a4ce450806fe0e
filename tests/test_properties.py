"""Property-based tests (hypothesis): generated CDS Hooks calls, valid and mutated.

Valid calls (drafts from cards/drugs.yaml, blood counts from cards/labs.yaml, PGx results from
cards/pgx.yaml) always get a 200 whose cards obey the CDS Hooks 2.0 rules; mutated calls get that
or a 4xx with an OperationOutcome. Never a 5xx, never an internal error hidden behind a card.
No test reaches the network: fhirServer is an unroutable loopback port and name lookups fail.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from cds_service.knowledge import DEFAULT_DIR, load_knowledge

from .factories import NOW, Scenario, apply
from .test_cases import CASES
from .test_golden import NAMES, sandbox_request

FHIR = "http://127.0.0.1:9/fhir"  # the discard port: connections are refused at once
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"
KNOWLEDGE = load_knowledge()
PGX = yaml.safe_load((DEFAULT_DIR / "pgx.yaml").read_text(encoding="utf-8"))
# Hypothesis in this environment prints generated values as blanks: failures are told by note().
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
    HealthCheck.large_base_example])


# ---- guards: no network, no hidden crashes ----------------------------------------------------

def offline(real):
    """getaddrinfo that resolves only the FHIR stand-in: nothing here may reach the network."""
    def getaddrinfo(host, port, *args, **kwargs):
        if (host, str(port)) != ("127.0.0.1", "9"):
            raise socket.gaierror(f"tests are offline: {host}:{port}")
        return real(host, port, *args, **kwargs)
    return getaddrinfo


class Crashes(logging.Handler):
    """The service's 'unexpected error' records: its last-resort handler answers a hook call
    with a 200 'checks not done' card, which would otherwise pass for a normal answer."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)

    def text(self) -> str:
        return "\n".join(self.format(r) for r in self.records)


@pytest.fixture
def crashes(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", offline(socket.getaddrinfo))
    handler = Crashes()
    logger = logging.getLogger("cds_service")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


# ---- the rules every response obeys ----------------------------------------------------------

def assert_not_empty(value: object, path: str) -> None:
    assert value is not None and value not in ("", [], {}), f"{path} is null or empty"
    if isinstance(value, dict):
        for key, item in value.items():
            assert_not_empty(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_not_empty(item, f"{path}[{i}]")


def assert_card(card: dict, where: str) -> None:
    assert_not_empty(card, where)
    assert isinstance(card.get("uuid"), str), f"{where}: no uuid"
    assert isinstance(card["summary"], str) and len(card["summary"]) < 140, f"{where}: summary"
    assert card["indicator"] in ("info", "warning", "critical"), f"{where}: indicator"
    assert isinstance(card["source"].get("label"), str), f"{where}: source.label"
    assert ("suggestions" in card) == ("selectionBehavior" in card), f"{where}: selectionBehavior"
    if "selectionBehavior" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any"), f"{where}: selectionBehavior"
    for suggestion in card.get("suggestions", []):
        assert isinstance(suggestion.get("label"), str), f"{where}: suggestion label"
        assert isinstance(suggestion.get("uuid"), str), f"{where}: suggestion uuid"
        for action in suggestion.get("actions", []):
            assert action["type"] in ("create", "update", "delete"), f"{where}: action type"
            assert isinstance(action.get("description"), str), f"{where}: action description"
    for reason in card.get("overrideReasons", []):
        assert {"system", "code", "display"} <= set(reason), f"{where}: override reason {reason}"
    for link in card.get("links", []):
        url = urlsplit(link["url"])
        assert url.scheme in ("http", "https") and url.netloc, f"{where}: link url {link['url']}"
        assert link["type"] in ("absolute", "smart") and link.get("label"), f"{where}: link"


def assert_cards(response) -> list[dict]:
    assert response.status_code == 200, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert isinstance(body, dict) and isinstance(body.get("cards"), list), body
    assert set(body) <= {"cards", "systemActions"}, body
    for i, card in enumerate(body["cards"]):
        assert_card(card, f"cards[{i}]")
    assert len({c["uuid"] for c in body["cards"]}) == len(body["cards"]), "duplicate card uuids"
    return body["cards"]


def assert_answer(response) -> None:
    """A 200 with valid cards (hook) or an empty object (feedback), or a 4xx OperationOutcome."""
    if response.status_code == 200:
        body = response.get_json()
        if body != {}:
            assert_cards(response)
        return
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data())
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"], body


# ---- valid FHIR resources and hook calls -----------------------------------------------------

statuses = st.sampled_from(["final", "amended", "corrected", "preliminary", "registered",
                            "cancelled", "entered-in-error", "unknown"])


@st.composite
def fhir_times(draw) -> str:
    when = NOW - timedelta(minutes=draw(st.integers(-7 * 24 * 60, 3 * 365 * 24 * 60)))
    form = draw(st.sampled_from(["date", "dateTime", "offset", "year-month"]))
    return {"date": when.strftime("%Y-%m-%d"), "year-month": when.strftime("%Y-%m"),
            "dateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "offset": when.strftime("%Y-%m-%dT%H:%M:%S+02:00")}[form]


def concept(system: str, code: str, text: str | None = None) -> dict:
    result = {"coding": [{"system": system, "code": code}]}
    return {**result, "text": text} if text else result


drug_concepts = st.one_of(
    st.sampled_from(sorted(KNOWLEDGE.drug_codes)).map(lambda sc: concept(*sc)),
    st.sampled_from(sorted(KNOWLEDGE.drug_by_word)).map(lambda w: {"text": f"{w} tablet"}),
)
dosages = st.fixed_dictionaries({
    "doseAndRate": st.tuples(st.fixed_dictionaries({"doseQuantity": st.fixed_dictionaries({
        "value": st.one_of(st.integers(1, 400), st.floats(0.25, 400).map(lambda v: round(v, 2))),
        "unit": st.sampled_from(["mg", "tablet", "{tbl}", "mL", "TAB"])})})).map(list),
}, optional={"timing": st.fixed_dictionaries({"repeat": st.fixed_dictionaries({
    "frequency": st.integers(1, 4), "period": st.integers(1, 7),
    "periodUnit": st.sampled_from(["d", "wk", "h"])})}), "text": st.just("as directed")})


@st.composite
def medication_requests(draw, rid: str, status: st.SearchStrategy[str]) -> dict:
    resource = {"resourceType": "MedicationRequest", "id": rid, "status": draw(status),
                "intent": "order", "medicationCodeableConcept": draw(drug_concepts),
                "subject": {"reference": "Patient/pt-1"}}
    if draw(st.booleans()):
        resource["dosageInstruction"] = [draw(dosages)]
    if draw(st.booleans()):
        resource["authoredOn"] = draw(fhir_times())
    if draw(st.integers(0, 4)) == 0:
        resource["reasonCode"] = [concept(*draw(st.sampled_from(CONDITION_CODES)))]
    return resource


@st.composite
def blood_counts(draw, rid: str) -> dict:
    code = draw(st.sampled_from(sorted(KNOWLEDGE.analyte_by_code)))
    quantity = {"value": draw(st.one_of(st.integers(0, 400_000),
                                        st.floats(0, 1000).map(lambda v: round(v, 3))))}
    unit = draw(st.one_of(st.none(), st.sampled_from(sorted(KNOWLEDGE.labs.units.factors)),
                          st.sampled_from(["%", "mmol/L", "g/dL"])))
    if unit:
        quantity["unit"] = unit
        if draw(st.booleans()):
            quantity.update(system=UCUM, code=unit)
    observation = {"resourceType": "Observation", "id": rid, "status": draw(statuses),
                   "code": concept(LOINC, code), "subject": {"reference": "Patient/pt-1"},
                   "effectiveDateTime": draw(fhir_times()), "valueQuantity": quantity}
    if draw(st.booleans()):
        observation["referenceRange"] = [{"low": {"value": draw(st.integers(1, 200))}}]
    return observation


def _gene_codes(gene: str, kind: str) -> list[dict]:
    return [*PGX["genes"][gene]["codes"][kind], *PGX["generic_codes"].get(kind, [])]


@st.composite
def pgx_results(draw, rid: str) -> dict:
    gene = draw(st.sampled_from(sorted(PGX["genes"])))
    kind = draw(st.sampled_from(["phenotype", "genotype", "activity"]))
    if not _gene_codes(gene, kind):
        kind = "genotype"  # NUDT15 has no activity assay
    code = draw(st.sampled_from(_gene_codes(gene, kind)))
    observation = {"resourceType": "Observation", "id": rid, "status": draw(statuses),
                   "code": concept(code.get("system", LOINC), code["code"]),
                   "subject": {"reference": "Patient/pt-1"},
                   "effectiveDateTime": draw(fhir_times())}
    if kind == "activity":
        observation["valueQuantity"] = {"value": draw(st.integers(0, 60)), "unit": "U/mL"}
        flag = draw(st.sampled_from(sorted(PGX["activity"]["interpretation_codes"])))
        observation["interpretation"] = [concept(PGX["systems"]["interpretation"], flag)]
    elif kind == "phenotype":
        answer = draw(st.sampled_from(PGX["answers"]))
        observation["valueCodeableConcept"] = concept(LOINC, answer["code"], answer["display"])
    else:
        alleles = sorted(PGX["genes"][gene]["alleles"]["functions"]) + ["*99"]
        diplotype = f"{gene} {draw(st.sampled_from(alleles))}/{draw(st.sampled_from(alleles))}"
        observation["valueString"] = diplotype
    observation["component"] = [{
        "code": concept(LOINC, PGX["components"]["gene_studied"]["code"]),
        "valueCodeableConcept": concept(PGX["systems"]["hgnc"][0], PGX["genes"][gene]["hgnc"])}]
    return observation


CONDITION_CODES = sorted({(c.system, c.code) for spec in KNOWLEDGE.conditions.values()
                          for c in spec.codes})
STATUS_OBSERVATIONS = [s.observation.model_dump() for s in KNOWLEDGE.conditions.values()
                       if s.observation]
clinical_statuses = st.sampled_from(["active", "recurrence", "inactive", "resolved"])


def _clinical(status: str) -> dict:
    return concept("http://terminology.hl7.org/CodeSystem/condition-clinical", status)


@st.composite
def conditions(draw, rid: str) -> dict:
    system, code = draw(st.sampled_from([*CONDITION_CODES, ("http://snomed.info/sct", "1")]))
    return {"resourceType": "Condition", "id": rid, "code": concept(system, code),
            "clinicalStatus": _clinical(draw(clinical_statuses)),
            "subject": {"reference": "Patient/pt-1"}}


@st.composite
def allergies(draw, rid: str) -> dict:
    allergy = {"resourceType": "AllergyIntolerance", "id": rid, "code": draw(drug_concepts),
               "patient": {"reference": "Patient/pt-1"}}
    if draw(st.booleans()):
        allergy["clinicalStatus"] = _clinical(draw(clinical_statuses))
    return allergy


@st.composite
def quantities(draw, rid: str, codes: list[str], values, units: list[str]) -> dict:
    """An Observation with a valueQuantity: body weight, liver enzymes."""
    quantity = {"value": draw(values), "unit": draw(st.sampled_from(units))}
    observation = {"resourceType": "Observation", "id": rid, "status": draw(statuses),
                   "code": concept(LOINC, draw(st.sampled_from(codes))),
                   "subject": {"reference": "Patient/pt-1"},
                   "effectiveDateTime": draw(fhir_times()), "valueQuantity": quantity}
    if draw(st.booleans()):
        observation["referenceRange"] = [{"high": {"value": draw(st.integers(20, 60))}}]
    if draw(st.booleans()):
        flag = draw(st.sampled_from(["HH", "H", "N"]))
        observation["interpretation"] = [concept(PGX["systems"]["interpretation"], flag)]
    return observation


@st.composite
def status_observations(draw, rid: str) -> dict:
    spec = draw(st.sampled_from(STATUS_OBSERVATIONS))
    answer = draw(st.sampled_from([*spec["answers"], "LA26683-5"]))
    return {"resourceType": "Observation", "id": rid, "status": draw(statuses),
            "code": concept(LOINC, spec["code"]), "subject": {"reference": "Patient/pt-1"},
            "effectiveDateTime": draw(fhir_times()), "valueCodeableConcept": concept(LOINC, answer)}


def searchset(resources: list[dict]) -> dict:
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(resources)}
    if resources:
        bundle["entry"] = [{"resource": r} for r in resources]
    return bundle


order_statuses = st.sampled_from(["active", "on-hold", "stopped", "completed"])
# Prefetch key -> (resource generator, most resources); keys not named here get an empty Bundle.
GENERATORS = {
    "medications": (lambda rid: medication_requests(rid, order_statuses), 3),
    "alkylatingHistory": (lambda rid: medication_requests(rid, order_statuses), 2),
    "bloodCounts": (blood_counts, 6),
    "pgxResults": (pgx_results, 3),
    "conditions": (conditions, 2),
    "allergies": (allergies, 2),
    "pregnancyStatus": (status_observations, 2),
    "weight": (lambda rid: quantities(rid, KNOWLEDGE.labs.body_weight.codes, st.floats(
        0.5, 200).map(lambda v: round(v, 1)), [*KNOWLEDGE.labs.body_weight.units, "stone"]), 2),
    "liverTests": (lambda rid: quantities(rid, sorted(KNOWLEDGE.labs.liver_enzymes.analytes),
                                          st.integers(0, 2000), ["U/L", "IU/L"]), 3),
}


@st.composite
def prefetch_values(draw, keys: list[str]) -> dict:
    prefetch = {}
    for key in keys:
        state = draw(st.sampled_from(["data"] * 6 + ["null", "error", "absent"]))
        if state == "data" and key == "patient":
            prefetch[key] = {"resourceType": "Patient", "id": "pt-1", "gender": draw(
                st.sampled_from(["female", "male"])), "birthDate": draw(fhir_times())[:10]}
        elif state == "data":
            make, most = GENERATORS.get(key, (None, 0))
            prefetch[key] = searchset([draw(make(f"{key}-{i}"))
                                       for i in range(draw(st.integers(0, most)))])
        elif state == "null":
            prefetch[key] = None
        elif state == "error":
            prefetch[key] = {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "timeout"}]}
    return prefetch  # an absent key is fetched from FHIR, which refuses the connection


HOOKS = ("order-select", "order-sign", "patient-view")
SERVICES = [s for s in KNOWLEDGE.services.values() if s.hook in HOOKS]


@st.composite
def hook_calls(draw) -> tuple[str, dict]:
    service = draw(st.sampled_from(SERVICES))
    context = {"userId": "Practitioner/u-1", "patientId": "pt-1"}
    if service.hook != "patient-view":
        drafts = [draw(medication_requests(f"draft-{i}", st.just("draft")))
                  for i in range(draw(st.integers(1, 4)))]
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": d} for d in drafts]}
    if service.hook == "order-select":
        refs = [f"MedicationRequest/{d['id']}" for d in drafts]
        context["selections"] = draw(st.lists(st.sampled_from(refs), min_size=1, unique=True))
    body = {"hook": service.hook, "hookInstance": str(draw(st.uuids())), "fhirServer": FHIR,
            "context": context, "prefetch": draw(prefetch_values(sorted(service.prefetch)))}
    return service.id, body


@SETTINGS
@given(call=hook_calls())
def test_valid_calls_always_get_cards_that_obey_the_spec(client, crashes, call):
    service, body = call
    note(f"POST /cds-services/{service} {json.dumps(body)}")
    crashes.records.clear()
    response = client.post(f"/cds-services/{service}", json=body)
    assert not crashes.records, crashes.text()
    assert_cards(response)


# ---- mutated calls ---------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
              st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
WRONG_TYPE = {dict: [], list: {}, str: 0, int: "1", float: "1.5", bool: "true",
              type(None): {}}


# Seeds for the mutated calls: the baseline patient changed in more ways than the clinical cases
# (tests/cases/*.yaml) show, each in the shape an EHR sends, as in tests/cases/README.md.
SHAPES = {
    "order-sign, two drafts and an active allopurinol": {
        "hook": "order-sign", "drafts": ["azathioprine", {"drug": "allopurinol", "strength": 100,
                                                          "tablets": 1}],
        "medications": [{"drug": "allopurinol", "strength": 300, "tablets": 1}]},
    "medication-prescribe, STU3 draft": {"hook": "medication-prescribe",
                                         "draft": {"shape": "STU3"}},
    "medication-prescribe, DSTU2 draft": {"hook": "medication-prescribe",
                                          "draft": {"shape": "DSTU2", "tablets": 2}},
    "order-select, DSTU2 draft and febuxostat": {"draft": {"shape": "DSTU2"},
                                                 "medications": ["febuxostat"]},
    "patient-view, on azathioprine, liver tests": {
        "hook": "patient-view", "medications": [{"drug": "azathioprine", "start": "2026-10-01"}],
        "liver": [{"name": "ALT", "value": 121, "high": 40}]},
    "PGx: activity with a range and a flag, panel of both genes": {"pgx_results": [
        {"gene": "TPMT", "activity": 8, "range": [24, 44], "flag": "L"},
        {"gene": "NUDT15", "diplotype": "*1/*3", "value_string": True, "hgnc_system": 1}]},
    "PGx: phenotype text, no gene component": {"pgx": {"TPMT": {
        "text": "Possible Intermediate Metabolizer", "component": False}}},
    "counts: other units, a lab limit, history": {
        "counts": {"platelets": {"value": 45_000, "unit": "/uL"},
                   "neutrophils": {"value": 1.2, "low": 1.8}, "leukocytes": {"value": 3000,
                                                                             "unit": None}},
        "history": [{"analyte": "platelets", "value": 300, "days_ago": 50, "id": "plt-old"}]},
    "conditions, allergies, pregnancy, alkylating agents": {
        "conditions": ["itp", {"name": "rheumatoid-arthritis"}], "allergies": [
            "mercaptopurine", {"drug": "azathioprine", "verification": "refuted"}],
        "status": ["pregnancy"],
        "alkylating": [{"drug": "alkylating-agent", "text": "cyclophosphamide"}],
        "weight": 92},
    "prefetch: null, an OperationOutcome, absent": {
        "prefetch": {"bloodCounts": "null", "pgxResults": "error", "conditions": "absent"}},
}


def _seed_calls() -> dict[str, tuple[str, dict]]:
    """name -> (service, body): every clinical case, these shapes and the sandbox captures."""
    seeds = {f"case {p.id}": p.values[0].get("given", {}) for p in CASES}
    seeds |= {f"shape {name}": change for name, change in SHAPES.items()}
    calls = {}
    for name, change in seeds.items():
        scenario = apply(Scenario(KNOWLEDGE), change)
        calls[name] = scenario.service, scenario.body(KNOWLEDGE)
    for name in NAMES:
        path, body = sandbox_request(name)
        calls[f"sandbox {name}"] = path.rsplit("/", 1)[1], body
    for _, body in calls.values():
        body["fhirServer"] = FHIR
    return calls


SEEDS = _seed_calls()
SEED_NAMES = sorted(SEEDS)


def _nodes(node: object, path: tuple = ()) -> list[tuple]:
    found = [path]
    items = node.items() if isinstance(node, dict) else enumerate(
        node) if isinstance(node, list) else ()
    for key, child in items:
        found += _nodes(child, (*path, key))
    return found


@st.composite
def mutations(draw, document: dict) -> dict:
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_nodes(document)))
        kind = draw(st.sampled_from(["replace", "delete", "wrong-type", "empty"]))
        if not path:
            document = draw(json_values)
            note(f"the whole body replaced by {json.dumps(document)}")
            return document
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        where, old = ".".join(map(str, path)), parent[path[-1]]
        if kind == "delete":
            del parent[path[-1]]
            note(f"{where} deleted")
            continue
        if kind == "replace":
            parent[path[-1]] = draw(json_values)
        elif kind == "wrong-type":
            parent[path[-1]] = WRONG_TYPE[type(old)]
        else:
            parent[path[-1]] = draw(st.sampled_from([None, "", [], {}]))
        note(f"{where} = {json.dumps(parent[path[-1]])}")
    return document


@st.composite
def mutated_calls(draw) -> tuple[str, object]:
    name = draw(st.sampled_from(SEED_NAMES))
    note(f"seed {name}, fhirServer {FHIR}, mutated:")
    service, original = SEEDS[name]
    return service, draw(mutations(original))


@settings(SETTINGS, max_examples=1000)
@given(call=mutated_calls())
def test_mutated_calls_get_cards_or_a_4xx(client, crashes, call):
    service, body = call
    crashes.records.clear()
    response = client.post(f"/cds-services/{service}", json=body)
    assert not crashes.records, crashes.text()
    assert_answer(response)


@settings(SETTINGS, max_examples=200)
@given(name=st.sampled_from(SEED_NAMES), data=st.data())
def test_corrupted_bytes_get_cards_or_a_4xx(client, crashes, name, data):
    service, body = SEEDS[name]
    raw = bytearray(json.dumps(body).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        cut, new = data.draw(st.integers(0, 3)), data.draw(st.binary(max_size=3))
        note(f"bytes {at}..{at + cut} of {name} replaced by {new!r}")
        raw[at:at + cut] = new
    crashes.records.clear()
    response = client.post(f"/cds-services/{service}", data=bytes(raw),
                           content_type="application/json")
    assert not crashes.records, crashes.text()
    assert_answer(response)


FEEDBACK = {"feedback": [
    {"card": "f850e6a0-a0a7-4ced-bdd8-281d4bccb972", "outcome": "overridden",
     "outcomeTimestamp": "2026-11-22T20:43:33.385Z",
     "overrideReason": {"reason": {"code": "benefit-outweighs-risk",
                                   "system": "http://example.org/override",
                                   "display": "Benefit outweighs risk"},
                        "userComment": "discussed with haematology"}},
    {"card": "3d6e7d42-ce13-467d-9f73-1cde55f8ef28", "outcome": "accepted",
     "outcomeTimestamp": "2026-11-22T20:44:00Z",
     "acceptedSuggestions": [{"id": "e5c5d426-74ce-456a-a11d-7a407ec5c695"}]}]}


@SETTINGS
@given(body=mutations(FEEDBACK))
def test_mutated_feedback_is_stored_or_refused_with_a_4xx(client, crashes, body):
    crashes.records.clear()
    response = client.post("/cds-services/thiopurine-order-sign/feedback", json=body)
    assert not crashes.records, crashes.text()
    assert_answer(response)

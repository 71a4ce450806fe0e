"""A draft that names its drug through medicationReference: relative, absolute under fhirServer,
`#contained` or `urn:uuid:` (a Bundle entry's fullUrl). The drug is resolved and judged, or a
data-unavailable card says which Medication could not be read and why; never `{"cards": []}`.

The patient is a TPMT intermediate metabolizer, so a resolved azathioprine draft of 3 x 50 mg a
day gets the PGx warning with a reduced dose (which proves the drug and its strength were read)."""

from __future__ import annotations

import uuid

import pytest

from .factories import Factory, Scenario, apply
from .fhir_server import resource

SELECT = "/cds-services/thiopurine-order-select"
TPMT_INTERMEDIATE = {"pgx": {"TPMT": {"phenotype": "intermediate"}}}


def _medication(knowledge, mid: str) -> dict:
    """Azathioprine 50 mg tablets as a Medication resource."""
    return {"resourceType": "Medication", "id": mid,
            "code": Factory(knowledge).medication_concept("azathioprine", 50)}


def _call(app, fhir, reference: str) -> tuple[dict, dict]:
    """(request, its draft): the draft's medication is `reference`, fhirServer is `fhir`."""
    knowledge = app.config["KNOWLEDGE"]
    body = apply(Scenario(knowledge), TPMT_INTERMEDIATE).body(knowledge)
    body["fhirServer"] = fhir.base
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    draft.pop("medicationCodeableConcept")
    draft["medicationReference"] = {"reference": reference.format(base=fhir.base)}
    return body, draft


def _answer(app, body: dict) -> list[dict]:
    response = app.test_client().post(SELECT, json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["cards"]


def _judged(cards: list[dict]) -> None:
    """The TPMT card for the 150 mg/day azathioprine draft, with its reduced dose."""
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [
        ("thiopurine-pgx", "warning")]
    assert cards[0]["suggestions"][0]["label"].startswith(
        "Reduce azathioprine to 75 mg/day (50% of 150 mg/day)")


def _unavailable(cards: list[dict], reference: str, why: str) -> None:
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [
        ("data-unavailable", "warning")]
    assert f"its Medication {reference} could not be read ({why})" in cards[0]["detail"]


@pytest.mark.parametrize("reference", ["Medication/m1", "{base}/Medication/m1"])
def test_a_medication_on_the_fhir_server_is_read(reference, app, fhir):
    fhir.serve(f"{fhir.base}/Medication/m1", resource(_medication(app.config["KNOWLEDGE"], "m1")))
    body, _ = _call(app, fhir, reference)
    _judged(_answer(app, body))
    assert "/fhir/Medication/m1" in fhir.paths()


def test_a_contained_medication_is_read(app, fhir):
    body, draft = _call(app, fhir, "#m1")
    draft["contained"] = [_medication(app.config["KNOWLEDGE"], "m1")]
    _judged(_answer(app, body))
    assert not [p for p in fhir.paths() if "Medication/" in p]


def test_a_medication_sent_as_a_bundle_entry_is_read_by_its_full_url(app, fhir):
    full_url = f"urn:uuid:{uuid.uuid4()}"
    body, _ = _call(app, fhir, full_url)
    body["context"]["draftOrders"]["entry"].append(
        {"fullUrl": full_url, "resource": _medication(app.config["KNOWLEDGE"], "m1")})
    _judged(_answer(app, body))


@pytest.mark.parametrize("reference, why", [
    ("#m1", "not in the order's contained resources"),
    ("urn:uuid:0a7c3b7e-4b0e-4f55-9a55-0c3f0b1c2d3e", "not among the resources sent with the"
                                                     " request"),
    ("Medication/m1", "the FHIR server answered HTTP 404"),
    ("{base}/Medication/m1", "the FHIR server answered HTTP 404"),
])
def test_a_medication_that_cannot_be_read_is_reported(reference, why, app, fhir):
    body, draft = _call(app, fhir, reference)
    _unavailable(_answer(app, body), draft["medicationReference"]["reference"], why)

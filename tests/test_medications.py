"""Recognising drugs by ingredient in every way an order can name them, and reading doses."""

from __future__ import annotations

import pytest
import responses

from cds_service.medications import identify, medication_concepts, read_dose

from .conftest import load_request

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def concept(system: str, code: str, text: str | None = None) -> dict:
    return {"coding": [{"system": system, "code": code}], **({"text": text} if text else {})}


@pytest.mark.parametrize("given, drug", [
    (concept(RXNORM, "1256"), "azathioprine"),             # ingredient
    (concept(RXNORM, "359228"), "azathioprine"),           # product (SCD)
    (concept(RXNORM, "404476"), "azathioprine"),           # branded product (SBD)
    (concept("http://www.whocc.no/atc", "L04AX01"), "azathioprine"),
    (concept("http://snomed.info/sct", "372574004"), "azathioprine"),
    (concept(RXNORM, "73689"), "febuxostat"),
    (concept(RXNORM, "0000", "Imuran 50 mg tablets"), "azathioprine"),  # text, last resort
    (concept("http://www.whocc.no/atc", "C09BA"), "ace-inhibitor"),      # ATC class prefix
    (concept(RXNORM, "0000", "prednisolone 5 mg"), None),
    ({"text": "azathioprinex"}, None),                      # whole words only
])
def test_identify_by_ingredient(knowledge, given, drug):
    assert identify([given], knowledge) == drug


def test_contained_medication_reference(knowledge):
    order = {"resourceType": "MedicationRequest", "medicationReference": {"reference": "#m1"},
             "contained": [{"resourceType": "Medication", "id": "m1",
                            "code": concept(RXNORM, "197931")}]}
    assert identify(medication_concepts(order, {}), knowledge) == "mercaptopurine"


def test_medication_ingredient_of_a_referenced_medication(knowledge):
    order = {"resourceType": "MedicationRequest",
             "medicationReference": {"reference": "Medication/m2"}}
    medication = {"resourceType": "Medication", "id": "m2", "code": {"text": "compounded"},
                  "ingredient": [{"itemCodeableConcept": concept(RXNORM, "10485")}]}
    found = identify(medication_concepts(order, {"Medication/m2": medication}), knowledge)
    assert found == "thioguanine"
    assert identify(medication_concepts(order, {}), knowledge) is None


def _with_referenced_medication(name: str) -> dict:
    body = load_request(name)
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    del draft["medicationCodeableConcept"]
    draft["medicationReference"] = {"reference": "Medication/med-aza"}
    return body


def test_a_referenced_medication_is_fetched_from_the_fhir_server(client):
    body = _with_referenced_medication("pgx-tpmt-pm-la-code-critical")
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, body["fhirServer"] + "/Medication/med-aza",
                 json={"resourceType": "Medication", "id": "med-aza",
                       "code": concept(RXNORM, "197388")})
        response = client.post("/cds-services/thiopurine-order-select", json=body)
    assert [c["indicator"] for c in response.get_json()["cards"]] == ["critical"]


def test_an_unreadable_referenced_medication_is_said(client):
    body = _with_referenced_medication("pgx-tpmt-pm-la-code-critical")
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, body["fhirServer"] + "/Medication/med-aza", status=404)
        response = client.post("/cds-services/thiopurine-order-select", json=body)
    cards = response.get_json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["data-unavailable"]
    assert "Medication/med-aza" in cards[0]["detail"]


@pytest.mark.parametrize("dose, timing, mg_per_day", [
    ({"value": 2, "code": "{tbl}"}, {"frequency": 1, "period": 1, "periodUnit": "d"}, 100),
    ({"value": 50, "code": "mg"}, {"frequency": 3, "period": 1, "periodUnit": "d"}, 150),
    ({"value": 1, "unit": "tablet"}, {"frequency": 1, "period": 2, "periodUnit": "d"}, 25),
    ({"value": 7, "code": "mg"}, {"frequency": 1, "period": 1, "periodUnit": "wk"}, 1),
    ({"value": 2, "code": "mL"}, {"frequency": 1, "period": 1, "periodUnit": "d"}, None),
])
def test_dose_in_mg_per_day(knowledge, dose, timing, mg_per_day):
    order = {"medicationCodeableConcept": concept(RXNORM, "197388"),
             "dosageInstruction": [{"timing": {"repeat": timing},
                                    "doseAndRate": [{"doseQuantity": dose}]}]}
    read = read_dose(order, [order["medicationCodeableConcept"]], "azathioprine", knowledge)
    assert (read.mg_per_day if read else None) == mg_per_day

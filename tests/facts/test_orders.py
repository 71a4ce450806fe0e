"""Orders (cds_service/facts/orders.py): which drug an order is for, by code, ATC, SNOMED CT or
name, directly or through a contained or referenced Medication; and its dose in mg per day.
Drug codes come from cards/drugs.yaml, never copied here."""

from __future__ import annotations

import pytest
import responses

from cds_service.facts.orders import (
    Dose,
    Order,
    course_start,
    identify,
    make_order,
    medication_concepts,
    read_dose,
)
from cds_service.fhir_read import Invalid, parse_time

from ..conftest import hook_call
from ..factories import Factory

LOCAL = "http://example.org/fhir/local-formulary"   # a code system the service does not know
DRUGS = ["azathioprine", "mercaptopurine", "thioguanine", "allopurinol", "febuxostat",
         "co-trimoxazole", "ribavirin", "ace-inhibitor", "alkylating-agent"]


def concept(system: str, code: str, text: str | None = None) -> dict:
    return {"coding": [{"system": system, "code": code}], **({"text": text} if text else {})}


def test_every_drug_of_the_knowledge_is_tested(knowledge):
    assert sorted(DRUGS) == sorted(knowledge.drugs)


@pytest.mark.parametrize("drug", DRUGS)
def test_a_drug_is_recognised_by_each_of_its_codes(knowledge, drug):
    spec, systems = knowledge.drugs[drug], knowledge.drug_systems
    codes = [(systems.rxnorm, c) for c in [*spec.rxnorm_ingredient, *spec.products,
                                            *spec.groups]]
    codes += [(systems.atc, c) for c in [*spec.atc, *spec.atc_prefixes]]
    codes += [(systems.snomed, c) for c in spec.snomed]
    assert codes
    for system, code in codes:
        assert identify([concept(system, code)], knowledge) == drug, (system, code)
        # the code alone, in a system the knowledge does not give it: not this drug
        assert identify([concept(LOCAL, code)], knowledge) is None, code


@pytest.mark.parametrize("drug", DRUGS)
def test_a_drug_is_recognised_by_name_as_a_last_resort(knowledge, drug):
    for word in knowledge.drugs[drug].text:
        named = concept(LOCAL, "F-117", f"{word.title()} 50 mg tablets")
        assert identify([named], knowledge) == drug, word
        assert identify([{"coding": [{"display": f"{word} (oral)"}]}], knowledge) == drug
        if " " not in word:  # (a longer name's first word may be a name of its own)
            assert identify([{"text": f"{word}x 5 mg"}], knowledge) is None   # whole words only


def test_the_longest_name_wins(knowledge):
    assert identify([{"text": "6-mercaptopurine 50 mg"}], knowledge) == "mercaptopurine"


def test_a_code_beats_the_name(knowledge):
    product = next(iter(knowledge.drugs["allopurinol"].products))
    mislabelled = concept(knowledge.drug_systems.rxnorm, product, "azathioprine 50 mg")
    assert identify([mislabelled], knowledge) == "allopurinol"


def test_other_medicines_are_not_recognised(knowledge):
    assert identify([{"text": "prednisolone 5 mg"}], knowledge) is None
    assert identify([], knowledge) is None


def test_a_contained_medication(knowledge):
    product = next(iter(knowledge.drugs["mercaptopurine"].products))
    order = {"resourceType": "MedicationRequest", "medicationReference": {"reference": "#m1"},
             "contained": [{"resourceType": "Medication", "id": "m1",
                            "code": concept(knowledge.drug_systems.rxnorm, product)}]}
    assert identify(medication_concepts(order, {}), knowledge) == "mercaptopurine"


def test_the_ingredient_of_a_referenced_medication(knowledge):
    ingredient = knowledge.drugs["thioguanine"].rxnorm_ingredient[0]
    order = {"resourceType": "MedicationRequest",
             "medicationReference": {"reference": "Medication/m2"}}
    medication = {"resourceType": "Medication", "id": "m2", "code": {"text": "compounded"},
                  "ingredient": [{"itemCodeableConcept": concept(
                      knowledge.drug_systems.rxnorm, ingredient)}]}
    found = identify(medication_concepts(order, {"Medication/m2": medication}), knowledge)
    assert found == "thioguanine"
    assert medication_concepts(order, {}) is None   # not resolved: unknown, not "no drug"


def test_an_unresolved_medication_is_reported_and_the_order_kept(knowledge):
    order = {"resourceType": "MedicationRequest", "id": "mr1",
             "medicationReference": {"reference": "Medication/gone"}}
    problems: list[str] = []
    built = make_order(order, {}, knowledge, draft=True, judged=True, problems=problems)
    assert (built.ref, built.drug, built.judged) == ("MedicationRequest/mr1", None, True)
    assert problems == [
        "MedicationRequest/mr1: its Medication Medication/gone could not be read (not found)"]


def _order(knowledge, **given) -> dict:
    return Factory(knowledge).order(**given)


@pytest.mark.parametrize("given, mg_per_day", [
    ({"tablets": 3, "strength": 50}, 150),                     # the baseline: 3 x 50 mg
    ({"tablets": 2, "strength": 25, "per_day": 2}, 100),       # tablets x strength x frequency
    ({"tablets": 1.5, "strength": 100}, 150),
    ({"mg": 50, "per_day": 3}, 150),                           # a dose in mg
    ({"tablets": 1, "strength": 75, "shape": "STU3"}, 75),     # doseQuantity on the dosage
    ({"tablets": 2, "strength": 50, "shape": "DSTU2"}, 100),   # DSTU2 periodUnits
    ({"tablets": 2, "strength": 50, "text": "Imuran 50 mg"}, 100),   # strength from the name
    ({"tablets": 2, "strength": 50, "text": "Imuran"}, None),  # tablets of unknown strength
])
def test_dose_in_mg_per_day(knowledge, given, mg_per_day):
    order = _order(knowledge, **given)
    concepts = medication_concepts(order, {})
    dose = read_dose(order, concepts, identify(concepts, knowledge), knowledge)
    assert dose.mg_per_day == (pytest.approx(mg_per_day) if mg_per_day else None)


def test_a_product_code_in_another_system_gives_no_strength(knowledge):
    rxnorm, product = knowledge.drug_systems.rxnorm, next(iter(knowledge.drugs["azathioprine"]
                                                              .products))
    order = _order(knowledge)
    order["medicationCodeableConcept"] = {"coding": [
        {"system": LOCAL, "code": product},
        {"system": rxnorm, "code": knowledge.drugs["azathioprine"].rxnorm_ingredient[0]}]}
    concepts = medication_concepts(order, {})
    dose = read_dose(order, concepts, identify(concepts, knowledge), knowledge)
    assert (dose.value, dose.unit, dose.strength_mg, dose.mg_per_day) == (3, "tablet", None, None)


@pytest.mark.parametrize("quantity, repeat, mg_per_day", [
    ({"value": 1, "unit": "tablet"}, {"frequency": 1, "period": 2, "periodUnit": "d"}, 25),
    ({"value": 7, "code": "mg"}, {"frequency": 1, "period": 1, "periodUnit": "wk"}, 1),
    ({"value": 25, "code": "mg"}, {"frequency": 1, "period": 12, "periodUnit": "h"}, 50),
    ({"value": 2, "code": "{pill}"}, None, 100),              # no timing: once a day
])
def test_dose_timing(knowledge, quantity, repeat, mg_per_day):
    order = _order(knowledge, strength=50)
    dosage = order["dosageInstruction"][0]
    dosage["doseAndRate"][0]["doseQuantity"] = quantity
    if repeat is None:
        del dosage["timing"]
    else:
        dosage["timing"]["repeat"] = repeat
    concepts = medication_concepts(order, {})
    assert read_dose(order, concepts, "azathioprine", knowledge).mg_per_day == pytest.approx(
        mg_per_day)


def test_a_dose_in_other_units_or_none_is_not_read(knowledge):
    order = _order(knowledge)
    concepts = medication_concepts(order, {})
    order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = {"value": 2, "code": "mL"}
    assert read_dose(order, concepts, "azathioprine", knowledge) is None
    del order["dosageInstruction"]
    assert read_dose(order, concepts, "azathioprine", knowledge) is None


@pytest.mark.parametrize("change, problem", [
    (lambda d: d["doseAndRate"][0]["doseQuantity"].update(value="two"),
     "dosageInstruction[0].doseAndRate[0].doseQuantity.value is not a number"),
    (lambda d: d["doseAndRate"][0].update(doseQuantity=[2]),
     "dosageInstruction[0].doseAndRate[0].doseQuantity is not a Quantity"),
    (lambda d: d["timing"]["repeat"].update(frequency=0),
     "dosageInstruction[0].timing.repeat.frequency is not a positive number"),
    (lambda d: d["timing"]["repeat"].update(periodUnit="fortnight"),
     "dosageInstruction[0].timing.repeat.periodUnit 'fortnight' is not a unit of time"),
])
def test_an_invalid_dose_is_reported_not_fatal(knowledge, change, problem):
    order = _order(knowledge, id="d1")
    change(order["dosageInstruction"][0])
    with pytest.raises(Invalid, match="dosageInstruction"):
        read_dose(order, medication_concepts(order, {}), "azathioprine", knowledge)
    problems: list[str] = []
    built = make_order(order, {}, knowledge, draft=True, judged=True, problems=problems)
    assert (built.drug, built.drug_class, built.dose) == ("azathioprine", "thiopurine", None)
    display = knowledge.drugs["azathioprine"].display
    assert problems == [f"MedicationRequest/d1 ({display}): {problem}; its dose was not checked"]


def test_an_invalid_start_date_is_reported_not_fatal(knowledge):
    order = _order(knowledge, id="d1", authored="23/11/2026")
    problems: list[str] = []
    built = make_order(order, {}, knowledge, draft=True, judged=True, problems=problems)
    assert built.dose.mg_per_day == 150 and built.start is None
    display = knowledge.drugs["azathioprine"].display
    assert problems == [f"MedicationRequest/d1 ({display}): authoredOn is not a valid FHIR"
                        " dateTime"]


def test_the_start_is_the_dosage_bounds_else_when_written(knowledge):
    problems: list[str] = []
    written = make_order(_order(knowledge, authored="2026-11-20"), {}, knowledge, draft=True,
                         judged=True, problems=problems)
    bounded = make_order(_order(knowledge, authored="2026-11-20", start="2026-09-01"), {},
                         knowledge, draft=True, judged=True, problems=problems)
    assert written.start.date().isoformat() == "2026-11-20"
    assert bounded.start.date().isoformat() == "2026-09-01"
    assert problems == []


# ---- a referenced Medication, end to end ---------------------------------------------------

def _with_referenced_medication(knowledge) -> tuple[str, dict, dict]:
    path, body = hook_call(knowledge, {"pgx": {"TPMT": {"phenotype": "poor"}}})
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    draft["medicationReference"] = {"reference": "Medication/med-aza"}
    return path, body, draft.pop("medicationCodeableConcept")


def test_a_referenced_medication_is_fetched_from_the_fhir_server(client, knowledge):
    path, body, code = _with_referenced_medication(knowledge)
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, body["fhirServer"] + "/Medication/med-aza",
                 json={"resourceType": "Medication", "id": "med-aza", "code": code})
        response = client.post(path, json=body)
    cards = response.get_json()["cards"]
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [
        ("thiopurine-pgx", "critical")]


def test_an_unreadable_referenced_medication_is_said(client, knowledge):
    path, body, _ = _with_referenced_medication(knowledge)
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, body["fhirServer"] + "/Medication/med-aza", status=404)
        response = client.post(path, json=body)
    cards = response.get_json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["data-unavailable"]
    assert "Medication/med-aza" in cards[0]["detail"]


# ---- found by the mutation check (tools/mutation.sh) ---------------------------------

def test_a_contained_medication_is_found_by_its_id(knowledge):
    ids = {drug: next(iter(knowledge.drugs[drug].products)) for drug in ("allopurinol",
                                                                          "mercaptopurine")}
    order = {"resourceType": "MedicationRequest", "medicationReference": {"reference": "#m2"},
             "contained": ["junk", *({"resourceType": "Medication", "id": f"m{i}",
                                      "code": concept(knowledge.drug_systems.rxnorm, code)}
                                     for i, code in enumerate(ids.values(), 1))]}
    assert identify(medication_concepts(order, {}), knowledge) == "mercaptopurine"


def _course_order(name: str, start: str | None, mg_per_day: float, status: str = "completed",
                  drug: str = "azathioprine") -> Order:
    return Order(f"MedicationRequest/{name}", {"status": status}, drug, "thiopurine",
                 Dose(mg_per_day, "mg", None, 1), draft=False, judged=False,
                 start=parse_time(start) if start else None)


def test_a_course_starts_at_the_earliest_renewal_at_the_same_dose():
    current = _course_order("current", "2026-06-01", 150, "active")
    history = [
        _course_order("first", "2026-01-01", 150),
        _course_order("other-drug", "2026-02-01", 100, drug="mercaptopurine"),
        _course_order("renewal", "2026-03-01", 150),
        _course_order("undated", None, 150),
        _course_order("same-day-other-dose", "2026-06-01", 100, "stopped"),
        current,
        _course_order("later", "2026-09-01", 150, "active"),
        _course_order("cancelled", "2025-12-01", 150, "cancelled"),
    ]
    assert course_start(current, history).ref == "MedicationRequest/first"
    assert course_start(current, history[::-1]).ref == "MedicationRequest/first"


@pytest.mark.parametrize("before, expected", [
    ([("a", 100, "completed"), ("b", 150, "completed")], "b"),   # a dose change ends the walk
    ([("a", 150, "stopped"), ("b", 150, "completed")], "b"),     # so does a stopped course
])
def test_a_course_restarts_after_a_dose_change_or_a_stop(before, expected):
    current = _course_order("current", "2026-06-01", 150, "active")
    history = [_course_order(name, f"2026-0{i}-01", mg, status)
               for i, (name, mg, status) in enumerate(before, 1)]
    assert course_start(current, [*history, current]).ref == f"MedicationRequest/{expected}"

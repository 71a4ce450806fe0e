"""FHIR resources and CDS Hooks requests for tests, built from the knowledge in cards/.

Every code (drug products, LOINC analytes, condition value sets, PGx codes and answers) is taken
from the loaded knowledge, never copied here, so a case states the clinical situation ("platelets
40", "TPMT *1/*3A", "on allopurinol") and the factory writes it in the shape an EHR sends.

`Scenario` is the baseline patient (azathioprine 150 mg a day as 3 x 50 mg tablets for Crohn's
disease, 70 kg, TPMT *1/*1 and NUDT15 *1/*1, a normal CBC 14 days ago: no cards) and `apply`
changes it with a case's `given` (see tests/cases/README.md).
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.knowledge import Knowledge

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
FHIR_SERVER = "http://fhir.example.test/r4"
PATIENT = "pt-thio-01"
USER = "Practitioner/COREPRACTITIONER1"
UCUM = "http://unitsofmeasure.org"
THO = "http://terminology.hl7.org/CodeSystem"
PHARMVAR = "http://www.pharmvar.org"
SERVICES = {"order-select": "thiopurine-order-select", "order-sign": "thiopurine-order-sign",
            "medication-prescribe": "thiopurine-medication-prescribe",
            "patient-view": "thiopurine-patient-view"}
COUNT_UNIT = "10*3/uL"


def when(days_ago: float = 0, at: str = "08:15:00") -> str:
    day = (NOW - timedelta(days=days_ago)).date().isoformat()
    return f"{day}T{at}Z"


def coding(system: str, code: str, display: str | None = None) -> dict:
    return {"system": system, "code": code, **({"display": display} if display else {})}


class Factory:
    """Resource builders over the knowledge's codes."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.k = knowledge

    # ---- medications -------------------------------------------------------------------

    def product(self, drug: str, strength: float | None) -> tuple[str, float]:
        products = self.k.drugs[drug].products
        for code, mg in products.items():
            if strength is None or mg == strength:
                return code, mg
        raise KeyError(f"no {drug} product of {strength} mg in cards/drugs.yaml")

    def medication_concept(self, drug: str, strength: float | None = None,
                           text: str | None = None) -> dict:
        if text is not None:
            return {"text": text}
        spec = self.k.drugs[drug]
        if spec.products:
            code, mg = self.product(drug, strength)
            name = f"{spec.display} {mg:g} MG Oral Tablet"
        else:
            code, name = spec.rxnorm_ingredient[0], spec.display
        return {"coding": [coding(self.k.drug_systems.rxnorm, code, name)], "text": name}

    def order(self, drug: str = "azathioprine", *, id: str | None = None,  # noqa: A002
              status: str = "draft", tablets: float | None = 3, mg: float | None = None,
              strength: float | None = 50, per_day: float = 1, authored: str | None = None,
              reason: str | None = None, text: str | None = None, shape: str = "R4",
              start: str | None = None, **_: Any) -> dict:
        """A MedicationRequest (R4, or STU3 with `shape: STU3`; DSTU2 MedicationOrder)."""
        spec = self.k.drugs.get(drug)
        strength = strength if spec is None or not spec.products or strength in (
            spec.products.values()) else None
        resource = {
            "resourceType": "MedicationOrder" if shape == "DSTU2" else "MedicationRequest",
            "id": id or f"{'draft' if status == 'draft' else 'active'}-{drug}",
            "status": status, "intent": "order",
            "medicationCodeableConcept": self.medication_concept(drug, strength, text),
            "subject": {"reference": f"Patient/{PATIENT}"},
            "requester": {"reference": USER},
        }
        if shape == "DSTU2":
            del resource["intent"]
            resource["patient"] = resource.pop("subject")
            resource["prescriber"] = resource.pop("requester")
        resource["dateWritten" if shape == "DSTU2" else "authoredOn"] = authored or (
            NOW.date().isoformat())
        if reason:
            resource["reasonCode"] = [self.condition_concept(reason)]
        dose = ({"value": tablets, "unit": "tablet", "system": UCUM, "code": "{tbl}"}
                if mg is None else {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"})
        repeat: dict[str, Any] = {"frequency": per_day, "period": 1,
                                  "periodUnits" if shape == "DSTU2" else "periodUnit": "d"}
        if start:
            repeat["boundsPeriod"] = {"start": start}
        dosage = {"text": "as directed", "timing": {"repeat": repeat}}
        if shape == "R4":
            dosage["doseAndRate"] = [{"doseQuantity": dose}]
        else:
            dosage["doseQuantity"] = dose
        resource["dosageInstruction"] = [dosage]
        return resource

    # ---- observations ------------------------------------------------------------------

    def observation(self, oid: str, code: dict, effective: str | None, *,
                    status: str = "final", category: str = "laboratory") -> dict:
        obs = {"resourceType": "Observation", "id": oid, "status": status,
               "category": [{"coding": [coding(f"{THO}/observation-category", category)]}],
               "code": code, "subject": {"reference": f"Patient/{PATIENT}"}}
        if effective is not None:
            obs["effectiveDateTime"] = effective
        return obs

    def loinc(self, code: str, display: str | None = None) -> dict:
        return {"coding": [coding(self.k.labs.loinc, code, display)]}

    def count(self, analyte: str, value: Any, *, days_ago: float = 14, unit: str | None =
              COUNT_UNIT, status: str = "final", low: float | None = None, code_index: int = 0,
              id: str | None = None, effective: str | None = None, **_: Any) -> dict:  # noqa: A002
        spec = self.k.labs.analytes[analyte]
        taken = effective if effective is not None else when(days_ago)
        obs = self.observation(id or f"{analyte}-{str(taken)[:10]}",
                               self.loinc(spec.codes[code_index], spec.display), taken,
                               status=status)
        quantity = {"value": value} if unit is None else {"value": value, "unit": unit}
        if unit is not None and unit == COUNT_UNIT:
            quantity |= {"system": UCUM, "code": unit}
        obs["valueQuantity"] = quantity
        if low is not None:
            obs["referenceRange"] = [{"low": {k: v for k, v in quantity.items() if k != "value"}
                                      | {"value": low}}]
        return obs

    def weight(self, kg: float, days_ago: float = 53) -> dict:
        obs = self.observation("weight", self.loinc(self.k.labs.body_weight.codes[0],
                                                    "Body weight"), when(days_ago)[:10],
                               category="vital-signs")
        obs["valueQuantity"] = {"value": kg, "unit": "kg", "system": UCUM, "code": "kg"}
        return obs

    def liver(self, name: str, value: float, *, high: float | None = None,
              flag: str | None = None, days_ago: float = 14) -> dict:
        code = next(c for c, n in self.k.labs.liver_enzymes.analytes.items() if n == name)
        obs = self.observation(f"{name.lower()}-{days_ago}", self.loinc(code, name),
                               when(days_ago))
        obs["valueQuantity"] = {"value": value, "unit": "U/L", "system": UCUM, "code": "U/L"}
        if high is not None:
            obs["referenceRange"] = [{"high": {"value": high, "unit": "U/L"}}]
        if flag:
            obs["interpretation"] = [{"coding": [coding(
                self.k.pgx.spec.systems.interpretation, flag)]}]
        return obs

    # ---- PGx -----------------------------------------------------------------------------

    def gene_component(self, gene: str, system: int = 0) -> dict:
        spec = self.k.pgx.spec
        return {"code": self.loinc(spec.components.gene_studied.code),
                "valueCodeableConcept": {"coding": [coding(
                    spec.systems.hgnc[system], spec.genes[gene].hgnc, gene)]}}

    def pgx(self, gene: str, *, diplotype: str | None = None, phenotype: str | None = None,
            text: str | None = None, activity: float | None = None,
            range: list[float] | None = None, flag: str | None = None,  # noqa: A002
            code: str | None = None, date: str = "2024-02-14T10:00:00Z",
            status: str = "final", component: bool = True, hgnc_system: int = 0,
            id: str | None = None, value_string: bool = False, **_: Any) -> dict:  # noqa: A002
        """One TPMT/NUDT15 result: a genotype, a phenotype (LA code or text) or an activity."""
        spec = self.k.pgx
        generic = {kind: [c.code for c in getattr(spec.spec.generic_codes, kind)]
                   for kind in ("phenotype", "genotype")}
        if diplotype is not None:
            obs = self.observation(id or f"genotype-{gene.lower()}",
                                   self.loinc(code or generic["genotype"][0]), date,
                                   status=status)
            label = f"{gene} {diplotype}"
            if value_string:
                obs["valueString"] = label
            else:
                obs["valueCodeableConcept"] = {"coding": [{"system": PHARMVAR,
                                                           "display": label}], "text": label}
        elif activity is not None:
            obs = self.observation(id or "tpmt-activity", self.loinc(
                code or spec.spec.genes[gene].codes.activity[0].code), date, status=status)
            obs["valueQuantity"] = {"value": activity, "unit": "U/mL", "system": UCUM,
                                    "code": "U/mL"}
            if range:
                obs["referenceRange"] = [{"low": {"value": range[0], "unit": "U/mL"},
                                          "high": {"value": range[1], "unit": "U/mL"}}]
            if flag:
                obs["interpretation"] = [{"coding": [coding(spec.spec.systems.interpretation,
                                                            flag)]}]
            component = False
        else:
            obs = self.observation(id or f"phenotype-{gene.lower()}",
                                   self.loinc(code or generic["phenotype"][0]), date,
                                   status=status)
            if phenotype is not None:
                la = next(c for c, p in spec.answers.items() if p == phenotype)
                display = next(a.display for a in spec.spec.answers if a.code == la)
                obs["valueCodeableConcept"] = {"coding": [coding(spec.spec.systems.loinc, la,
                                                                 display)]}
            else:
                obs["valueCodeableConcept"] = {"text": text}
        if component:
            obs["component"] = [self.gene_component(gene, hgnc_system)]
        return obs

    # ---- conditions, allergies -------------------------------------------------------------

    def condition_concept(self, name: str, index: int = 0) -> dict:
        spec = self.k.conditions[name]
        if spec.codes:
            code = spec.codes[index]
            return {"coding": [coding(code.system, code.code)], "text": spec.display}
        return {"text": spec.words[0]}

    def condition(self, name: str | None = None, *, index: int = 0, text: str | None = None,
                  system: str | None = None, code: str | None = None,
                  clinical: str = "active", id: str | None = None, **_: Any) -> dict:  # noqa: A002
        if system and code:
            concept = {"coding": [coding(system, code)]}
        elif text:
            concept = {"text": text}
        else:
            concept = self.condition_concept(name, index)
        return {"resourceType": "Condition", "id": id or f"condition-{name or code or 'text'}",
                "clinicalStatus": {"coding": [coding(f"{THO}/condition-clinical", clinical)]},
                "code": concept, "subject": {"reference": f"Patient/{PATIENT}"}}

    def allergy(self, drug: str, *, verification: str | None = None) -> dict:
        allergy = {"resourceType": "AllergyIntolerance", "id": f"allergy-{drug}",
                   "code": self.medication_concept(drug) if not self.k.drugs[drug].products
                   else {"coding": [coding(self.k.drug_systems.rxnorm,
                                           self.k.drugs[drug].rxnorm_ingredient[0])]},
                   "patient": {"reference": f"Patient/{PATIENT}"}}
        if verification:
            allergy["verificationStatus"] = {"coding": [coding(
                f"{THO}/allergyintolerance-verification", verification)]}
        return allergy

    def status_observation(self, name: str, answer: str, days_ago: float = 3) -> dict:
        spec = self.k.conditions[name].observation
        obs = self.observation(f"status-{name}", self.loinc(spec.code), when(days_ago),
                               category="social-history")
        obs["valueCodeableConcept"] = {"coding": [coding(self.k.labs.loinc, answer)]}
        return obs


def searchset(resources: list[dict]) -> dict:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                              "total": len(resources)}
    if resources:
        bundle["entry"] = [{"fullUrl": f"{FHIR_SERVER}/{r['resourceType']}/{r['id']}",
                            "resource": r} for r in resources]
    return bundle


class Scenario:
    """The baseline patient and one order; `apply` changes it, `body` is the request."""

    def __init__(self, knowledge: Knowledge, hook: str = "order-select") -> None:
        self.f = Factory(knowledge)
        self.hook = hook
        self.drafts = [self.f.order()]
        self.selections: list[str] | None = None      # None: every draft is selected
        self.data: dict[str, Any] = {
            "patient": {"resourceType": "Patient", "id": PATIENT, "gender": "female",
                        "birthDate": "1981-06-14"},
            "medications": [],
            "bloodCounts": [self.f.count("platelets", 250), self.f.count("neutrophils", 4.2),
                            self.f.count("leukocytes", 7.1)],
            "pgxResults": [self.f.pgx("TPMT", diplotype="*1/*1"),
                           self.f.pgx("NUDT15", diplotype="*1/*1")],
            "conditions": [self.f.condition(text="Crohn's disease of ileum", id="crohns")],
            "weight": [self.f.weight(70)],
            "allergies": [], "pregnancyStatus": [], "alkylatingHistory": [], "liverTests": [],
        }
        self.states: dict[str, str] = {}            # key -> null | error | absent

    @property
    def service(self) -> str:
        return SERVICES[self.hook]

    def body(self, knowledge: Knowledge) -> dict:
        body: dict[str, Any] = {
            "hook": self.hook, "hookInstance": str(uuid.uuid4()), "fhirServer": FHIR_SERVER,
            "context": {"userId": USER, "patientId": PATIENT}}
        drafts = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": d} for d in self.drafts]}
        if self.hook in ("order-select", "order-sign"):
            body["context"]["draftOrders"] = drafts
        elif self.hook == "medication-prescribe":
            body["context"]["medications"] = drafts
        if self.hook == "order-select":
            body["context"]["selections"] = self.selections or [
                f"{d['resourceType']}/{d['id']}" for d in self.drafts]
        prefetch = {}
        for key in knowledge.services[self.service].prefetch:
            state = self.states.get(key)
            value = self.data.get(key, [])
            if state == "absent":
                continue
            if state == "null":
                prefetch[key] = None
            elif state == "error":
                prefetch[key] = {"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "exception", "diagnostics": "failed"}]}
            else:
                prefetch[key] = value if isinstance(value, dict) else searchset(value)
        body["prefetch"] = prefetch
        return copy.deepcopy(body)


def _orders(f: Factory, specs: list, status: str) -> list[dict]:
    return [f.order(**{"status": status, **({"drug": s} if isinstance(s, str) else s)})
            for s in specs]


def apply(scenario: Scenario, given: dict) -> Scenario:
    """Change the baseline as a case's `given` says (vocabulary: tests/cases/README.md)."""
    f = scenario.f
    for key, value in given.items():
        if key == "hook":
            scenario.hook = value
        elif key == "draft":
            scenario.drafts = [f.order(**{"status": "draft", **value})]
        elif key == "drafts":
            scenario.drafts = _orders(f, value, "draft")
        elif key == "selected":
            scenario.selections = value
        elif key == "medications":
            scenario.data["medications"] = _orders(f, value, "active")
        elif key == "pgx":
            results = {r["component"][0]["valueCodeableConcept"]["coding"][0]["display"]: r
                       for r in scenario.data["pgxResults"]}
            for gene, spec in value.items():
                if spec is None:
                    results.pop(gene, None)
                else:
                    results[gene] = f.pgx(gene, **spec)
            scenario.data["pgxResults"] = list(results.values())
        elif key == "pgx_results":
            scenario.data["pgxResults"] = [f.pgx(**spec) for spec in value]
        elif key == "counts":
            by_name = {o["id"].split("-")[0]: o for o in scenario.data["bloodCounts"]}
            for analyte, spec in value.items():
                spec = spec if isinstance(spec, dict) else {"value": spec}
                if spec.get("value", 0) is None:
                    by_name.pop(analyte, None)
                else:
                    by_name[analyte] = f.count(analyte, **spec)
            scenario.data["bloodCounts"] = list(by_name.values())
        elif key == "history":
            scenario.data["bloodCounts"] += [f.count(**spec) for spec in value]
        elif key == "conditions":
            scenario.data["conditions"] = [f.condition(**(
                {"name": c} if isinstance(c, str) else c)) for c in value]
        elif key == "weight":
            scenario.data["weight"] = [] if value is None else [f.weight(value)]
        elif key == "allergies":
            scenario.data["allergies"] = [f.allergy(**({"drug": a} if isinstance(a, str)
                                                       else a)) for a in value]
        elif key == "alkylating":
            scenario.data["alkylatingHistory"] = _orders(f, value, "completed")
        elif key == "status":
            scenario.data["pregnancyStatus"] = [f.status_observation(**s) for s in value]
        elif key == "liver":
            scenario.data["liverTests"] = [f.liver(**spec) for spec in value]
        elif key == "prefetch":
            scenario.states.update(value)
        elif key == "raw":
            for data_key, resources in value.items():
                scenario.data[data_key] = [*scenario.data.get(data_key, []), *resources]
        else:
            raise KeyError(f"unknown 'given' key {key!r}")
    return scenario

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
BASELINE_CBC = {"platelets": 250, "neutrophils": 4.2, "leukocytes": 7.1}   # x10^9/L


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
              strength: float | None = 50, per_day: float = 1, authored: str | int | None = None,
              reason: str | dict | None = None, text: str | None = None, shape: str = "R4",
              start: str | None = None, bare: bool = False, code: str | None = None,
              prior: str | None = None, fields: dict | None = None, **_: Any) -> dict:
        """A MedicationRequest (R4, or STU3 with `shape: STU3`; DSTU2 MedicationOrder).
        `code`: an RxNorm code of the drug in cards/drugs.yaml instead of its product;
        `prior`: the order it renews or replaces (priorPrescription); `fields`: more elements,
        as an EHR adds them (none a rule reads)."""
        spec = self.k.drugs.get(drug)
        strength = strength if spec is None or not spec.products or strength in (
            spec.products.values()) else None
        resource: dict[str, Any] = {
            "resourceType": "MedicationOrder" if shape == "DSTU2" else "MedicationRequest",
            "id": id or f"{'draft' if status == 'draft' else 'active'}-{drug}",
            "status": status, "subject": {"reference": f"Patient/{PATIENT}"},
        }
        if shape == "DSTU2":
            resource["patient"] = resource.pop("subject")
        written = "dateWritten" if shape == "DSTU2" else "authoredOn"
        resource[written] = (when(authored)[:10] if isinstance(authored, int)
                             else authored or NOW.date().isoformat())
        if bare:
            return resource  # the sandbox's draft before a medication is chosen
        resource["medicationCodeableConcept"] = self.medication_concept(drug, strength, text)
        if code:
            known = {c for (_, c), d in self.k.drug_codes.items() if d == drug}
            if code not in known:
                raise KeyError(f"{code} is not a code of {drug} in cards/drugs.yaml")
            resource["medicationCodeableConcept"] = {"coding": [coding(
                self.k.drug_systems.rxnorm, code)]}
        if prior:
            resource["priorPrescription"] = {"reference": prior}
        if shape == "DSTU2":
            resource["prescriber"] = {"reference": USER}
        else:
            resource |= {"intent": "order", "requester": {"reference": USER}}
        if reason and shape == "DSTU2":  # DSTU2 MedicationOrder: one reasonCodeableConcept
            resource["reasonCodeableConcept"] = self.reason_concept(reason)
        elif reason:
            resource["reasonCode"] = [self.reason_concept(reason)]
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
        return resource | (fields or {})

    def service_request(self, test: str, id: str | None = None, **_: Any) -> dict:  # noqa: A002
        """A draft ServiceRequest for a test of cards/rules.yaml `tests` (e.g. a CBC)."""
        code = self.k.cards.tests[test].code
        return {"resourceType": "ServiceRequest", "id": id or f"draft-{test}", "status": "draft",
                "intent": "order", "code": {"coding": [coding(code.system, code.code,
                                                              code.display)]},
                "subject": {"reference": f"Patient/{PATIENT}"}, "requester": {"reference": USER}}

    def statement(self, order: dict) -> dict:
        """The order as a MedicationStatement (a medicine taken, e.g. prescribed elsewhere)."""
        statement = {k: v for k, v in order.items()
                     if k not in ("intent", "requester", "authoredOn", "dosageInstruction",
                                  "priorPrescription")}
        statement |= {"resourceType": "MedicationStatement",
                      "id": order["id"].replace("active-", "statement-"),
                      "effectivePeriod": {"start": order.get("authoredOn", "2025-01-01")},
                      "dosage": order.get("dosageInstruction", [])}
        return statement

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
              COUNT_UNIT, ucum: bool = True, status: str = "final", low: float | None = None,
              code_index: int = 0, id: str | None = None, effective: str | None = None,  # noqa: A002
              fields: dict | None = None, **_: Any) -> dict:
        """A blood count; the unit as a UCUM code too unless `ucum` is false (e.g. "K/uL");
        `fields` as for `order`."""
        spec = self.k.labs.analytes[analyte]
        taken = effective if effective is not None else when(days_ago)
        obs = self.observation(id or f"{analyte}-{str(taken)[:10]}",
                               self.loinc(spec.codes[code_index], spec.display), taken,
                               status=status)
        quantity = {"value": value} if unit is None else {"value": value, "unit": unit}
        if unit is not None and ucum:
            quantity |= {"system": UCUM, "code": unit}
        obs["valueQuantity"] = quantity
        if low is not None:
            obs["referenceRange"] = [{"low": {k: v for k, v in quantity.items() if k != "value"}
                                      | {"value": low}}]
        return obs | (fields or {})

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

    def pgx_code(self, gene: str, kind: str, own: bool) -> str:
        """The LOINC code for a result kind: the generic one, or the gene's own."""
        spec = self.k.pgx.spec
        return getattr(spec.genes[gene].codes if own else spec.generic_codes, kind)[0].code

    def pgx(self, gene: str, *, diplotype: str | None = None, phenotype: str | None = None,
            text: str | None = None, activity: float | None = None,
            range: list[float] | None = None, flag: str | None = None,  # noqa: A002
            gene_code: bool = False, date: str = "2024-02-14T10:00:00Z",
            status: str = "final", component: bool = True, hgnc_system: int = 0,
            id: str | None = None, value_string: bool = False,  # noqa: A002
            fields: dict | None = None, **_: Any) -> dict:
        """One TPMT/NUDT15 result: a genotype, a phenotype (LA code or text) or an activity,
        coded with the generic code of its kind, or the gene's own with `gene_code`; `fields`
        as for `order`."""
        spec = self.k.pgx
        if diplotype is not None:
            obs = self.observation(id or f"genotype-{gene.lower()}",
                                   self.loinc(self.pgx_code(gene, "genotype", gene_code)), date,
                                   status=status)
            label = f"{gene} {diplotype}"
            if value_string:
                obs["valueString"] = label
            else:
                obs["valueCodeableConcept"] = {"coding": [{"system": PHARMVAR,
                                                           "display": label}], "text": label}
        elif activity is not None:
            obs = self.observation(id or f"tpmt-activity-{date[:4]}", self.loinc(
                self.pgx_code(gene, "activity", True)), date, status=status)
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
                                   self.loinc(self.pgx_code(gene, "phenotype", gene_code)), date,
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
        return obs | (fields or {})

    # ---- conditions, allergies -------------------------------------------------------------

    def condition_concept(self, name: str, index: int = 0) -> dict:
        spec = self.k.conditions[name]
        if spec.codes:
            code = spec.codes[index]
            return {"coding": [coding(code.system, code.code)], "text": spec.display}
        return {"text": spec.words[0]}

    def reason_concept(self, reason: str | dict) -> dict:
        """An order's reason: a condition name, {name, index} or {text} (a single object in the
        sandbox's shape)."""
        if isinstance(reason, str):
            return self.condition_concept(reason)
        return {"text": reason["text"]} if "text" in reason else self.condition_concept(
            reason["name"], reason.get("index", 0))

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
        """An allergy to a drug's ingredient (its first RxNorm ingredient code)."""
        spec = self.k.drugs[drug]
        code = coding(self.k.drug_systems.rxnorm, spec.rxnorm_ingredient[0], spec.display)
        allergy = {"resourceType": "AllergyIntolerance", "id": f"allergy-{drug}",
                   "code": {"coding": [code], "text": spec.display},
                   "patient": {"reference": f"Patient/{PATIENT}"}}
        if verification:
            allergy["verificationStatus"] = {"coding": [coding(
                f"{THO}/allergyintolerance-verification", verification)]}
        return allergy

    def status_observation(self, name: str, text: str | None = None,
                           days_ago: float = 3) -> dict:
        """A pregnancy / breastfeeding status Observation answering yes (the knowledge's answer
        code), or with an uncoded `text` answer (the knowledge holds no "no" answer codes)."""
        spec = self.k.conditions[name].observation
        obs = self.observation(f"status-{name}", self.loinc(spec.code), when(days_ago),
                               category="social-history")
        obs["valueCodeableConcept"] = ({"text": text} if text is not None else
                                       {"coding": [coding(self.k.labs.loinc, spec.answers[0])]})
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
        self.drafts: list[dict] | None = [self.f.order()]   # None: no draftOrders at all
        self.selections: list[str] | None = None      # None: every draft is selected
        self.counts = {name: self.f.count(name, value) for name, value in BASELINE_CBC.items()}
        self.genes = {gene: self.f.pgx(gene, diplotype="*1/*1") for gene in ("TPMT", "NUDT15")}
        self.data: dict[str, Any] = {
            "patient": {"resourceType": "Patient", "id": PATIENT, "gender": "female",
                        "birthDate": "1981-06-14"},
            "medications": [], "bloodCounts": [], "pgxResults": [],
            "conditions": [self.f.condition(text="Crohn's disease of ileum", id="crohns")],
            "weight": [self.f.weight(70)],
            "allergies": [], "pregnancyStatus": [], "alkylatingHistory": [], "liverTests": [],
            "thiopurineHistory": [], "medicationStatements": [],
        }
        self.states: dict[str, str] = {}            # key -> null | error | absent
        self.no_prefetch = False                    # True: the request has no prefetch at all
        self.sandbox = False                        # True: the sandbox's shape quirks

    @property
    def service(self) -> str:
        return SERVICES[self.hook]

    def resources(self, key: str) -> list[dict] | dict:
        """What the EHR holds for a prefetch key (a list, or the Patient)."""
        own = {"bloodCounts": list(self.counts.values()), "pgxResults": list(self.genes.values())}
        value = self.data.get(key, [])
        return value if isinstance(value, dict) else [*own.get(key, []), *value]

    def _drafts(self) -> dict:
        bundle = {"resourceType": "Bundle", "type": "collection",  # a copy: quirks edit it
                  "entry": [{"resource": d} for d in copy.deepcopy(self.drafts or [])]}
        if self.sandbox:
            del bundle["type"]
            for entry in bundle["entry"]:
                sandbox_quirks(entry["resource"])
        return bundle

    def body(self, knowledge: Knowledge) -> dict:
        body: dict[str, Any] = {
            "hook": self.hook, "hookInstance": str(uuid.uuid4()), "fhirServer": FHIR_SERVER,
            "context": {"userId": USER, "patientId": PATIENT}}
        if self.drafts is not None:
            if self.hook in ("order-select", "order-sign"):
                body["context"]["draftOrders"] = self._drafts()
            elif self.hook == "medication-prescribe":
                body["context"]["medications"] = self._drafts()
            if self.hook == "order-select":
                body["context"]["selections"] = self.selections or [
                    f"{d['resourceType']}/{d['id']}" for d in self.drafts]
        if not self.no_prefetch:
            body["prefetch"] = {key: self._prefetch(key)
                                for key in knowledge.services[self.service].prefetch
                                if self.states.get(key) != "absent"}
        return copy.deepcopy(body)

    def _prefetch(self, key: str) -> dict | None:
        state = self.states.get(key)
        if state == "null":
            return None
        if state == "error":
            return {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "exception", "diagnostics": "failed"}]}
        value = self.resources(key)
        return value if isinstance(value, dict) else searchset(value)


def sandbox_quirks(draft: dict) -> None:
    """The CDS Hooks sandbox's draft shape (its captures): category and reasonCode as single
    objects, a "{pill}" dose without a unit, intent on DSTU2 too, no requester."""
    if "medicationCodeableConcept" not in draft:
        return  # Rx View before a medication is chosen: the draft is bare
    draft.pop("requester", None)
    draft.pop("prescriber", None)
    draft["intent"] = "order"
    draft["category"] = {"coding": [coding(f"{THO}/medicationrequest-category", "community")]}
    if "reasonCode" in draft:
        draft["reasonCode"] = draft["reasonCode"][0]
    for dosage in draft["dosageInstruction"]:
        holder = (dosage.get("doseAndRate") or [dosage])[0]
        holder["doseQuantity"] = {"value": holder["doseQuantity"]["value"], "system": UCUM,
                                  "code": "{pill}"}


def _orders(f: Factory, specs: list, status: str) -> list[dict]:
    """Orders from names or field maps; `{test: cbc}` is a draft ServiceRequest."""
    return [f.service_request(**s) if isinstance(s, dict) and "test" in s else
            f.order(**{"status": status, **({"drug": s} if isinstance(s, str) else s)})
            for s in specs]


def _counts(scenario: Scenario, value: dict) -> None:
    for analyte, spec in value.items():
        spec = spec if isinstance(spec, dict) else {"value": spec}
        if spec.get("value", 0) is None:
            scenario.counts.pop(analyte, None)
        else:
            scenario.counts[analyte] = scenario.f.count(analyte, **spec)


def apply(scenario: Scenario, given: dict) -> Scenario:
    """Change the baseline as a case's `given` says (vocabulary: tests/cases/README.md)."""
    f, data = scenario.f, scenario.data
    for key, value in given.items():
        if key == "hook":
            scenario.hook = value
        elif key == "draft":
            scenario.drafts = [f.order(**{"status": "draft", **value})]
        elif key == "drafts":
            scenario.drafts = None if value is None else _orders(f, value, "draft")
        elif key == "selected":
            scenario.selections = value
        elif key == "sandbox":
            scenario.sandbox = value
        elif key == "medications":
            data["medications"] = _orders(f, value, "active")
        elif key == "statements":
            data["medicationStatements"] = [f.statement(o) for o in _orders(f, value, "active")]
        elif key == "pgx":
            for gene, spec in value.items():
                scenario.genes.pop(gene, None)
                if spec is not None:
                    scenario.genes[gene] = f.pgx(gene, **spec)
        elif key == "pgx_results":
            scenario.genes = {}
            data["pgxResults"] = [f.pgx(**spec) for spec in value]
        elif key == "counts":
            _counts(scenario, value)
        elif key == "cbc_days_ago":
            _counts(scenario, {name: {"value": v, "days_ago": value}
                               for name, v in BASELINE_CBC.items()})
        elif key == "history":
            data["bloodCounts"] = [*data["bloodCounts"], *(f.count(**spec) for spec in value)]
        elif key == "conditions":
            data["conditions"] = [f.condition(**(
                {"name": c} if isinstance(c, str) else c)) for c in value]
        elif key == "weight":
            data["weight"] = [] if value is None else [f.weight(value)]
        elif key == "allergies":
            data["allergies"] = [f.allergy(**({"drug": a} if isinstance(a, str) else a))
                                 for a in value]
        elif key == "alkylating":
            data["alkylatingHistory"] = _orders(f, value, "completed")
        elif key == "status":
            data["pregnancyStatus"] = [f.status_observation(**(
                {"name": s} if isinstance(s, str) else s)) for s in value]
        elif key == "liver":
            data["liverTests"] = [f.liver(**spec) for spec in value]
        elif key == "prefetch":
            if value == "absent":
                scenario.no_prefetch = True
            else:  # YAML null arrives as None
                scenario.states.update({k: v or "null" for k, v in value.items()})
        elif key == "raw":
            for data_key, resources in value.items():
                data[data_key] = [*data.get(data_key, []), *resources]
        else:
            raise KeyError(f"unknown 'given' key {key!r}")
    return scenario

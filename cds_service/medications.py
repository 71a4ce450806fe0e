"""Which drug an order is, and how much of it: ingredient matching and dose reading.

Drugs are recognised by RxNorm ingredient/product/group codes, ATC and SNOMED CT substance codes
(from cards/drugs.yaml), through a contained or referenced Medication, and by name as a last resort.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .fhir_read import as_list, codings, concept_texts
from .knowledge import Knowledge

_STRENGTH = re.compile(r"(\d+(?:\.\d+)?)\s*mg\b", re.IGNORECASE)
_UNITS_PER_DAY = {"d": 1.0, "h": 24.0, "min": 1440.0, "wk": 1 / 7, "mo": 1 / 30, "a": 1 / 365}
_TABLET_UNITS = {"{pill}", "{tbl}", "{tablet}", "{tab}", "tablet", "tablets", "tab", "tabs",
                 "pill", "pills", "tbl"}


@dataclass(frozen=True)
class Dose:
    value: float            # as ordered, in `unit`
    unit: str               # "mg" or "tablet"
    strength_mg: float | None
    per_day: float          # administrations per day

    @property
    def mg(self) -> float | None:
        if self.unit == "mg":
            return self.value
        return self.value * self.strength_mg if self.strength_mg else None

    @property
    def mg_per_day(self) -> float | None:
        return None if self.mg is None else self.mg * self.per_day


def medication_concepts(request: dict, medications: dict[str, dict]) -> list:
    """The CodeableConcepts naming what an order (R4/STU3 MedicationRequest, DSTU2
    MedicationOrder) is for: its own concept, or the referenced Medication's code and
    ingredients."""
    concept = request.get("medicationCodeableConcept")
    if concept is not None:
        return [concept]
    ref = (request.get("medicationReference") or {}).get("reference")
    medication = medication_for(request, ref, medications) if isinstance(ref, str) else None
    if medication is None:
        return []
    ingredients = [i.get("itemCodeableConcept") for i in as_list(medication.get("ingredient"))
                   if isinstance(i, dict)]
    return [medication.get("code"), *ingredients]


def medication_for(request: dict, ref: str, medications: dict[str, dict]) -> dict | None:
    if ref.startswith("#"):
        for contained in as_list(request.get("contained")):
            if isinstance(contained, dict) and contained.get("id") == ref[1:]:
                return contained
        return None
    return medications.get(ref)


def external_reference(request: dict) -> str | None:
    """`Medication/id` that must be looked up elsewhere (not contained)."""
    ref = (request.get("medicationReference") or {}).get("reference")
    if isinstance(ref, str) and ref.startswith("Medication/"):
        return ref
    return None


def identify(concepts: list, knowledge: Knowledge) -> str | None:
    for system, code in codings(concepts):
        drug = knowledge.drug_codes.get((system, code))
        if drug:
            return drug
        for prefix_system, prefix, name in knowledge.drug_prefixes:
            if system == prefix_system and code.startswith(prefix):
                return name
    match = knowledge.drug_pattern.search(" ".join(concept_texts(concepts)).lower())
    return knowledge.drug_by_word[match.group(1)] if match else None


def _strength(concepts: list, drug: str | None, knowledge: Knowledge) -> float | None:
    if drug:
        products = knowledge.drugs[drug].products
        for system, code in codings(concepts):
            if code in products and "rxnorm" in system:
                return products[code]
    for text in concept_texts(concepts):
        match = _STRENGTH.search(text)
        if match:
            return float(match.group(1))
    return None


def dose_quantity(dosage: dict) -> dict | None:
    """R4 keeps the dose in doseAndRate; STU3 and DSTU2 directly on the dosage."""
    for rate in as_list(dosage.get("doseAndRate")):
        if isinstance(rate, dict) and isinstance(rate.get("doseQuantity"), dict):
            return rate["doseQuantity"]
    quantity = dosage.get("doseQuantity")
    return quantity if isinstance(quantity, dict) else None


def _per_day(dosage: dict) -> float:
    """Administrations per day from timing.repeat (drafts are read before validation)."""
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    if not isinstance(repeat, dict):
        return 1.0
    frequency, period = repeat.get("frequency", 1), repeat.get("period", 1)
    unit = repeat.get("periodUnit") or repeat.get("periodUnits") or "d"  # DSTU2: periodUnits
    if not all(isinstance(v, int | float) and v > 0 for v in (frequency, period)):
        return 1.0
    return frequency / period * (_UNITS_PER_DAY.get(unit, 1.0) if isinstance(unit, str) else 1.0)


def read_dose(request: dict, concepts: list, drug: str | None,
              knowledge: Knowledge) -> Dose | None:
    dosages = [d for d in as_list(request.get("dosageInstruction")) if isinstance(d, dict)]
    if not dosages:
        return None
    quantity = dose_quantity(dosages[0])
    if not quantity or not isinstance(quantity.get("value"), int | float):
        return None
    unit = str(quantity.get("code") or quantity.get("unit") or "").strip()
    if unit.lower() == "mg":
        kind = "mg"
    elif unit.lower() in _TABLET_UNITS:
        kind = "tablet"
    else:
        return None
    return Dose(float(quantity["value"]), kind, _strength(concepts, drug, knowledge),
                _per_day(dosages[0]))

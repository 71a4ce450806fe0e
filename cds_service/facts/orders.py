"""Orders: which drug each draft and active medication is, and how much of it.

Drugs are recognised by RxNorm ingredient/product/group codes, ATC and SNOMED CT substance codes
(from cards/drugs.yaml), through a contained or referenced Medication, and by name as a last
resort. Each order is identified once, after every referenced Medication has been resolved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ..fhir_read import Invalid, as_list, codings, concept_texts, read_quantity, read_time
from ..fhir_read import reference as ref_of
from ..fhir_read import status as status_of
from ..knowledge import Knowledge

ORDER_TYPES = ("MedicationRequest", "MedicationOrder")
STATEMENT = "MedicationStatement"   # a medication taken, e.g. prescribed elsewhere
ACTIVE_STATUSES = frozenset({"active", "on-hold"})
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

    def daily(self, value: float | None = None, digits: str = "g") -> str:
        """`value` per administration (the ordered dose when None) a day, in words: "75
        mg/day", or "2 tablets/day" when the strength is unknown."""
        each = self.value if value is None else value
        if self.unit == "mg" or self.strength_mg:
            mg = each if self.unit == "mg" else each * self.strength_mg
            return f"{mg * self.per_day:{digits}} mg/day"
        count = each * self.per_day
        return f"{count:{digits}} tablet{'' if count == 1 else 's'}/day"


@dataclass(frozen=True)
class Order:
    ref: str                        # MedicationRequest/<id>
    resource: dict                  # as the client sent it
    drug: str | None                # a drug in cards/drugs.yaml
    drug_class: str | None
    dose: Dose | None
    draft: bool                     # in the request's drafts (else on the active list)
    judged: bool                    # the service's cards are about it
    start: datetime | None = None   # the dosage's boundsPeriod start, else when written

    @property
    def reasons(self) -> list:
        """Why it is given: R4/STU3 reasonCode, DSTU2 reasonCodeableConcept."""
        return [*as_list(self.resource.get("reasonCode")),
                *as_list(self.resource.get("reasonCodeableConcept"))]


@dataclass(frozen=True)
class Orders:
    """Every order of the request and the patient, indexed once for linear rule evaluation."""
    all: tuple[Order, ...]
    complete: bool = True      # False: the active medication list could not be had
    by_drug: Mapping[str, tuple[Order, ...]] = field(default_factory=dict)
    # the first order of each drug and drug class, and the first not judged (active, or a draft
    # not selected): rules look partners up here, so evaluation stays linear in the orders
    firsts: Mapping[tuple[str, str], Order] = field(default_factory=dict)

    @classmethod
    def of(cls, orders: Iterable[Order], complete: bool) -> Orders:
        orders = tuple(orders)
        by_drug: dict[str, list[Order]] = {}
        firsts: dict[tuple[str, str], Order] = {}
        for order in orders:
            if order.drug:
                by_drug.setdefault(order.drug, []).append(order)
                kinds = ["any"] + ["unjudged"] * (not order.judged) + ["active"] * (
                    not order.draft)
                for key in (order.drug, order.drug_class or ""):
                    for kind in kinds:
                        firsts.setdefault((key, kind), order)
        return cls(orders, complete, {k: tuple(v) for k, v in by_drug.items()}, firsts)

    def first(self, drug_or_class: str, kind: str = "any") -> Order | None:
        """The first order of a drug or drug class; `kind` "unjudged": one this call does not
        judge (active, or a draft not selected); "active": on the active list."""
        return self.firsts.get((drug_or_class, kind))

    @property
    def judged(self) -> tuple[Order, ...]:
        return tuple(o for o in self.all if o.judged and o.drug)

    def established(self, drug: str) -> bool:
        """Already on this drug: an active or on-hold order for it."""
        return self.first(drug, "active") is not None


def contained(resource: dict, ref: str) -> dict | None:
    for item in as_list(resource.get("contained")):
        if isinstance(item, dict) and item.get("id") == ref[1:]:
            return item
    return None


def medication_concepts(resource: dict, medications: Mapping[str, dict]) -> list | None:
    """The CodeableConcepts naming what an order is for: its own concept, or the referenced
    Medication's code and ingredients; None when its Medication could not be resolved."""
    concept = resource.get("medicationCodeableConcept")
    if concept is not None:
        return [concept]
    ref = (resource.get("medicationReference") or {}).get("reference") if isinstance(
        resource.get("medicationReference"), dict) else None
    if not isinstance(ref, str):
        return []
    medication = contained(resource, ref) if ref.startswith("#") else medications.get(ref)
    if medication is None:
        return None
    ingredients = [i.get("itemCodeableConcept") for i in as_list(medication.get("ingredient"))
                   if isinstance(i, dict)]
    return [medication.get("code"), *ingredients]


def identify(concepts: list, knowledge: Knowledge) -> str | None:
    for system, code in codings(concepts):
        drug = knowledge.drug_codes.get((system, code))
        if drug:
            return drug
        for prefix, name in knowledge.drug_prefixes.get(system, ()):
            if code.startswith(prefix):
                return name
    match = knowledge.drug_pattern.search(" ".join(concept_texts(concepts)).lower())
    return knowledge.drug_by_word[match.group(1)] if match else None


def _strength(concepts: list, drug: str, knowledge: Knowledge) -> float | None:
    products = knowledge.drugs[drug].products
    for system, code in codings(concepts):
        if code in products and system == knowledge.drug_systems.rxnorm:
            return products[code]
    for text in concept_texts(concepts):
        match = _STRENGTH.search(text)
        if match:
            return float(match.group(1))
    return None


def dose_quantity(dosage: dict) -> tuple[object, str]:
    """The dose element and its path: R4 keeps it in doseAndRate, STU3 and DSTU2 on the
    dosage itself (a DSTU2 MedicationStatement as quantityQuantity)."""
    for i, rate in enumerate(as_list(dosage.get("doseAndRate"))):
        if isinstance(rate, dict) and "doseQuantity" in rate:
            return rate["doseQuantity"], f"doseAndRate[{i}].doseQuantity"
    if "quantityQuantity" in dosage:
        return dosage["quantityQuantity"], "quantityQuantity"
    return dosage.get("doseQuantity"), "doseQuantity"


def _per_day(dosage: dict, where: str) -> float:
    """Administrations per day from timing.repeat (1 when the timing says nothing)."""
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    if not isinstance(repeat, dict):
        return 1.0
    frequency, period = repeat.get("frequency", 1), repeat.get("period", 1)
    unit = repeat.get("periodUnit", repeat.get("periodUnits", "d"))  # DSTU2: periodUnits
    for name, value in (("frequency", frequency), ("period", period)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise Invalid(f"{where}.timing.repeat.{name} is not a positive number")
    if not isinstance(unit, str) or unit not in _UNITS_PER_DAY:
        raise Invalid(f"{where}.timing.repeat.periodUnit {unit!r} is not a unit of time")
    return frequency / period * _UNITS_PER_DAY[unit]


def dosage_field(resource: dict) -> str:
    """Where a resource keeps its dosages: orders `dosageInstruction`, statements `dosage`."""
    return "dosage" if resource.get("resourceType") == STATEMENT else "dosageInstruction"


def read_dose(resource: dict, concepts: list, drug: str, knowledge: Knowledge) -> Dose | None:
    """The first dosage's dose per administration; None when it is not in mg or tablets.
    Raises Invalid for a malformed dose or timing."""
    field = dosage_field(resource)
    dosages = as_list(resource.get(field))
    if not dosages or not isinstance(dosages[0], dict):
        return None
    element, path = dose_quantity(dosages[0])
    quantity = read_quantity(element, f"{field}[0].{path}")
    if quantity is None:
        return None
    if quantity.unit.lower() == "mg":
        kind = "mg"
    elif quantity.unit.lower() in _TABLET_UNITS:
        kind = "tablet"
    else:
        return None
    per_day = _per_day(dosages[0], f"{field}[0]")
    return Dose(quantity.value, kind, _strength(concepts, drug, knowledge), per_day)


def therapy_start(resource: dict) -> datetime | None:
    """When the order started or last changed: the dosage's boundsPeriod start, else when it
    was written (R4/STU3 authoredOn, DSTU2 dateWritten); a statement's effective start, else
    when it was asserted. Raises Invalid."""
    for dosage in as_list(resource.get(dosage_field(resource))):
        if isinstance(dosage, dict):
            start = read_time(dosage, "timing.repeat.boundsPeriod.start")
            if start:
                return start
    return read_time(resource, "authoredOn", "dateWritten", "effectivePeriod.start",
                     "effectiveDateTime", "dateAsserted")


def make_order(resource: dict, medications: Mapping[str, dict], knowledge: Knowledge, *,
               draft: bool, judged: bool, problems: list[str],
               unresolved: Mapping[str, str] | None = None) -> Order:
    """One order, identified; what could not be read is appended to `problems` (with why a
    referenced Medication could not be had, from `unresolved`)."""
    ref = ref_of(resource)
    concepts = medication_concepts(resource, medications)
    if concepts is None:
        target = resource["medicationReference"]["reference"]
        why = (unresolved or {}).get(target) or (
            "not in the order's contained resources" if target.startswith("#") else "not found")
        problems.append(f"{ref}: its Medication {target} could not be read ({why})")
        return Order(ref, resource, None, None, None, draft, judged)
    drug = identify(concepts, knowledge)
    if drug is None:
        return Order(ref, resource, None, None, None, draft, judged)
    dose, start = None, None
    try:
        dose = read_dose(resource, concepts, drug, knowledge)
    except Invalid as error:
        problems.append(f"{ref} ({knowledge.drugs[drug].display}): {error}; its dose was not"
                        " checked")
    try:
        start = therapy_start(resource)
    except Invalid as error:
        problems.append(f"{ref} ({knowledge.drugs[drug].display}): {error}")
    return Order(ref, resource, drug, knowledge.drugs[drug].drug_class, dose, draft, judged,
                 start)


def is_active(resource: dict) -> bool:
    """An active or on-hold order, or a medication the patient is taking now."""
    return resource.get("resourceType") in (*ORDER_TYPES, STATEMENT) and status_of(
        resource) in ACTIVE_STATUSES


# Orders of the past that show how long a course has run (a cancelled or mistaken order never
# ran; a stopped one ended its course).
_HISTORY_STATUSES = frozenset({"active", "on-hold", "completed", "stopped"})


def course_start(order: Order, history: Iterable[Order]) -> Order:
    """The order that started the current course at the current dose: walking back through
    earlier orders of the same drug while the daily dose is the same and none was stopped. A
    renewal is not a change; a dose change or a restart is."""
    earlier = sorted((o for o in history if o.drug == order.drug and o.start and order.start
                      and o.start < order.start and status_of(o.resource) in _HISTORY_STATUSES),
                     key=lambda o: o.start, reverse=True)
    first = order
    for previous in earlier:
        same = (previous.dose and first.dose and previous.dose.mg_per_day is not None
                and previous.dose.mg_per_day == first.dose.mg_per_day)
        if not same or status_of(previous.resource) == "stopped":
            break
        first = previous
    return first

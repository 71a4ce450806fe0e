"""Patient facts: what the rules need to know, read once from the request and prefetch.

Each fact carries where it came from; every piece of data that was needed but could not be had
or read is recorded in `unavailable` under the check it would have served.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from .fhir_read import as_list, codings, concept_texts, reference, status, validate
from .knowledge import Knowledge
from .labs import (
    COUNTED_STATUSES,
    Counts,
    Measurement,
    effective_time,
    read_counts,
    read_liver,
    read_weight,
)
from .medications import Dose, identify, medication_concepts, read_dose
from .pgx import GeneResult
from .prefetch import FAILED, NONE, KeyData

CHECK_PGX = "TPMT/NUDT15 results"
CHECK_COUNTS = "blood counts"
CHECK_MEDS = "current medications"
CHECK_CONDITIONS = "conditions (ITP, pregnancy, rheumatoid arthritis)"
CHECK_ALLERGIES = "allergies"
CHECK_PREGNANCY = "pregnancy and breastfeeding status"
CHECK_HISTORY = "past alkylating agents"
CHECK_ORDER = "the draft order"
CHECK_WEIGHT = "body weight (dose per kg)"
CHECK_LIVER = "liver tests"
ACTIVE_STATUSES = frozenset({"active", "on-hold"})
_ACTIVE = frozenset({"active", "recurrence", "relapse"})


@dataclass(frozen=True)
class Order:
    ref: str
    resource: dict
    drug: str | None
    dose: Dose | None
    judged: bool
    draft: bool


@dataclass
class Facts:
    now: datetime
    version: str
    orders: list[Order]                     # drafts (draft=True) and active medications
    pgx: dict[str, GeneResult] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    itp: str | None = None                  # evidence line when chronic ITP is on record
    pregnant: str | None = None
    breastfeeding: str | None = None
    rheumatoid_arthritis: str | None = None
    alkylating: str | None = None           # a past or current alkylating-agent order
    allergies: list[tuple[str, str]] = field(default_factory=list)  # (drug, AllergyIntolerance)
    weight: Measurement | None = None
    liver: list[Measurement] = field(default_factory=list)
    condition_texts: str = ""               # active conditions' names, lower case (indication)
    unavailable: dict[str, list[str]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # prefetch keys that could not be had

    def judged(self) -> list[Order]:
        return [o for o in self.orders if o.judged and o.drug]

    def missing(self, check: str, reason: str) -> None:
        self.unavailable.setdefault(check, []).append(reason)


def make_order(resource: dict, judged: bool, draft: bool, medications: dict[str, dict],
               knowledge: Knowledge) -> Order:
    concepts = medication_concepts(resource, medications)
    drug = identify(concepts, knowledge)
    dose = read_dose(resource, concepts, drug, knowledge) if drug else None
    return Order(reference(resource), resource, drug, dose, judged, draft)


def _active_orders(data: KeyData, medications: dict[str, dict], knowledge: Knowledge,
                   facts: Facts, judge: bool) -> None:
    """Active and on-hold orders; on patient-view the thiopurines among them are judged."""
    for resource in data.resources:
        if resource.get("resourceType") not in ("MedicationRequest", "MedicationOrder") or (
                status(resource) not in ACTIVE_STATUSES):
            continue
        order = make_order(resource, False, False, medications, knowledge)
        if judge and order.drug and knowledge.drugs[order.drug].drug_class == "thiopurine":
            order = replace(order, judged=True)
        if order.drug is None:
            continue
        resource, error = validate(resource, facts.version)
        if error:
            facts.missing(CHECK_MEDS, f"{order.ref} ({order.drug}) could not be read ({error})")
        else:
            facts.orders.append(replace(order, resource=resource))


def _relevant(knowledge: Knowledge, observation: dict) -> bool:
    """The cheap code check runs before validation; a shape it cannot read is validated (and
    reported) rather than dropped, so a malformed PGx result is never silently ignored."""
    try:
        return knowledge.pgx.is_relevant(observation)
    except (TypeError, AttributeError, KeyError, ValueError):
        return True


def _pgx(data: KeyData, knowledge: Knowledge, facts: Facts) -> None:
    usable = []
    for observation in data.resources:
        if observation.get("resourceType") != "Observation" or (
                status(observation) not in COUNTED_STATUSES):
            continue
        if not _relevant(knowledge, observation):
            continue
        observation, error = validate(observation, facts.version)
        if error:
            facts.missing(CHECK_PGX, f"{reference(observation)} could not be read ({error})")
        else:
            usable.append(observation)
    results, problems = knowledge.pgx.interpret(usable)
    facts.pgx = results
    for problem in problems:
        facts.missing(CHECK_PGX, problem)


def matches(concept: object, spec: dict) -> bool:
    """A CodeableConcept in a condition value set: exact codes, code prefixes, or words."""
    for system, code in codings(concept):
        if (system, code) in spec["codes"] or any(
                system == s and code.startswith(p) for s, p in spec["prefixes"]):
            return True
    text = " ".join(concept_texts(concept)).lower()
    return any(w in text for w in spec["words"])


def _codes(value: object) -> set[str]:
    """Codes of a CodeableConcept, or the plain code string DSTU2/STU3 use for statuses."""
    return {value} if isinstance(value, str) else {c for _, c in codings(value)}


def _is_active(resource: dict) -> bool:
    """Active (or recurrence/relapse; an allergy without a status counts), and neither refuted
    nor entered in error."""
    clinical = resource.get("clinicalStatus")
    unstated = clinical is None and resource.get("resourceType") == "AllergyIntolerance"
    refuted = _codes(resource.get("verificationStatus")) & {"entered-in-error", "refuted"}
    return bool(_codes(clinical) & _ACTIVE or unstated) and not refuted


_CONDITION_FACTS = {"itp": "itp", "pregnancy": "pregnant", "breastfeeding": "breastfeeding",
                    "rheumatoid-arthritis": "rheumatoid_arthritis"}


def _conditions(data: KeyData, knowledge: Knowledge, facts: Facts) -> None:
    for order in facts.judged():
        for name, attribute in _CONDITION_FACTS.items():
            if matches(order.resource.get("reasonCode"), knowledge.conditions[name]):
                setattr(facts, attribute, f"the reason of {order.ref}")
    facts.condition_texts = " ".join(
        t.lower() for c in data.resources if c.get("resourceType") == "Condition"
        for t in concept_texts(c.get("code")))
    for condition in data.resources:
        if condition.get("resourceType") != "Condition" or not _is_active(condition):
            continue
        names = [n for n in _CONDITION_FACTS if matches(condition.get("code"),
                                                        knowledge.conditions[n])]
        if not names:
            continue
        condition, error = validate(condition, facts.version)
        if error:
            facts.missing(CHECK_CONDITIONS, f"{reference(condition)} could not be read ({error})")
            continue
        for name in names:
            if getattr(facts, _CONDITION_FACTS[name]) is None:
                setattr(facts, _CONDITION_FACTS[name], f"active condition {reference(condition)}")


def _status_observations(data: KeyData, knowledge: Knowledge, facts: Facts) -> None:
    """The latest pregnancy / breastfeeding status Observation, when it says yes."""
    for name in ("pregnancy", "breastfeeding"):
        spec = knowledge.conditions[name]["observation"]
        dated = [(when, o) for o in data.resources
                 if o.get("resourceType") == "Observation" and status(o) in COUNTED_STATUSES
                 and spec["code"] in _codes(o.get("code")) and (when := effective_time(o))]
        if not dated:
            continue
        when, latest = max(dated, key=lambda d: d[0])
        attribute = _CONDITION_FACTS[name]
        if _codes(latest.get("valueCodeableConcept")) & set(spec["answers"]) and not getattr(
                facts, attribute):
            setattr(facts, attribute, f"status {reference(latest)} on {when:%Y-%m-%d}")


def _allergies(data: KeyData, knowledge: Knowledge, facts: Facts) -> None:
    for allergy in data.resources:
        if allergy.get("resourceType") != "AllergyIntolerance" or not _is_active(allergy):
            continue
        drug = identify([allergy.get("code"), *[r.get("substance") for r in as_list(
            allergy.get("reaction")) if isinstance(r, dict)]], knowledge)
        if drug:
            facts.allergies.append((drug, reference(allergy)))


def _history(data: KeyData, medications: dict[str, dict], knowledge: Knowledge,
             facts: Facts) -> None:
    for resource in [*data.resources, *(o.resource for o in facts.orders)]:
        if resource.get("status") == "entered-in-error":
            continue
        drug = identify(medication_concepts(resource, medications), knowledge)
        if drug and knowledge.drugs[drug].drug_class == "alkylating-agent":
            facts.alkylating = f"{reference(resource)} ({resource.get('status', 'no status')})"
            return


def gather(facts: Facts, data: dict[str, KeyData], medications: dict[str, dict],
           knowledge: Knowledge, judge_active: bool = False) -> Facts:
    """Fill the facts from resolved prefetch; `facts.orders` already holds the drafts."""
    checks = {"medications": CHECK_MEDS, "pgxResults": CHECK_PGX, "bloodCounts": CHECK_COUNTS,
              "conditions": CHECK_CONDITIONS, "weight": CHECK_WEIGHT, "liverTests": CHECK_LIVER,
              "allergies": CHECK_ALLERGIES, "pregnancyStatus": CHECK_PREGNANCY,
              "alkylatingHistory": CHECK_HISTORY}
    for key, check in checks.items():
        item = data.get(key)
        if item is not None and item.status == FAILED:
            facts.failed.add(key)
            facts.missing(check, f"{key}: {item.problem}")
    _active_orders(data["medications"], medications, knowledge, facts, judge_active)
    if any(o.drug and knowledge.drugs[o.drug].drug_class == "thiopurine" for o in facts.judged()):
        _pgx(data["pgxResults"], knowledge, facts)
        facts.counts = read_counts(data["bloodCounts"].resources, knowledge, facts.now,
                                   facts.version)
        for problem in facts.counts.problems:
            facts.missing(CHECK_COUNTS, problem)
        _conditions(data["conditions"], knowledge, facts)
        _optional_labs(data, knowledge, facts)
        empty = KeyData(NONE, ())
        _status_observations(data.get("pregnancyStatus", empty), knowledge, facts)
        _allergies(data.get("allergies", empty), knowledge, facts)
        _history(data.get("alkylatingHistory", empty), medications, knowledge, facts)
    return facts


def _optional_labs(data: dict[str, KeyData], knowledge: Knowledge, facts: Facts) -> None:
    """Body weight (order hooks) and liver tests (patient-view), where the service asks."""
    problems: list[str] = []
    if "weight" in data:
        facts.weight = read_weight(data["weight"].resources, knowledge, facts.now,
                                   facts.version, problems)
        for problem in problems:
            facts.missing(CHECK_WEIGHT, problem)
    problems = []
    if "liverTests" in data:
        facts.liver = read_liver(data["liverTests"].resources, knowledge, facts.now,
                                 facts.version, problems)
        for problem in problems:
            facts.missing(CHECK_LIVER, problem)


def medication_index(data: dict[str, KeyData], fetched: dict[str, KeyData]) -> dict[str, dict]:
    """Medication resources by `Medication/id`, from any prefetch key or a later fetch."""
    index = {}
    for item in [*data.values(), *fetched.values()]:
        for resource in item.resources:
            if resource.get("resourceType") == "Medication":
                index[reference(resource)] = resource
    return index


"""Patient facts: what the rules need to know, read once from the request and prefetch.

Each fact carries where it came from; every piece of data that was needed but could not be had
or read is recorded in `unavailable` under the check it would have served.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from .fhir_read import codings, concept_texts, reference, validate
from .knowledge import Knowledge
from .labs import COUNTED_STATUSES, Counts, Measurement, read_counts, read_liver, read_weight
from .medications import Dose, identify, medication_concepts, read_dose
from .pgx import GeneResult
from .prefetch import FAILED, KeyData

CHECK_PGX = "TPMT/NUDT15 results"
CHECK_COUNTS = "blood counts"
CHECK_MEDS = "current medications"
CHECK_ITP = "conditions (ITP)"
CHECK_ORDER = "the draft order"
CHECK_WEIGHT = "body weight (dose per kg)"
CHECK_LIVER = "liver tests"
ACTIVE_STATUSES = frozenset({"active", "on-hold"})
_ITP_ACTIVE = frozenset({"active", "recurrence", "relapse"})


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
                resource.get("status") not in ACTIVE_STATUSES):
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


def _pgx(data: KeyData, knowledge: Knowledge, facts: Facts) -> None:
    usable = []
    for observation in data.resources:
        if observation.get("resourceType") != "Observation" or (
                observation.get("status") not in COUNTED_STATUSES):
            continue
        if not knowledge.pgx.is_relevant(observation):
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


def _itp(data: KeyData, knowledge: Knowledge, facts: Facts) -> None:
    for order in facts.judged():
        for system, code in codings(order.resource.get("reasonCode")):
            if (system, code) in knowledge.itp_codes:
                facts.itp = f"the order's reason ({code})"
                return
    facts.condition_texts = " ".join(
        t.lower() for c in data.resources if c.get("resourceType") == "Condition"
        for t in concept_texts(c.get("code")))
    for condition in data.resources:
        if condition.get("resourceType") != "Condition" or not _is_itp(condition, knowledge):
            continue
        condition, error = validate(condition, facts.version)
        if error:
            facts.missing(CHECK_ITP, f"{reference(condition)} could not be read ({error})")
            continue
        status = {c for _, c in codings(condition.get("clinicalStatus"))}
        verification = {c for _, c in codings(condition.get("verificationStatus"))}
        clinical = condition.get("clinicalStatus")  # DSTU2/STU3: a plain code string
        if (status & _ITP_ACTIVE or isinstance(clinical, str) and clinical in _ITP_ACTIVE) and (
                not verification & {
                "entered-in-error", "refuted"}):
            facts.itp = f"active condition {reference(condition)}"
            return


def _is_itp(condition: dict, knowledge: Knowledge) -> bool:
    return any(c in knowledge.itp_codes for c in codings(condition.get("code")))


def gather(facts: Facts, data: dict[str, KeyData], medications: dict[str, dict],
           knowledge: Knowledge, judge_active: bool = False) -> Facts:
    """Fill the facts from resolved prefetch; `facts.orders` already holds the drafts."""
    checks = {"medications": CHECK_MEDS, "pgxResults": CHECK_PGX, "bloodCounts": CHECK_COUNTS,
              "conditions": CHECK_ITP, "weight": CHECK_WEIGHT, "liverTests": CHECK_LIVER}
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
        _itp(data["conditions"], knowledge, facts)
        _optional_labs(data, knowledge, facts)
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


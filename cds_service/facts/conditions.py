"""Conditions that change what a rule says (chronic ITP, pregnancy, rheumatoid arthritis...),
recorded allergies, and past alkylating agents. Value sets come from cards/conditions.yaml."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from ..fhir_read import (
    Invalid,
    as_list,
    code_set,
    codings,
    concept_texts,
    effective_time,
    reference,
    status,
)
from ..knowledge import Knowledge
from .counts import COUNTED_STATUSES
from .orders import Order, identify, medication_concepts

# The condition sets the facts read; cards/conditions.yaml must define each (checked at start).
READ = ("itp", "pregnancy", "breastfeeding", "rheumatoid-arthritis")
_ACTIVE = frozenset({"active", "recurrence", "relapse"})


@dataclass(frozen=True)
class Mention:
    """Where a condition was found: an active Condition, an order's reason, or a status
    Observation (then `when` is its date)."""
    via: str          # condition | reason | status
    resource: str
    when: str = ""


@dataclass(frozen=True)
class Conditions:
    """Each condition set of cards/conditions.yaml found: in an active Condition, or as the
    reason of a judged order (which counts for that order only)."""
    active: dict[str, Mention]                  # condition set name -> first active Condition
    reasons: dict[str, dict[str, Mention]]      # order ref -> condition set name -> mention

    def for_order(self, order: Order) -> dict[str, Mention]:
        """What applies to an order: its own reasons first, then the active conditions."""
        return {**self.active, **self.reasons.get(order.ref, {})}


def condition_sets(concept: object, knowledge: Knowledge) -> set[str]:
    """The condition sets a CodeableConcept (or a list of them) is in: by exact code, code
    prefix, or a set's words in its text."""
    index = knowledge.condition_index
    found: set[str] = set()
    for system, code in codings(concept):
        found.update(index.codes.get((system, code), ()))
        found.update(name for s, prefix, name in index.prefixes
                     if s == system and code.startswith(prefix))
    if index.words is not None:
        text = " ".join(concept_texts(concept)).lower()
        for word in index.words.findall(text):
            found.update(index.word_sets[word])
    return found


def is_active(resource: dict) -> bool:
    """Active (or recurrence/relapse; an allergy without a status counts), and neither refuted
    nor entered in error."""
    clinical = resource.get("clinicalStatus")
    unstated = clinical is None and resource.get("resourceType") == "AllergyIntolerance"
    refuted = code_set(resource.get("verificationStatus")) & {"entered-in-error", "refuted"}
    return bool(code_set(clinical) & _ACTIVE or unstated) and not refuted


def read_conditions(resources: Iterable[dict], judged: Iterable[Order],
                    knowledge: Knowledge) -> Conditions:
    reasons = {order.ref: {name: Mention("reason", order.ref)
                           for name in condition_sets(order.reasons, knowledge)}
               for order in judged}
    active: dict[str, Mention] = {}
    for condition in resources:
        if condition.get("resourceType") != "Condition" or not is_active(condition):
            continue
        for name in condition_sets(condition.get("code"), knowledge):
            active.setdefault(name, Mention("condition", reference(condition)))
    return Conditions(active, {ref: found for ref, found in reasons.items() if found})


def status_mentions(observations: Iterable[dict], knowledge: Knowledge,
                    problems: list[str]) -> dict[str, Mention]:
    """Pregnancy / breastfeeding from the latest status Observation, when it says yes."""
    found = {}
    for name in ("pregnancy", "breastfeeding"):
        spec = knowledge.conditions[name].observation
        if spec is None:
            continue
        dated = []
        for obs in observations:
            if (obs.get("resourceType") != "Observation" or status(obs) not in COUNTED_STATUSES
                    or spec.code not in code_set(obs.get("code"))):
                continue
            try:
                when = effective_time(obs)
            except Invalid as error:
                problems.append(f"{reference(obs)}: {error}")
                continue
            if when:
                dated.append((when, obs))
        if dated:
            when, latest = max(dated, key=lambda d: d[0])
            if code_set(latest.get("valueCodeableConcept")) & set(spec.answers):
                found[name] = Mention("status", reference(latest), f"{when:%Y-%m-%d}")
    return found


@dataclass(frozen=True)
class Allergy:
    drug: str
    resource: str


def read_allergies(resources: Iterable[dict], knowledge: Knowledge) -> tuple[Allergy, ...]:
    allergies = []
    for allergy in resources:
        if allergy.get("resourceType") != "AllergyIntolerance" or not is_active(allergy):
            continue
        substances = [r.get("substance") for r in as_list(allergy.get("reaction"))
                      if isinstance(r, dict)]
        drug = identify([allergy.get("code"), *substances], knowledge)
        if drug:
            allergies.append(Allergy(drug, reference(allergy)))
    return tuple(allergies)


@dataclass(frozen=True)
class PastDrug:
    drug: str
    resource: str
    status: str


def read_alkylating(resources: Iterable[dict], orders: Iterable[Order],
                    medications: dict[str, dict], knowledge: Knowledge) -> PastDrug | None:
    """A past or current alkylating-agent order, from the history search or any order (whose
    drug the orders fact has already identified)."""
    known = [(o.resource, o.drug) for o in orders]
    found = ((r, identify(medication_concepts(r, medications) or [], knowledge))
             for r in resources)
    for resource, drug in itertools.chain(known, found):
        if (drug and knowledge.drugs[drug].drug_class == "alkylating-agent"
                and resource.get("status") != "entered-in-error"):
            return PastDrug(drug, reference(resource), status(resource) or "no status")
    return None

"""Findings to CDS Hooks 2.0 cards: text, links and override reasons from cards/rules.yaml filled
with the finding's values; suggestions built as real FHIR resources. No null or empty values are
ever emitted."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from .facts.orders import Dose, Order, dosage_field, dose_quantity
from .findings import Finding
from .knowledge import Knowledge, schema

SUMMARY_LIMIT = 139  # the spec: "<140 characters"
VERSION_EXTENSION = "azathioprine-cds.knowledge-version"
# Values the renderer adds: a reduce-dose suggestion's new dose, the drug a removal removes.
RENDERED = frozenset({"dose", "daily", "current", "percent", "sig", "removed", "order"})
_NEW_DOSE = frozenset({"dose", "daily", "current", "percent", "sig"})
# The values each of rules.yaml's `texts` is filled with.
TEXT_VALUES = {"active-order-change": _NEW_DOSE | {"order"}, "no-lower-dose": {"current"},
               "combined-reduction": _NEW_DOSE | {"reductions"},
               "combined-label": _NEW_DOSE | {"drug"}, "above-target": {"label", "target"},
               "below-target": {"label", "target"}}


def fill(template: str, values: Mapping[str, object]) -> str:
    """A template filled with a finding's values; a list of values reads "A and B"."""
    return template.format_map({k: " and ".join(map(str, v)) if isinstance(v, tuple) else v
                                for k, v in values.items()})


def _summary(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 3].rstrip() + "..."


def _detail(spec: schema.Finding, finding: Finding, knowledge: Knowledge,
            planned: Planned | None, about: set[str]) -> str:
    parts = []
    if finding.evidence:
        lines = (fill(knowledge.cards.evidence[e.kind], e.values) for e in finding.evidence)
        parts.append("**Evidence**\n\n" + "\n".join(f"- {line}" for line in lines))
    recommendation = fill(spec.recommendation, finding.values)
    parts.append("**Recommendation**\n\n" + recommendation[:1].upper() + recommendation[1:])
    parts += _dose_texts(planned, knowledge.cards.texts)
    parts.append(f"*Strength:* {spec.strength}")
    references = [_citation(source) for source in _for_drugs(
        [knowledge.sources[s] for s in spec.references], about)]
    if references:
        parts.append("**References**\n\n" + "\n".join(f"- {r}" for r in references))
    return "\n\n".join(parts)


def _dose_texts(planned: Planned | None, texts: Mapping[str, str]) -> list[str]:
    """What the card says of its suggested dose: the reductions it combines, the change to an
    active order (the EHR applies suggestions to drafts only), or that no lower dose exists."""
    if planned is None:
        return []
    if planned.new is None:
        return [fill(texts["no-lower-dose"], {"current": planned.order.dose.daily()})]
    said = []
    if len(planned.reductions) > 1:
        reductions = " x ".join(f"{r.because} ({r.fraction:.0%})" for r in planned.reductions)
        said.append(fill(texts["combined-reduction"],
                         {**planned.new.values(), "reductions": reductions}))
    if not planned.order.draft:
        said.append(fill(texts["active-order-change"],
                         {**planned.new.values(), "order": planned.order.ref}))
    return said


def _drugs_of(finding: Finding) -> set[str]:
    return {o.drug for o in (finding.order, finding.target, finding.partner) if o and o.drug}


def _for_drugs(items: list, about: set[str]) -> list:
    """A card that cites several drugs' labels keeps those of the drugs it is about (all of
    them when it is about none of those drugs)."""
    own = [i for i in items if set(i.drugs) & about]
    return [i for i in items if not i.drugs or i in own or not own]


def _citation(source: schema.Source) -> str:
    return f"{source.citation} <{source.url}>" if source.url else source.citation


@dataclass(frozen=True)
class NewDose:
    """A reduced dose, in the order's own unit, and the words a suggestion shows for it."""
    value: float        # per administration, in the order's unit
    dose: str           # "1.5 tablets (75 mg)"
    daily: str          # "75 mg/day"
    current: str        # the order's daily dose now, "150 mg/day"
    percent: int        # daily / current
    sig: str            # "1.5 tablets (75 mg) once daily"
    target: str | None = None  # the dose asked, when the product's doses miss it by a step
    above: bool = False        # the smallest dose of the product is above the dose asked

    def values(self) -> dict[str, object]:
        return {"dose": self.dose, "daily": self.daily, "current": self.current,
                "percent": self.percent, "sig": self.sig}


def _often(per_day: float) -> str:
    return {1: "once daily", 2: "twice daily"}.get(per_day, f"{per_day:g} times daily")


def _amount(value: float, dose: Dose) -> tuple[str, str]:
    """(per administration, per day) for `value` in the order's unit."""
    if dose.unit == "mg":
        return f"{value:g} mg", dose.daily(value)
    tablets = f"{value:g} tablet{'s' if value != 1 else ''}"
    if dose.strength_mg:
        return f"{tablets} ({value * dose.strength_mg:g} mg)", dose.daily(value)
    return tablets, dose.daily(value)


_SLACK = 0.02  # of a half tablet or dose step
_MISSED = 0.1  # a suggested dose this far below the dose asked says so (the product's steps)


def reduce_dose(dose: Dose, fraction: float, step_mg: float) -> NewDose | None:
    """The dose times `fraction`, rounded down to half tablets (or to `step_mg`), so that it
    never exceeds the target by more than a rounding slack (0.3333 of 3 tablets is 1 tablet),
    but at least one half tablet or step (then `target` says what was asked); None when that
    leaves it no lower."""
    step = 0.5 if dose.unit == "tablet" else step_mg
    value = max(step, math.floor(dose.value * fraction / step + _SLACK) * step)
    if value >= dose.value:
        return None
    per_dose, daily = _amount(value, dose)
    current = dose.daily()
    asked = dose.value * fraction
    above = value > asked + _SLACK * step
    missed = above or value < (1 - _MISSED) * asked
    target = dose.daily(asked, ".3g") if missed else None  # the dose asked, rounded
    return NewDose(value, per_dose, daily, current, round(100 * value / dose.value),
                   f"{per_dose} {_often(dose.per_day)}", target, above)


@dataclass(frozen=True)
class Reduction:
    """One dose reduction a finding asks of an order."""
    fraction: float
    because: str        # "TPMT intermediate metabolizer"


@dataclass(frozen=True)
class OrderPlan:
    """Every reduction the findings ask of one order, and the reduced limit in mg/day that
    dose sense found for it (with a weight)."""
    reductions: tuple[Reduction, ...]
    usual_day: float | None = None   # the lowest usual dose for the indication, mg/day
    limit_day: float | None = None   # the most every reduction together allows, mg/day


Plan = Mapping[str, OrderPlan]   # order reference -> its plan


def _fraction(suggestion: schema.Suggestion, finding: Finding) -> float:
    return suggestion.fraction or float(finding.values.get("fraction", 0))


def dose_plan(findings: list[Finding], knowledge: Knowledge) -> dict[str, OrderPlan]:
    """Every reduction the findings ask of each order. Their product is the one dose each of
    those cards suggests: accepting any of them then answers them all."""
    reductions: dict[str, dict[str, Reduction]] = {}
    limits: dict[str, tuple[float | None, float | None]] = {}
    for finding in findings:
        order = finding.target or finding.order
        if order is None:
            continue
        for suggestion in knowledge.cards.findings[finding.key].suggestions:
            fraction = _fraction(suggestion, finding) if suggestion.kind == "reduce-dose" else 0
            if fraction:
                reductions.setdefault(order.ref, {})[finding.key] = Reduction(
                    fraction, fill(suggestion.because, finding.values))
        if "limit_day" in finding.values:
            limits[order.ref] = (finding.values["usual_day"], finding.values["limit_day"])
    return {ref: OrderPlan(tuple(found.values()), *limits.get(ref, (None, None)))
            for ref, found in reductions.items()}


def _asked(plan: OrderPlan, dose: Dose) -> float:
    """The fraction of the ordered dose to suggest: the reductions' product, applied to the
    ordered dose or, when that is below it, to the lowest usual dose (a reduction is of the
    usual dose), and never above the reduced limit dose sense judges by."""
    product = math.prod(r.fraction for r in plan.reductions)
    current = dose.mg_per_day
    if plan.usual_day is None or plan.limit_day is None or not current:
        return product
    return min(max(current, plan.usual_day) * product, plan.limit_day) / current


@dataclass(frozen=True)
class Planned:
    """The reduced dose a finding's card suggests for its order (None: no lower dose of the
    product reaches the reduction)."""
    order: Order
    new: NewDose | None
    reductions: tuple[Reduction, ...]
    label: str


def _planned(spec: schema.Finding, finding: Finding, knowledge: Knowledge,
             plan: Plan) -> Planned | None:
    order = finding.target or finding.order
    suggestion = next((s for s in spec.suggestions if s.kind == "reduce-dose"), None)
    if suggestion is None or order is None or order.dose is None:
        return None
    mine = plan.get(order.ref) or OrderPlan((Reduction(_fraction(suggestion, finding), ""),))
    fraction = _asked(mine, order.dose)
    if not fraction or fraction >= 1:
        return None
    new = reduce_dose(order.dose, fraction, knowledge.drugs[order.drug].dose_step_mg)
    if new is None:
        return Planned(order, None, mine.reductions, "")
    texts = knowledge.cards.texts
    label = fill(texts["combined-label"], {"drug": knowledge.drugs[order.drug].display,
                                           **new.values()}) if len(mine.reductions) > 1 else fill(
        suggestion.label, {**finding.values, **new.values()})
    if new.target:
        label = fill(texts["above-target" if new.above else "below-target"],
                     {"label": label, "target": new.target})
    return Planned(order, new, mine.reductions, label)


def prune(value: object) -> object:
    """Drop null and empty values (CDS Hooks 2.0 JSON rules) from data copied from a client."""
    if isinstance(value, dict):
        items = ((k, prune(v)) for k, v in value.items())
        return {k: v for k, v in items if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [v for v in map(prune, value) if v not in (None, "", [], {})]
    return value


def _with_dose(resource: dict, new: NewDose) -> dict:
    """The order with the new dose, and its sig text saying the same."""
    updated = orjson.loads(orjson.dumps(resource))  # a deep copy, several times faster
    dosage = updated[dosage_field(updated)][0]
    quantity, _ = dose_quantity(dosage)
    quantity["value"] = new.value
    dosage["text"] = new.sig
    return prune(updated)


def _reduce(planned: Planned | None) -> dict | None:
    """Only a draft order is changed; a change to an active order is said in the card text."""
    if planned is None or planned.new is None or not planned.order.draft:
        return None
    order, new = planned.order, planned.new
    return {"label": planned.label, "actions": [{
        "type": "update", "description": f"Change {order.ref} to {new.sig}",
        "resource": _with_dose(order.resource, new)}]}


def _remove(suggestion: schema.Suggestion, finding: Finding, knowledge: Knowledge) -> dict | None:
    order = finding.partner if suggestion.of == "partner" else finding.order
    if order is None or not order.draft:
        return None
    drug = knowledge.drugs[order.drug].display if order.drug else "the"
    return {"label": fill(suggestion.label, {**finding.values, "removed": drug}), "actions": [{
        "type": "delete", "description": f"Remove the draft order {order.ref}",
        "resourceId": order.ref}]}


def _order_test(suggestion: schema.Suggestion, finding: Finding, knowledge: Knowledge,
                patient_id: str) -> dict:
    test = knowledge.cards.tests[suggestion.test]
    name = test.text or test.code.display
    concept = {"coding": [test.code.model_dump()], "text": name} if test.code else {"text": name}
    request = {"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
               "code": concept, "subject": {"reference": f"Patient/{patient_id}"}}
    return {"label": fill(suggestion.label, finding.values), "actions": [{
        "type": "create", "description": f"Order {name}", "resource": request}]}


def _suggestions(spec: schema.Finding, finding: Finding, knowledge: Knowledge,
                 patient_id: str, planned: Planned | None) -> list:
    built = []
    for suggestion in spec.suggestions:
        if suggestion.kind == "order-test":
            item = _order_test(suggestion, finding, knowledge, patient_id)
        elif suggestion.kind == "reduce-dose":
            item = _reduce(planned)
        else:
            item = _remove(suggestion, finding, knowledge)
        if item:
            built.append({"uuid": str(uuid.uuid4()), **item})
    return built


def render(finding: Finding, knowledge: Knowledge, patient_id: str, base_url: str = "",
           plan: Plan | None = None) -> dict:
    """`base_url`: the service's public URL, for a source that is one of its own pages (without
    it, such a source has no url, which CDS Hooks allows); `plan`: the call's dose_plan."""
    cards = knowledge.cards
    spec = cards.findings[finding.key]
    planned = _planned(spec, finding, knowledge, plan or {})
    about = _drugs_of(finding)
    family = cards.families[spec.family]
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": _summary(fill(spec.summary, finding.values)),
        "indicator": spec.indicator,
        "detail": _detail(spec, finding, knowledge, planned, about),
        "source": {"label": family.label,
                   "topic": {"system": cards.systems["topic"], "code": spec.family,
                             "display": spec.family.replace("-", " ")},
                   "extension": {VERSION_EXTENSION: knowledge.version}},
    }
    url = family.url.replace("{service}", base_url.rstrip("/"))
    labels = _for_drugs([cards.links[n] for n in family.drug_labels], about)
    if labels:  # the label of the drug the card is about
        card["source"]["label"], url = labels[0].label, labels[0].url
    if url.startswith(("http://", "https://")):
        card["source"]["url"] = url
    suggestions = _suggestions(spec, finding, knowledge, patient_id, planned)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    reasons = [{"system": cards.systems["override"], "code": code,
                "display": cards.override_reasons[code]} for code in spec.override]
    if reasons:
        card["overrideReasons"] = reasons
    links = [{"label": link.label, "url": link.url, "type": "absolute"} for link in _for_drugs(
        [cards.links[name] for name in spec.links], about)]
    if links:
        card["links"] = links
    return card

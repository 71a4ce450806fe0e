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


def fill(template: str, values: Mapping[str, object]) -> str:
    """A template filled with a finding's values; a list of values reads "A and B"."""
    return template.format_map({k: " and ".join(map(str, v)) if isinstance(v, tuple) else v
                                for k, v in values.items()})


def _summary(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 3].rstrip() + "..."


def _detail(spec: schema.Finding, finding: Finding, knowledge: Knowledge) -> str:
    parts = []
    if finding.evidence:
        lines = (fill(knowledge.cards.evidence[e.kind], e.values) for e in finding.evidence)
        parts.append("**Evidence**\n\n" + "\n".join(f"- {line}" for line in lines))
    recommendation = fill(spec.recommendation, finding.values)
    parts.append("**Recommendation**\n\n" + recommendation[:1].upper() + recommendation[1:])
    change = _active_change(spec, finding, knowledge)
    if change:
        parts.append(change)
    parts.append(f"*Strength:* {spec.strength}")
    references = [_citation(knowledge.sources[s]) for s in spec.references]
    if references:
        parts.append("**References**\n\n" + "\n".join(f"- {r}" for r in references))
    return "\n\n".join(parts)


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

    def values(self) -> dict[str, object]:
        return {"dose": self.dose, "daily": self.daily, "current": self.current,
                "percent": self.percent, "sig": self.sig}


def _often(per_day: float) -> str:
    return {1: "once daily", 2: "twice daily"}.get(per_day, f"{per_day:g} times daily")


def _amount(value: float, dose: Dose) -> tuple[str, str]:
    """(per administration, per day) for `value` in the order's unit."""
    if dose.unit == "mg":
        return f"{value:g} mg", f"{value * dose.per_day:g} mg/day"
    tablets = f"{value:g} tablet{'s' if value != 1 else ''}"
    if dose.strength_mg:
        mg = value * dose.strength_mg
        return f"{tablets} ({mg:g} mg)", f"{mg * dose.per_day:g} mg/day"
    return tablets, f"{value * dose.per_day:g} tablets/day"


_SLACK = 0.02  # of a half tablet or dose step


def reduce_dose(dose: Dose, fraction: float, step_mg: float) -> NewDose | None:
    """The dose times `fraction`, rounded down to half tablets (or to `step_mg`), so that it
    never exceeds the target by more than a rounding slack (0.3333 of 3 tablets is 1 tablet),
    but at least one half tablet or step; None when that leaves it no lower."""
    if dose.unit == "tablet":
        value = max(0.5, math.floor(dose.value * fraction * 2 + _SLACK) / 2)
    else:
        value = max(step_mg, math.floor(dose.value * fraction / step_mg + _SLACK) * step_mg)
    if value >= dose.value:
        return None
    per_dose, daily = _amount(value, dose)
    _, current = _amount(dose.value, dose)
    return NewDose(value, per_dose, daily, current, round(100 * value / dose.value),
                   f"{per_dose} {_often(dose.per_day)}")


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


def _new_dose(suggestion: schema.Suggestion, finding: Finding,
              knowledge: Knowledge) -> tuple[Order, NewDose] | None:
    order = finding.target or finding.order
    fraction = suggestion.fraction or float(finding.values.get("fraction", 0))
    if order is None or order.dose is None or not fraction:
        return None
    new = reduce_dose(order.dose, fraction, knowledge.drugs[order.drug].dose_step_mg)
    return (order, new) if new else None


def _reduce(suggestion: schema.Suggestion, finding: Finding, knowledge: Knowledge) -> dict | None:
    """Only a draft order is changed; a change to an active order is said in the card text."""
    found = _new_dose(suggestion, finding, knowledge)
    if found is None or not found[0].draft:
        return None
    order, new = found
    return {"label": fill(suggestion.label, {**finding.values, **new.values()}), "actions": [{
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


def _active_change(spec: schema.Finding, finding: Finding, knowledge: Knowledge) -> str | None:
    """The dose change a reduce-dose suggestion would make, said in words when its order is
    not a draft (the EHR applies suggestions to draft orders only)."""
    for suggestion in spec.suggestions:
        found = _new_dose(suggestion, finding, knowledge) if (
            suggestion.kind == "reduce-dose") else None
        if found and not found[0].draft:
            order, new = found
            return fill(knowledge.cards.texts["active-order-change"],
                        {**finding.values, **new.values(), "order": order.ref})
    return None


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
                 patient_id: str) -> list:
    built = []
    for suggestion in spec.suggestions:
        if suggestion.kind == "order-test":
            item = _order_test(suggestion, finding, knowledge, patient_id)
        elif suggestion.kind == "reduce-dose":
            item = _reduce(suggestion, finding, knowledge)
        else:
            item = _remove(suggestion, finding, knowledge)
        if item:
            built.append({"uuid": str(uuid.uuid4()), **item})
    return built


def render(finding: Finding, knowledge: Knowledge, patient_id: str, base_url: str = "") -> dict:
    """`base_url`: the service's public URL, for a source that is one of its own pages (without
    it, such a source has no url, which CDS Hooks allows)."""
    cards = knowledge.cards
    spec = cards.findings[finding.key]
    family = cards.families[spec.family]
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": _summary(fill(spec.summary, finding.values)),
        "indicator": spec.indicator,
        "detail": _detail(spec, finding, knowledge),
        "source": {"label": family.label,
                   "topic": {"system": cards.systems["topic"], "code": spec.family,
                             "display": spec.family.replace("-", " ")},
                   "extension": {VERSION_EXTENSION: knowledge.version}},
    }
    url = family.url.replace("{service}", base_url.rstrip("/"))
    if url.startswith(("http://", "https://")):
        card["source"]["url"] = url
    suggestions = _suggestions(spec, finding, knowledge, patient_id)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    reasons = [{"system": cards.systems["override"], "code": code,
                "display": cards.override_reasons[code]} for code in spec.override]
    if reasons:
        card["overrideReasons"] = reasons
    links = [{"label": cards.links[name].label, "url": cards.links[name].url,
              "type": "absolute"} for name in spec.links]
    if links:
        card["links"] = links
    return card

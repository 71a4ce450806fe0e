"""Findings to CDS Hooks 2.0 cards: text, links and override reasons from cards/rules.yaml filled
with the finding's values; suggestions built as real FHIR resources. No null or empty values are
ever emitted."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import orjson

from .facts.orders import Dose, dose_quantity
from .findings import Finding
from .knowledge import Knowledge, schema

SUMMARY_LIMIT = 139  # the spec: "<140 characters"
VERSION_EXTENSION = "azathioprine-cds.knowledge-version"
RENDERED = frozenset({"dose"})  # values the renderer adds (a reduce-dose suggestion's new dose)


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
    parts.append("**Recommendation**\n\n" + fill(spec.recommendation, finding.values))
    parts.append(f"*Strength:* {spec.strength}")
    references = [_citation(knowledge.sources[s]) for s in spec.references]
    if references:
        parts.append("**References**\n\n" + "\n".join(f"- {r}" for r in references))
    return "\n\n".join(parts)


def _citation(source: schema.Source) -> str:
    return f"{source.citation} <{source.url}>" if source.url else source.citation


def _new_dose(dose: Dose, fraction: float, step_mg: float) -> tuple[float, str] | None:
    """The reduced dose in the order's own unit, rounded to what the tablets allow."""
    if dose.unit == "tablet":
        tablets = max(0.5, round(dose.value * fraction * 2) / 2)
        if tablets >= dose.value:
            return None
        mg = f" ({tablets * dose.strength_mg:g} mg)" if dose.strength_mg else ""
        return tablets, f"{tablets:g} tablet{'s' if tablets != 1 else ''}{mg}"
    mg = max(step_mg, round(dose.value * fraction / step_mg) * step_mg)
    return (mg, f"{mg:g} mg") if mg < dose.value else None


def prune(value: object) -> object:
    """Drop null and empty values (CDS Hooks 2.0 JSON rules) from data copied from a client."""
    if isinstance(value, dict):
        items = ((k, prune(v)) for k, v in value.items())
        return {k: v for k, v in items if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [v for v in map(prune, value) if v not in (None, "", [], {})]
    return value


def _with_dose(resource: dict, value: float) -> dict:
    updated = orjson.loads(orjson.dumps(resource))  # a deep copy, several times faster
    quantity, _ = dose_quantity(updated["dosageInstruction"][0])
    quantity["value"] = value
    return prune(updated)


def _reduce(suggestion: schema.Suggestion, finding: Finding, knowledge: Knowledge) -> dict | None:
    order = finding.target or finding.order
    if order is None or order.dose is None:
        return None
    fraction = suggestion.fraction or float(finding.values.get("fraction", 0))
    if not fraction:
        return None
    new = _new_dose(order.dose, fraction, knowledge.drugs[order.drug].dose_step_mg)
    if new is None:
        return None
    value, text = new
    return {"label": fill(suggestion.label, {**finding.values, "dose": text}), "actions": [{
        "type": "update", "description": f"Change the dose of {order.ref} to {text}",
        "resource": _with_dose(order.resource, value)}]}


def _remove(suggestion: schema.Suggestion, finding: Finding, _: Knowledge) -> dict | None:
    order = finding.order
    if order is None or not order.draft:
        return None
    return {"label": fill(suggestion.label, finding.values), "actions": [{
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


def render(finding: Finding, knowledge: Knowledge, patient_id: str) -> dict:
    cards = knowledge.cards
    spec = cards.findings[finding.key]
    family = cards.families[spec.family]
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": _summary(fill(spec.summary, finding.values)),
        "indicator": spec.indicator,
        "detail": _detail(spec, finding, knowledge),
        "source": {"label": family.label, "url": family.url,
                   "topic": {"system": cards.systems["topic"], "code": spec.family,
                             "display": spec.family.replace("-", " ")},
                   "extension": {VERSION_EXTENSION: knowledge.version}},
    }
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

"""Findings to CDS Hooks 2.0 cards: text, links and override reasons from cards/rules.yaml,
suggestions built as real FHIR R4 resources. No null or empty values are ever emitted."""

from __future__ import annotations

import uuid

import orjson

from .knowledge import Knowledge
from .medications import Dose, dose_quantity
from .rules import Finding

SUMMARY_LIMIT = 139  # the spec: "<140 characters"


class _Params(dict):
    def __missing__(self, key: str) -> str:  # a template may name a value a finding lacks
        return key


def _fill(template: str, params: dict) -> str:
    return template.format_map(_Params(params))


def _summary(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 3].rstrip() + "..."


def _detail(spec: dict, finding: Finding, knowledge: Knowledge) -> str:
    parts = []
    if finding.evidence:
        parts.append("**Evidence**\n\n" + "\n".join(f"- {e}" for e in finding.evidence))
    parts.append("**Recommendation**\n\n" + _fill(spec["recommendation"], finding.params))
    parts.append(f"*Strength:* {spec['strength']}")
    references = [knowledge.sources[s]["citation"] for s in spec.get("references", [])]
    if references:
        parts.append("**References**\n\n" + "\n".join(f"- {r}" for r in references))
    return "\n\n".join(parts)


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
    quantity = dose_quantity(updated["dosageInstruction"][0])
    quantity["value"] = value
    return prune(updated)


def _reduce(suggestion: dict, finding: Finding, knowledge: Knowledge) -> dict | None:
    order = finding.target or finding.order
    if order is None or order.dose is None:
        return None
    fraction = suggestion.get("fraction") or float(finding.params.get("fraction", 0))
    if not fraction:
        return None
    new = _new_dose(order.dose, fraction, knowledge.drugs[order.drug].dose_step_mg)
    if new is None:
        return None
    value, text = new
    label = _fill(suggestion["label"], {**finding.params, "dose": text})
    return {"label": label, "actions": [{
        "type": "update", "description": f"Change the dose of {order.ref} to {text}",
        "resource": _with_dose(order.resource, value)}]}


def _remove(suggestion: dict, finding: Finding, _: Knowledge) -> dict | None:
    order = finding.order
    if order is None or not order.draft:
        return None
    return {"label": _fill(suggestion["label"], finding.params), "actions": [{
        "type": "delete", "description": f"Remove the draft order {order.ref}",
        "resourceId": order.ref}]}


def _order_test(suggestion: dict, finding: Finding, knowledge: Knowledge,
                patient_id: str) -> dict:
    code = knowledge.rules["tests"][suggestion["test"]]["code"]
    request = {"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
               "code": {"coding": [dict(code)], "text": code["display"]},
               "subject": {"reference": f"Patient/{patient_id}"}}
    return {"label": _fill(suggestion["label"], finding.params), "actions": [{
        "type": "create", "description": f"Order {code['display']}", "resource": request}]}


def _suggestions(spec: dict, finding: Finding, knowledge: Knowledge, patient_id: str) -> list:
    built = []
    for suggestion in spec.get("suggestions", []):
        kind = suggestion["kind"]
        if kind == "order-test":
            item = _order_test(suggestion, finding, knowledge, patient_id)
        else:
            item = (_reduce if kind == "reduce-dose" else _remove)(suggestion, finding, knowledge)
        if item:
            built.append({"uuid": str(uuid.uuid4()), **item})
    return built


def render(finding: Finding, knowledge: Knowledge, patient_id: str) -> dict:
    rules = knowledge.rules
    spec = rules["findings"][finding.key]
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": _summary(_fill(spec["summary"], finding.params)),
        "indicator": spec["indicator"],
        "detail": _detail(spec, finding, knowledge),
        "source": {"label": rules["source"]["label"], "url": rules["source"]["url"],
                   "topic": {"system": rules["systems"]["topic"], "code": spec["family"],
                             "display": spec["family"].replace("-", " ")}},
    }
    suggestions = _suggestions(spec, finding, knowledge, patient_id)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    reasons = [{"system": rules["systems"]["override"], "code": code,
                "display": rules["override_reasons"][code]} for code in spec.get("override", [])]
    if reasons:
        card["overrideReasons"] = reasons
    links = [{"label": rules["links"][name]["label"], "url": rules["links"][name]["url"],
              "type": "absolute"} for name in spec.get("links", [])]
    if links:
        card["links"] = links
    return card


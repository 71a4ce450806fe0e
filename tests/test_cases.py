"""The clinical cases in tests/cases/*.yaml: a patch over the baseline patient, and the exact
findings it must give, each with its indicator, values and suggestions (tests/cases/README.md).

A case runs the whole pipeline (protocol, prefetch, facts, rules, cards) without HTTP; prefetch
keys a case leaves out are served by a mocked FHIR server from its `serve`, and any other call
fails as unreachable.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import responses
import yaml

from cds_service import engine
from cds_service.config import Settings
from cds_service.fhir_client import FhirClient
from cds_service.protocol import parse_request

from .factories import FHIR_SERVER, NOW, PATIENT, Scenario, apply, searchset

# What every created test order must be, whatever the case (a draft order for this patient).
TEST_ORDER = {"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
              "subject": {"reference": f"Patient/{PATIENT}"}}

CASES_DIR = Path(__file__).parent / "cases"
CASES = [pytest.param(case, id=f"{path.stem}: {case['name']}", marks=[
             pytest.mark.xfail(reason=case["xfail"], strict=True)] if "xfail" in case else [])
         for path in sorted(CASES_DIR.glob("*.yaml"))
         for case in yaml.safe_load(path.read_text(encoding="utf-8"))]


def summarise(suggestion: dict) -> dict:
    """A suggestion as the values a case states: its action, order, new dose or test code."""
    action = suggestion["actions"][0]
    out: dict = {"label": suggestion["label"], "action": action["type"]}
    resource = action.get("resource") or {}
    if action["type"] == "delete":
        out["order"] = action["resourceId"]
    elif action["type"] == "update":
        out["order"] = f"{resource['resourceType']}/{resource['id']}"
        dosage = resource["dosageInstruction"][0]
        quantity = (dosage.get("doseAndRate") or [{}])[0].get("doseQuantity") or dosage.get(
            "doseQuantity")
        out["dose"] = quantity["value"]
        out["sig"] = dosage.get("text")
    else:
        concept = resource["code"]
        out["code"] = concept["coding"][0]["code"] if "coding" in concept else concept["text"]
    return out


def _same(expected: object, actual: object) -> bool:
    if isinstance(expected, float | int) and isinstance(actual, float | int):
        return math.isclose(expected, actual, rel_tol=1e-3)
    if isinstance(expected, list) and isinstance(actual, list | tuple):
        return len(expected) == len(actual) and all(map(_same, expected, actual))
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        return all(k in actual and _same(v, actual[k]) for k, v in expected.items())
    return expected == actual


def _malformed(suggestion: dict) -> list[str]:
    """What makes a suggestion's action unusable by the EHR, whatever the case states."""
    problems = []
    for action in suggestion["actions"]:
        if not action.get("description"):
            problems.append(f"action without a description: {action}")
        resource = action.get("resource") or {}
        if action["type"] == "create" and not (
                _same(TEST_ORDER, resource) and resource["code"].get("text")):
            problems.append(f"not a draft test order for the patient: {resource}")
    return problems


def _has_evidence(expected: dict, finding) -> bool:
    return any(e.kind == expected["kind"] and _same(expected.get("values", {}), e.values)
               for e in finding.evidence)


def _check(expected: dict, finding, card: dict) -> list[str]:
    problems = [p for s in card.get("suggestions", []) for p in _malformed(s)]
    if card["indicator"] != expected["indicator"]:
        problems.append(f"indicator {card['indicator']}, expected {expected['indicator']}")
    for name, value in expected.get("values", {}).items():
        if not _same(value, finding.values.get(name)):
            problems.append(f"value {name}={finding.values.get(name)!r}, expected {value!r}")
    if "order" in expected and (finding.order is None or finding.order.ref != expected["order"]):
        problems.append(f"order {finding.order and finding.order.ref}, expected "
                        f"{expected['order']}")
    got = [summarise(s) for s in card.get("suggestions", [])]
    want = expected.get("suggestions", [])
    if len(got) != len(want) or not all(map(_same, want, got)):
        problems.append(f"suggestions {got}, expected {want}")
    if "source" in expected and card["source"]["label"] != expected["source"]:
        problems.append(f"source {card['source']['label']!r}, expected {expected['source']!r}")
    links = [link["label"] for link in card.get("links", [])]
    if "links" in expected and links != expected["links"]:
        problems.append(f"links {links}, expected {expected['links']}")
    for text in expected.get("absent", []):
        if text in card["summary"] + card.get("detail", ""):
            problems.append(f"the card says {text!r}, which it must not")
    problems += [f"no evidence {e}: {finding.evidence}" for e in expected.get("evidence", [])
                 if not _has_evidence(e, finding)]
    for field in ("summary", "detail"):
        for text in expected.get(field, []):
            if text not in card.get(field, ""):
                problems.append(f"{field} lacks {text!r}: {card.get(field)!r}")
    return problems


def _serve(mock: responses.RequestsMock, keys: list[str] | str, scenario: Scenario,
           knowledge) -> None:
    """The FHIR server answers each of `keys` (`all`: every key of the service) with the
    scenario's data for it: a searchset, or the resource itself for a read (the Patient)."""
    client = FhirClient(FHIR_SERVER, None, Settings(), 0)
    if keys == "all":
        keys = knowledge.services[scenario.service].prefetch
    for key in keys:
        query = knowledge.prefetch[key].replace("{{context.patientId}}", PATIENT)
        data = scenario.resources(key)
        mock.add(responses.GET, client.url_for(query),
                 json=data if isinstance(data, dict) else searchset(data))


def evaluate(case: dict, knowledge) -> tuple[list, list[dict]]:
    scenario = apply(Scenario(knowledge), case.get("given", {}))
    body = scenario.body(knowledge)
    request = parse_request(body, knowledge.services[scenario.service], 20_000)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        _serve(mock, case.get("serve", []), scenario, knowledge)
        result = engine.evaluate(request, knowledge, Settings(), NOW)
    return result.findings, result.cards


INTERNAL = re.compile(r"\bseed\b|\[[VCU]\]|clinical-knowledge\.md|design choice", re.I)


@pytest.mark.parametrize("case", CASES)
def test_case(case: dict, knowledge) -> None:
    findings, cards = evaluate(case, knowledge)
    for card in cards:  # cards cite what a clinician can look up, never internal provenance
        assert not INTERNAL.search(json.dumps(card)), card
    unmatched = list(zip(findings, cards, strict=True))
    problems = []
    for expected in case["expect"]:
        candidates = [(f, c) for f, c in unmatched if f.key == expected["finding"]]
        if not candidates:
            problems.append(f"missing finding {expected['finding']}")
            continue
        best = min(candidates, key=lambda fc: len(_check(expected, *fc)))
        problems += [f"{expected['finding']}: {p}" for p in _check(expected, *best)]
        unmatched.remove(best)
    problems += [f"unexpected finding {f.key}: {c['summary']}" for f, c in unmatched]
    assert not problems, "\n".join(problems)

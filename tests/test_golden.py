"""Golden end-to-end files: real sandbox captures (fixtures/sandbox/<name>.json) through the
Flask test client, answered exactly as fixtures/sandbox/<name>.expected.json says.

The responses are normalised first: card and suggestion uuids become "<uuid>" and the knowledge
version's content hash "<content-hash>" (any byte of cards/ changes it; the cards it renders are
what is compared). After a deliberate change, rewrite the expected files with
`UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py` and review their diff.
The FHIR server is mocked with nothing: a request the service makes anyway fails, and its
data-unavailable card shows in the comparison.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import responses

from .factories import SERVICES

SANDBOX = Path(__file__).resolve().parent.parent / "fixtures" / "sandbox"
NAMES = sorted(p.name.removesuffix(".json") for p in SANDBOX.glob("*.json")
               if not p.name.endswith(".expected.json"))
VERSION_KEY = "azathioprine-cds.knowledge-version"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def sandbox_request(name: str) -> tuple[str, dict]:
    """(service path, request body) of a sandbox capture."""
    body = json.loads((SANDBOX / f"{name}.json").read_text(encoding="utf-8"))
    return f"/cds-services/{SERVICES[body['hook']]}", body


def normalise(value: object, key: str | None = None) -> object:
    if isinstance(value, dict):
        return {k: normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str) and key == VERSION_KEY:
        return re.sub(r"\+[0-9a-f]+$", "+<content-hash>", value)
    if isinstance(value, str) and _UUID.fullmatch(value):
        return "<uuid>"
    return value


def test_the_six_captures_are_all_here():
    assert len(NAMES) == 6, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_a_sandbox_capture_gives_exactly_the_golden_answer(name, client):
    path, body = sandbox_request(name)
    with responses.RequestsMock(assert_all_requests_are_fired=False):
        response = client.post(path, json=body)
    assert response.status_code == 200, response.get_json()
    got = normalise(response.get_json())
    golden = SANDBOX / f"{name}.expected.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert golden.exists(), f"no {golden.name}: run with UPDATE_GOLDEN=1 to write it"
    assert got == json.loads(golden.read_text(encoding="utf-8"))

"""Every fixture request through the Flask test client, end to end: the exact cards expected.

The FHIR server is mocked with `responses`: fixtures that leave prefetch keys out get the
resources under fixtures/fhir-server/<name>/, and any other outbound call fails the fixture
(an unexpected fetch would add a data-unavailable card).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import responses
import yaml

from cds_service.fhir_client import FhirClient

from .conftest import FIXTURES, load_request

EXPECTATIONS = yaml.safe_load((FIXTURES / "expectations.yaml").read_text())


def _mock_server(mock: responses.RequestsMock, name: str, body: dict, app) -> None:
    service = app.config["KNOWLEDGE"].services[EXPECTATIONS[name]["service"]]
    client = FhirClient(body["fhirServer"], None, app.config["SETTINGS"], 0)
    for path in sorted((FIXTURES / "fhir-server" / name).glob("*.json")):
        query = app.config["KNOWLEDGE"].prefetch[path.stem].replace(
            "{{context.patientId}}", body["context"]["patientId"])
        mock.add(responses.GET, client.url_for(query), json=json.loads(path.read_text()))


@pytest.mark.parametrize("name", sorted(EXPECTATIONS))
def test_fixture_gives_exactly_the_expected_cards(name, client, app):
    expected = EXPECTATIONS[name]
    body = load_request(name)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        if expected.get("fetch") is True:
            _mock_server(mock, name, body, app)
        response = client.post(f"/cds-services/{expected['service']}", json=body)
    assert response.status_code == 200, response.get_json()
    cards = response.get_json()["cards"]
    got = Counter((c["source"]["topic"]["code"], c["indicator"]) for c in cards)
    want = Counter((c["topic"], c["indicator"]) for c in expected["cards"])
    assert got == want, [c["summary"] for c in cards]

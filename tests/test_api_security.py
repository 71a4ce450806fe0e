"""Client authentication and logging at the HTTP edge, as a deployed app sees them."""

from __future__ import annotations

import json
import logging
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

ISS = "https://ehr.example.org"
SERVICE = "/cds-services/thiopurine-order-select"
PUBLIC = "https://cds.example.org"
POOR = {"pgx": {"TPMT": {"phenotype": "poor"}}}   # one critical thiopurine-pgx card


@pytest.fixture(scope="module")
def key():
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def secured(make_app, key):
    jwk = {**jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1",
           "alg": "ES384"}
    clients = json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [jwk]}}]})
    app = make_app(auth_mode="required", trusted_clients_json=clients, public_base_url=PUBLIC)
    return app.test_client()


def token(key, aud: str, **extra) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()),
              **extra}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


def test_every_call_needs_a_jwt_when_required(secured):
    for method, path in (("get", "/cds-services"), ("post", SERVICE),
                         ("post", SERVICE + "/feedback")):
        response = getattr(secured, method)(path, json={})
        assert response.status_code == 401
        assert response.get_json()["resourceType"] == "OperationOutcome"
        assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_the_audience_is_the_public_url_of_the_endpoint_called(secured, key):
    good = {"Authorization": f"Bearer {token(key, PUBLIC + '/cds-services')}"}
    assert secured.get("/cds-services", headers=good).status_code == 200
    internal = {"Authorization": f"Bearer {token(key, 'http://localhost/cds-services')}"}
    assert secured.get("/cds-services", headers=internal).status_code == 401
    other = {"Authorization": f"Bearer {token(key, PUBLIC + SERVICE)}"}
    assert secured.get("/cds-services", headers=other).status_code == 401


def test_a_replayed_jwt_is_refused(secured, key):
    headers = {"Authorization": f"Bearer {token(key, PUBLIC + '/cds-services')}"}
    assert secured.get("/cds-services", headers=headers).status_code == 200
    assert secured.get("/cds-services", headers=headers).status_code == 401


def test_a_valid_jwt_reaches_the_service(secured, key, order_select):
    headers = {"Authorization": f"Bearer {token(key, PUBLIC + SERVICE)}"}
    response = secured.post(SERVICE, json=order_select(POOR), headers=headers)
    assert response.status_code == 200
    assert response.get_json()["cards"][0]["indicator"] == "critical"


def test_the_401_body_is_generic(secured, key):
    bad = token(key, PUBLIC + "/cds-services", iss="https://evil.example")
    response = secured.get("/cds-services", headers={"Authorization": f"Bearer {bad}"})
    assert response.status_code == 401
    assert "evil" not in response.get_data(as_text=True)


def test_logs_are_json_and_never_carry_tokens(client, caplog, order_select):
    body = order_select(POOR)
    body["prefetch"]["patient"]["name"] = [{"family": "Okafor", "given": ["Adaeze"]}]
    body["fhirAuthorization"] = {"access_token": "SECRET-ACCESS-TOKEN", "token_type": "Bearer",
                                 "expires_in": 300, "scope": "user/*.read", "subject": "cds"}
    with caplog.at_level(logging.INFO):
        client.post(SERVICE, json=body, headers={"Authorization": "Bearer SECRET.JWT.VALUE"})
    text = caplog.text
    assert "SECRET" not in text and "Okafor" not in text  # no tokens, no raw bodies
    record = next(json.loads(r.getMessage()) for r in caplog.records
                  if r.name == "cds_service.access")
    assert record["hook_instance"] == body["hookInstance"]
    assert record["service"] == "thiopurine-order-select"
    assert record["status"] == 200 and record["rules"] == ["thiopurine-pgx"]
    assert record["duration_ms"] >= 0


def test_a_refused_call_says_why_in_the_access_log(client, caplog, order_select):
    """The CDS Hooks sandbox shows a refused call as 'All clear': the integrator's one clue is
    the log, so the 400's reason is there (a wrong hook, as a sandbox link without &hook= sends)."""
    body = order_select(POOR)
    body["hook"] = "patient-view"
    with caplog.at_level(logging.INFO):
        assert client.post(SERVICE, json=body).status_code == 400
    record = next(json.loads(r.getMessage()) for r in caplog.records
                  if r.name == "cds_service.access")
    assert record["status"] == 400
    assert record["error"] == ("hook: service 'thiopurine-order-select' serves 'order-select',"
                               " not 'patient-view'")


def test_required_auth_without_a_public_base_url_refuses_to_start(make_app):
    with pytest.raises(ValueError, match="CDS_PUBLIC_BASE_URL"):
        make_app(auth_mode="required", trust_sandbox=True)


def test_a_spoofed_host_never_becomes_the_audience(secured, key, order_select):
    """A token minted for another service, sent with Host and X-Forwarded-* naming it."""
    spoofed = {"Host": "other-service.example", "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "other-service.example",
               "Authorization": f"Bearer {token(key, 'https://other-service.example' + SERVICE)}"}
    response = secured.post(SERVICE, json=order_select(POOR), headers=spoofed)
    assert response.status_code == 401


def test_a_huge_hook_instance_is_refused_and_never_logged(client, caplog, order_select):
    body = order_select(POOR)
    body["hookInstance"] = "x" * 1_000_000
    with caplog.at_level(logging.INFO):
        response = client.post(SERVICE, json=body)
    assert response.status_code == 400
    assert "hookInstance" in response.get_json()["issue"][0]["diagnostics"]
    assert max(len(r.getMessage()) for r in caplog.records) < 1000


def test_a_draft_nested_too_deep_is_refused_not_a_crash(client, order_select):
    """A legal `extension` nested 126 deep on the draft: a clear 400, never RecursionError."""
    body = order_select(POOR)
    extension = {"url": "http://example.org/x", "valueString": "deep"}
    for _ in range(126):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    body["context"]["draftOrders"]["entry"][0]["resource"]["extension"] = [extension]
    response = client.post(SERVICE, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert "nested deeper than 64" in response.get_json()["issue"][0]["diagnostics"]

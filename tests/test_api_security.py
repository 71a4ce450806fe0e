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

"""Two `serve` instances (real processes, two workers each, loopback ports) on one PostgreSQL
store, as behind a load balancer: a JWT replayed on the other instance is refused, a card shown
at order-select on one is not repeated at order-sign on the other, feedback through both is in
one report, and a bounded load with feedback through both loses nothing."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from cds_service.knowledge import load_knowledge
from cds_service.store import Store

from .conftest import (
    BOTH_NORMAL,
    PLATELETS_149,
    PSEUDONYM_KEY,
    TPMT_INTERMEDIATE,
    TPMT_POOR,
    hook_call,
)
from .service import Service, cli

ISS = "https://ehr.example.org"
PUBLIC = "https://cds.example.org"  # both instances' public URL: the JWT aud
SELECT, SIGN = "/cds-services/thiopurine-order-select", "/cds-services/thiopurine-order-sign"
LOAD_REQUESTS, LOAD_CLIENTS, LOAD_SECONDS = 400, 8, 60  # bounded in count and in time
_KEY = ec.generate_private_key(ec.SECP384R1())
KNOWLEDGE = load_knowledge()


def _body(given: dict) -> dict:
    """The order-select request of the baseline patient changed as `given` says."""
    return hook_call(KNOWLEDGE, given)[1]


def headers(path: str, jti: str | None = None) -> dict:
    now = int(time.time())
    claims = {"iss": ISS, "aud": PUBLIC + path, "iat": now, "exp": now + 300,
              "jti": jti or str(uuid.uuid4())}
    signed = jwt.encode(claims, _KEY, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})
    return {"Authorization": f"Bearer {signed}"}


def feedback(card: str, outcome: str = "overridden") -> dict:
    item = {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-11-23T12:05:00Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "s1"}]
    else:
        item["overrideReason"] = {"reason": {"code": "dose-already-reduced",
                                             "system": "urn:azathioprine-cds:override-reason"}}
    return {"feedback": [item]}


def post(url: str, path: str, body: dict) -> requests.Response:
    return requests.post(url + path, json=body, headers=headers(path), timeout=15)


@pytest.fixture
def instances(postgres_url, tmp_path):
    jwk = {**jwt.algorithms.ECAlgorithm.to_jwk(_KEY.public_key(), as_dict=True), "kid": "k1",
           "alg": "ES384"}
    env = {"CDS_DATABASE_URL": postgres_url, "CDS_PSEUDONYM_KEY": PSEUDONYM_KEY,
           "CDS_AUTH_MODE": "required", "CDS_PUBLIC_BASE_URL": PUBLIC,
           "CDS_SUPPRESS_REPEATS": "1",  # off by default; on here to show it spans instances
           "CDS_TRUSTED_CLIENTS_JSON": json.dumps({"clients": [{"iss": ISS,
                                                                "jwks": {"keys": [jwk]}}]})}
    with Service(env, tmp_path, workers=2) as first, Service(env, tmp_path, workers=2) as second:
        yield first, second
    for service in (first, second):  # nothing went wrong inside either instance
        assert not [line for line in service.lines() if '"exception"' in line]


def test_a_jwt_replayed_on_the_other_instance_is_refused(instances):
    first, second = instances
    replayed = headers("/cds-services")
    assert requests.get(first.url + "/cds-services", headers=replayed, timeout=5).ok
    assert requests.get(second.url + "/cds-services", headers=replayed,
                        timeout=5).status_code == 401


def test_a_card_shown_on_one_instance_is_not_repeated_on_the_other(instances):
    first, second = instances
    body = _body(PLATELETS_149)
    assert post(first.url, SELECT, body).json()["cards"]
    signed = {**body, "hook": "order-sign", "hookInstance": body["hookInstance"] + "-sign",
              "context": {k: v for k, v in body["context"].items() if k != "selections"}}
    assert post(second.url, SIGN, signed).json() == {"cards": []}


def test_feedback_from_both_instances_is_in_one_report(instances, postgres_url, tmp_path):
    first, second = instances
    on_first = post(first.url, SELECT, _body(TPMT_POOR)).json()
    on_second = post(second.url, SELECT, _body(TPMT_INTERMEDIATE)
                     ).json()
    pgx = [c for c in on_first["cards"] + on_second["cards"]
           if c["source"]["topic"]["code"] == "thiopurine-pgx"]
    assert len(pgx) == 2
    # Each card's feedback through the other instance: the one store joins them.
    assert post(second.url, SELECT + "/feedback", feedback(pgx[0]["uuid"])).ok
    assert post(first.url, SELECT + "/feedback", feedback(pgx[1]["uuid"], "accepted")).ok
    result = cli("report", "--db", postgres_url, env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines()
                if line.startswith("thiopurine-pgx "))
    assert line.split()[1:] == ["2", "0", "1", "1", "0", "50.0%", "2", "50.0%"]
    assert "Dose already reduced accordingly [dose-already-reduced] 1" in result.stdout


def test_a_load_with_feedback_through_both_loses_nothing(instances, postgres_url):
    first, second = instances
    calls = [_body(given) for given in (TPMT_POOR, {"counts": {"platelets": 49}}, BOTH_NORMAL)]
    acked: list[str] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    until = time.monotonic() + LOAD_SECONDS

    def one(n: int) -> None:
        if time.monotonic() > until:
            return
        here, there = (first, second)[n % 2].url, (second, first)[n % 2].url
        if n % 3:  # two of three calls are feedback, each item sent again to the other instance
            card = str(uuid.uuid4())  # (a client's retry after a lost answer)
            body = feedback(card, ("accepted", "overridden")[n % 2])
            status = max(post(url, SELECT + "/feedback", body).status_code
                         for url in (here, there))
        else:
            card, status = None, post(here, SELECT, calls[n % len(calls)]).status_code
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if card and status == 200:
                acked.append(card)

    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        list(pool.map(one, range(LOAD_REQUESTS)))
    assert statuses == {200: LOAD_REQUESTS}
    store = Store(postgres_url, PSEUDONYM_KEY.encode(), migrate=False)
    try:
        stored = [row["card"] for row in store.feedback()]
    finally:
        store.close()
    assert sorted(stored) == sorted(acked)  # every acknowledged item, each once
    assert len(acked) == LOAD_REQUESTS - len(range(0, LOAD_REQUESTS, 3))

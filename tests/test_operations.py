"""Liveness, readiness and metrics in the app; an unavailable store with authentication on
(readiness says so, the replay check fails closed, the log says why once)."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from contextlib import closing

import pytest
import responses
from prometheus_client.parser import text_string_to_metric_families

from cds_service.knowledge import load_knowledge

from . import test_api_security as security
from .conftest import COUNTS_FETCHED, PLATELETS_149, TPMT_POOR, hook_call
from .test_api_security import PUBLIC, SERVICE, token

key, secured = security.key, security.secured  # the fixtures: an app that requires a client JWT

FEEDBACK = {"feedback": [{"card": "c-ops", "outcome": "accepted",
                          "acceptedSuggestions": [{"id": "s1"}],
                          "outcomeTimestamp": "2026-11-23T12:05:00Z"}]}
KNOWLEDGE = load_knowledge()


def _body(given: dict) -> dict:
    """The order-select request of the baseline patient changed as `given` says."""
    return hook_call(KNOWLEDGE, given)[1]


def metric(client, name: str, **labels: str) -> float:
    """The value of one sample of GET /metrics (0 when absent)."""
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def bearer(key, path: str) -> dict:
    return {"Authorization": f"Bearer {token(key, PUBLIC + path)}"}


def break_store(app) -> None:
    """A real fault of the database: the replay cache's table is gone."""
    with closing(sqlite3.connect(app.config["SETTINGS"].db_path)) as connection:
        connection.execute("ALTER TABLE replay RENAME TO replay_away")


def repair_store(app) -> None:
    with closing(sqlite3.connect(app.config["SETTINGS"].db_path)) as connection:
        connection.execute("ALTER TABLE replay_away RENAME TO replay")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_the_operations_endpoints_need_no_client_jwt(secured, path):
    assert secured.get(path).status_code == 200


def test_readiness_checks_knowledge_store_and_replay_cache(secured, client, app):
    checks = secured.get("/readyz").get_json()["checks"]
    assert checks["knowledge"] == f"ok ({app.config['KNOWLEDGE'].version})"
    assert checks["store"] == "ok" and checks["replay_cache"] == "ok"
    assert client.get("/readyz").get_json()["checks"]["replay_cache"].startswith("not used")


def test_an_unavailable_store_with_auth_on(secured, key, caplog):
    app = secured.application
    break_store(app)
    with caplog.at_level(logging.INFO):
        ready = secured.get("/readyz")
        answers = [secured.post(SERVICE, json=_body(TPMT_POOR),
                                headers=bearer(key, SERVICE)) for _ in range(3)]
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["store"].startswith("failed")
    assert ready.get_json()["checks"]["replay_cache"].startswith("failed")
    # The replay check fails closed: a token whose jti cannot be recorded is not accepted.
    for answer in answers:
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
        assert answer.get_json()["resourceType"] == "OperationOutcome"
    store_lines = [r for r in caplog.records if "store-unavailable" in r.getMessage()]
    assert len(store_lines) == 1 and store_lines[0].exc_info is None  # once, no traceback
    assert "replay" in json.loads(store_lines[0].getMessage())["reason"]
    assert not any(r.exc_info for r in caplog.records)
    repair_store(app)
    assert secured.get("/readyz").status_code == 200
    assert secured.post(SERVICE, json=_body(TPMT_POOR),
                        headers=bearer(key, SERVICE)).status_code == 200


def test_an_unavailable_store_with_auth_off_still_gives_the_cards(app, client, caplog):
    with closing(sqlite3.connect(app.config["SETTINGS"].db_path)) as connection:
        connection.execute("ALTER TABLE cards RENAME TO cards_away")
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            cards = client.post(SERVICE, json=_body(TPMT_POOR)
                                ).get_json()["cards"]
            assert "critical" in {c["indicator"] for c in cards}
    assert sum("store-unavailable" in r.getMessage() for r in caplog.records) == 1
    assert not any(r.exc_info for r in caplog.records)


def test_probes_stay_out_of_the_access_log_unless_they_fail(secured, caplog):
    def access() -> list[dict]:
        return [json.loads(r.getMessage()) for r in caplog.records
                if r.name == "cds_service.access"]

    with caplog.at_level(logging.INFO):
        for path in ("/healthz", "/readyz", "/metrics"):
            secured.get(path)
        assert access() == []
        break_store(secured.application)
        secured.get("/readyz")
    assert [(r["path"], r["status"]) for r in access()] == [("/readyz", 503)]


def test_metrics_count_requests_cards_suppressions_and_feedback(make_app):
    client = make_app(suppress_repeats=True).test_client()
    labels = {"endpoint": "cds.call_service", "service": "thiopurine-order-select",
              "status": "200"}
    before = {
        "requests": metric(client, "cds_requests_total", **labels),
        "latency": metric(client, "cds_request_duration_seconds_count",
                          endpoint="cds.call_service", service="thiopurine-order-select"),
        "cards": metric(client, "cds_cards_total", rule="cytopenia", indicator="warning"),
        "suppressed": metric(client, "cds_cards_suppressed_total", rule="cytopenia"),
        "stored": metric(client, "cds_feedback_items_total", outcome="accepted",
                         result="stored"),
        "duplicate": metric(client, "cds_feedback_items_total", outcome="accepted",
                            result="duplicate"),
    }
    body = _body(PLATELETS_149)
    client.post(SERVICE, json=body)
    signed = {**body, "hook": "order-sign", "hookInstance": body["hookInstance"] + "-sign",
              "context": {k: v for k, v in body["context"].items() if k != "selections"}}
    assert client.post("/cds-services/thiopurine-order-sign", json=signed).get_json() == {
        "cards": []}
    for _ in range(2):  # a client's retry
        assert client.post(SERVICE + "/feedback", json=FEEDBACK).status_code == 200
    assert len(client.application.config["STORE"].feedback("c-ops")) == 1
    assert metric(client, "cds_requests_total", **labels) == before["requests"] + 1
    assert metric(client, "cds_request_duration_seconds_count", endpoint="cds.call_service",
                  service="thiopurine-order-select") == before["latency"] + 1
    assert metric(client, "cds_cards_total", rule="cytopenia", indicator="warning") == \
        before["cards"] + 1
    assert metric(client, "cds_cards_suppressed_total", rule="cytopenia") == \
        before["suppressed"] + 1
    assert metric(client, "cds_feedback_items_total", outcome="accepted", result="stored") == \
        before["stored"] + 1
    assert metric(client, "cds_feedback_items_total", outcome="accepted",
                  result="duplicate") == before["duplicate"] + 1


@responses.activate
def test_metrics_count_fhir_fetch_failures_by_reason(client):
    body = _body(COUNTS_FETCHED)
    responses.get(url=re.compile(r".*"), status=503)
    before = metric(client, "cds_fhir_fetch_failures_total", reason="http-5xx")
    cards = client.post(SERVICE, json=body).get_json()["cards"]
    assert "data-unavailable" in {c["source"]["topic"]["code"] for c in cards}
    assert metric(client, "cds_fhir_fetch_failures_total", reason="http-5xx") > before


def test_a_metric_that_cannot_be_recorded_costs_no_answer(client, monkeypatch, caplog):
    from cds_service import metrics

    def full_disk():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics, "_metrics", full_disk)
    monkeypatch.setattr(metrics, "_failed", False)
    with caplog.at_level(logging.ERROR):
        for _ in range(2):
            assert client.get("/cds-services").status_code == 200
    assert sum("metrics-failed" in r.getMessage() for r in caplog.records) == 1

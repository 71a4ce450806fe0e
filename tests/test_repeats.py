"""Repeat suppression: a card shown at order-select is not repeated at order-sign for the same
draft, user and data; anything changed, a critical card, or the request's switch: shown."""

from __future__ import annotations

import copy
import logging
import sqlite3
from datetime import timedelta

import pytest

from cds_service import create_app
from cds_service.config import Settings

from .conftest import NOW

SELECT, SIGN = "/cds-services/thiopurine-order-select", "/cds-services/thiopurine-order-sign"
WARNING = {"counts": {"platelets": 149}}        # one non-critical card: cytopenia, warning
CRITICAL = {"pgx": {"TPMT": {"phenotype": "poor"}}}   # one critical card: thiopurine-pgx
SWITCH = "filter-out-repeated-alerts"


@pytest.fixture
def app(make_app):
    """Repeat suppression is off by default; these tests are about it switched on."""
    return make_app(suppress_repeats=True)

def _sign(body: dict, switch: object = None) -> dict:
    """The same drafts at order-sign (a new hook instance; every draft is judged)."""
    signed = copy.deepcopy(body)
    signed["hook"], signed["hookInstance"] = "order-sign", body["hookInstance"] + "-sign"
    signed["context"].pop("selections", None)
    if switch is not None:
        signed["extension"] = {"pddi-configuration-items": {SWITCH: switch}}
    return signed


def _post(client, path: str, body: dict) -> list[dict]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["cards"]


def _topics(cards: list[dict]) -> set[str]:
    return {c["source"]["topic"]["code"] for c in cards}


def _draft(body: dict) -> dict:
    return body["context"]["draftOrders"]["entry"][0]["resource"]


def _platelets(body: dict) -> dict:
    entries = body["prefetch"]["bloodCounts"]["entry"]
    return next(e["resource"] for e in entries if e["resource"]["id"].startswith("platelets-"))


def test_the_same_draft_at_sign_is_not_repeated_and_is_logged_as_suppressed(app, client,
                                                                            order_select):
    body = order_select(WARNING)
    shown = _post(client, SELECT, body)
    assert "cytopenia" in _topics(shown) and all(c["indicator"] != "critical" for c in shown)
    signed = _post(client, SIGN, _sign(body))
    assert signed == []
    log = app.config["STORE"].cards(_sign(body)["hookInstance"])
    assert log and not any(row["shown"] for row in log)
    assert {row["repeat_of"] for row in log} == {c["uuid"] for c in shown}
    assert {row["finding"] for row in log} == {
        row["finding"] for row in app.config["STORE"].cards(body["hookInstance"])}


def test_a_changed_dose_is_shown_again(client, order_select):
    body = order_select(WARNING)
    _post(client, SELECT, body)
    changed = _sign(body)
    dose = _draft(changed)["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    dose["value"] += 1
    assert "cytopenia" in _topics(_post(client, SIGN, changed))


def test_changed_data_is_shown_again(client, order_select):
    body = order_select(WARNING)
    _post(client, SELECT, body)
    changed = _sign(body)
    _platelets(changed)["valueQuantity"]["value"] = 140  # a new count, still a warning
    assert "cytopenia" in _topics(_post(client, SIGN, changed))


def test_the_draft_id_and_meta_do_not_count_as_a_change(client, order_select):
    body = order_select(WARNING)
    _post(client, SELECT, body)
    changed = _sign(body)
    _draft(changed)["meta"] = {"versionId": "2"}
    assert _post(client, SIGN, changed) == []


def test_a_critical_card_is_never_suppressed(app, client, order_select):
    body = order_select(CRITICAL)
    shown = _post(client, SELECT, body)
    assert [c["indicator"] for c in shown if c["source"]["topic"]["code"] == "thiopurine-pgx"
            ] == ["critical"]
    signed = _post(client, SIGN, _sign(body))
    assert [c["indicator"] for c in signed if c["source"]["topic"]["code"] == "thiopurine-pgx"
            ] == ["critical"]
    log = app.config["STORE"].cards(_sign(body)["hookInstance"])
    assert all(row["shown"] for row in log if row["indicator"] == "critical")


def test_the_request_can_switch_suppression_off(client, order_select):
    body = order_select(WARNING)
    shown = _post(client, SELECT, body)
    assert _topics(_post(client, SIGN, _sign(body, switch=False))) == _topics(shown)


def test_the_request_can_switch_suppression_on(make_app, order_select):
    client = make_app(suppress_repeats=False).test_client()
    body = order_select(WARNING)
    _post(client, SELECT, body)
    assert "cytopenia" in _topics(_post(client, SIGN, _sign(body)))  # the deployment: off
    assert _post(client, SIGN, _sign(body, switch=True)) == []


def test_a_switch_that_is_not_a_boolean_is_ignored(client, caplog, order_select):
    body = order_select(WARNING)
    _post(client, SELECT, body)
    with caplog.at_level(logging.WARNING, logger="cds_service"):
        assert _post(client, SIGN, _sign(body, switch="false")) == []  # the default: on
    assert "bad-configuration-item" in caplog.text


def test_another_user_sees_the_card(client, order_select):
    body = order_select(WARNING)
    _post(client, SELECT, body)
    other = _sign(body)
    other["context"]["userId"] = "Practitioner/ANOTHER"
    assert "cytopenia" in _topics(_post(client, SIGN, other))


def test_a_select_card_older_than_the_window_does_not_suppress(tmp_path, knowledge, order_select):
    now = [NOW]
    app = create_app(Settings(db_path=str(tmp_path / "s.sqlite3"), repeat_window_minutes=60,
                              suppress_repeats=True),
                     knowledge=knowledge, clock=lambda: now[0])
    client = app.test_client()
    body = order_select(WARNING)
    _post(client, SELECT, body)
    now[0] = NOW + timedelta(minutes=59)
    assert _post(client, SIGN, _sign(body)) == []
    now[0] = NOW + timedelta(minutes=61)
    assert "cytopenia" in _topics(_post(client, SIGN, _sign(body)))


def test_a_store_that_cannot_be_read_suppresses_nothing(app, client, monkeypatch, caplog,
                                                        order_select):
    body = order_select(WARNING)
    _post(client, SELECT, body)

    def broken(*_):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(app.config["STORE"], "shown_at_select", broken)
    assert "cytopenia" in _topics(_post(client, SIGN, _sign(body)))
    assert "repeat-check-failed" in caplog.text


def test_discovery_advertises_the_switch_on_order_sign(client):
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}
    items = services["thiopurine-order-sign"]["extension"]["pddi-configuration-items"]
    assert [(i["code"], i["type"]) for i in items] == [(SWITCH, "boolean")]
    assert "pddi-configuration-items" not in services["thiopurine-order-select"]["extension"]


def test_suppression_is_off_by_default(make_app, order_select):
    client = make_app().test_client()
    body = order_select(WARNING)
    shown = _post(client, SELECT, body)
    assert _topics(_post(client, SIGN, _sign(body))) == _topics(shown) == {"cytopenia"}


def test_a_card_whose_suggestion_was_accepted_is_shown_again_on_the_same_draft(client,
                                                                             order_select):
    """The user accepted "reduce" at order-select, but the EHR did not apply it (the sandbox
    cannot): the signed draft is unchanged, so the card comes again."""
    body = order_select({"pgx": {"TPMT": {"phenotype": "intermediate"}}})
    shown = _post(client, SELECT, body)
    card = next(c for c in shown if c["source"]["topic"]["code"] == "thiopurine-pgx")
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "accepted",
                              "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                              "outcomeTimestamp": "2026-11-23T12:00:05Z"}]}
    assert client.post("/cds-services/thiopurine-order-select/feedback",
                       json=feedback).status_code == 200
    assert "thiopurine-pgx" in _topics(_post(client, SIGN, _sign(body)))

"""The card log and `azathioprine-cds report`: a store filled through the HTTP API with requests
built by the factories and feedback posts, then reported on as text and as a self-contained HTML
page."""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import sqlite3
import uuid

import pytest

from cds_service import cli, report
from cds_service.report import NO_CODE
from cds_service.store import LoggedCard, Store

from .factories import PATIENT, USER

SELECT = "/cds-services/thiopurine-order-select"
SIGN = "/cds-services/thiopurine-order-sign"
POOR = {"pgx": {"TPMT": {"phenotype": "poor"}}}                  # thiopurine-pgx, critical
INTERMEDIATE = {"pgx": {"TPMT": {"phenotype": "intermediate"}}}  # thiopurine-pgx, warning
ALLOPURINOL = {"medications": ["allopurinol"]}                   # xanthine oxidase, warning
PLATELETS_149 = {"counts": {"platelets": 149}}                   # cytopenia, warning


@pytest.fixture
def app(make_app):
    """Repeat suppression is off by default; these tests are about it switched on."""
    return make_app(suppress_repeats=True)

def _post(client, body: dict, path: str = SELECT) -> list[dict]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["cards"]


def _card(cards: list[dict], topic: str) -> dict:
    return next(c for c in cards if c["source"]["topic"]["code"] == topic)


def _feedback(client, card: dict, outcome: str, code: str | None = None,
              comment: str | None = None, service: str = "thiopurine-order-select") -> None:
    item = {"card": card["uuid"], "outcome": outcome,
            "outcomeTimestamp": "2026-11-23T12:05:00Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": s["uuid"]} for s in card.get("suggestions", [])
                                       ] or [{"id": "suggestion-1"}]
    if outcome == "overridden":
        reason = {"reason": {"code": code, "system": "urn:azathioprine-cds:override"}} \
            if code else {}
        item["overrideReason"] = {**reason, **({"userComment": comment} if comment else {})}
    response = client.post(f"/cds-services/{service}/feedback", json={"feedback": [item]})
    assert response.status_code == 200, response.get_json()


@pytest.fixture
def filled(app, client, order_select):
    """Cards for four rule families, feedback on most, one repeat suppressed at order-sign."""
    issued = []
    intermediate = _post(client, order_select(INTERMEDIATE))
    poor = _post(client, order_select(POOR))
    poor_again = _post(client, order_select(POOR))
    xo = _post(client, order_select(ALLOPURINOL))
    cytopenia_body = order_select(PLATELETS_149)
    cytopenia = _post(client, cytopenia_body)
    signed = copy.deepcopy(cytopenia_body)
    signed.update(hook="order-sign", hookInstance=cytopenia_body["hookInstance"] + "-sign")
    signed["context"].pop("selections")
    issued += [*intermediate, *poor, *poor_again, *xo, *cytopenia]
    assert _post(client, signed, SIGN) == []  # the repeat: logged, not shown

    _feedback(client, _card(intermediate, "thiopurine-pgx"), "overridden", "dose-already-reduced")
    _feedback(client, _card(poor, "thiopurine-pgx"), "overridden", "alternative-not-suitable")
    _feedback(client, _card(poor_again, "thiopurine-pgx"), "accepted")
    _feedback(client, _card(xo, "xanthine-oxidase-interaction"), "overridden",
              comment="Rheumatology aware")
    # Revised feedback: the last item received counts.
    _feedback(client, _card(cytopenia, "cytopenia"), "overridden", "counts-recent")
    _feedback(client, _card(cytopenia, "cytopenia"), "accepted")
    _feedback(client, {"uuid": str(uuid.uuid4())}, "overridden", "data-checked-manually")
    return app.config["SETTINGS"].db_path, issued


def test_the_report_counts_per_rule_and_finding(filled, app):
    _, issued = filled
    result = report.build(app.config["STORE"])
    pgx, cytopenia = result.rules["thiopurine-pgx"], result.rules["cytopenia"]
    assert (pgx.shown, pgx.accepted, pgx.overridden, pgx.suppressed) == (3, 1, 2, 0)
    assert pgx.override_rate == pytest.approx(2 / 3)
    assert pgx.reasons == {"dose-already-reduced": 1, "alternative-not-suitable": 1}
    poor = result.findings[("thiopurine-pgx", "pgx-poor")]
    assert (poor.shown, poor.accepted, poor.overridden, poor.override_rate) == (2, 1, 1, 0.5)
    intermediate = result.findings[("thiopurine-pgx", "pgx-intermediate")]
    assert (intermediate.shown, intermediate.overridden, intermediate.override_rate) == (1, 1, 1)
    xo = result.rules["xanthine-oxidase-interaction"]
    assert (xo.overridden, xo.reasons) == (1, {NO_CODE: 1})
    assert (cytopenia.shown, cytopenia.suppressed, cytopenia.accepted, cytopenia.overridden) \
        == (1, 1, 1, 0)
    assert result.total.shown == len(issued)
    assert result.total.unanswered == len(issued) - 5
    assert result.unmatched == 1


def test_the_cli_prints_the_report_and_writes_the_page(filled, tmp_path, capsys):
    db, _ = filled
    page = tmp_path / "report.html"
    assert cli.main(["report", "--db", db, "--html", str(page)]) == 0
    out = capsys.readouterr().out
    pgx_line = next(line for line in out.splitlines() if line.startswith("thiopurine-pgx "))
    # Cards, then alerts: the two identical poor-metaboliser orders are one alert, accepted last.
    assert pgx_line.split()[1:] == ["3", "0", "1", "2", "0", "66.7%", "2", "50.0%"]
    # Override reasons with the display text the cards offered.
    assert "overridden for: Dose already reduced accordingly [dose-already-reduced] 1" in out
    assert "Feedback naming no logged card (not counted above): 1" in out
    html = page.read_text(encoding="utf-8")
    for code in ("thiopurine-pgx", "cytopenia", "xanthine-oxidase-interaction", "pgx-poor",
                 "alternative-not-suitable", "66.7%"):
        assert code in html
    assert html.count("<svg") == 3
    # Self-contained: nothing to fetch, nothing to run.
    assert not re.search(r"<script|<link|<img|src=|href=|url\(|@import", html)


@pytest.mark.parametrize("since, until, everything", [
    ("2026-11-23", "2026-11-23", True),   # --until is a whole day, included
    ("2026-11-24", None, False),
    (None, "2026-11-22", False),
    ("2026-11-23T11:59:00Z", "2026-11-23T12:00:00Z", False),  # a date-time --until: excluded
    ("2026-11-23T12:00:00", None, True),  # no zone: UTC
])
def test_the_period_filters_on_the_time_the_card_was_issued(filled, app, since, until,
                                                            everything):
    _, issued = filled
    result = report.build(app.config["STORE"], since, until)
    logged = len(issued) + 1  # and the one suppressed
    assert result.total.shown + result.total.suppressed == (logged if everything else 0)


def test_the_cli_refuses_a_store_that_does_not_exist(tmp_path, capsys):
    assert cli.main(["report", "--db", str(tmp_path / "nothing.sqlite3")]) == 2
    assert "no store" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["report", "--since", "last tuesday"])


def test_an_empty_store_reports_nothing_and_still_renders(app, tmp_path):
    result = report.build(app.config["STORE"])
    assert "No cards were issued" in report.text(result)
    assert "nothing in this period" in report.html(result)


def test_the_log_holds_every_card_and_no_identifier_in_clear(make_app, order_select):
    key = "a-pseudonym-key-from-configuration-0123456789"
    app = make_app(pseudonym_key=key)
    client = app.test_client()
    body = order_select(POOR)
    cards = _post(client, body) + _post(client, order_select(POOR))
    rows = app.config["STORE"].cards()
    assert [r["card"] for r in rows] == [c["uuid"] for c in cards]
    first = rows[0]
    assert first["service"] == "thiopurine-order-select" and first["hook"] == "order-select"
    assert first["hook_instance"] == body["hookInstance"]
    assert first["rule"] == "thiopurine-pgx" and first["finding"] == "pgx-poor"
    assert first["indicator"] == "critical" and first["shown"] == 1
    assert first["knowledge_version"] == app.config["KNOWLEDGE"].version
    assert re.fullmatch(r"[0-9a-f]{64}", first["patient_hash"])
    assert len({r["patient_hash"] for r in rows}) == 1  # stable: one patient, one pseudonym
    assert first["patient_hash"] != first["user_hash"]
    dump = repr(rows)
    assert PATIENT not in dump and USER.split("/")[1] not in dump
    # Keyed by the configured key, which the store itself does not hold.
    assert first["patient_hash"] == hmac.new(key.encode(), f"patient:{PATIENT}".encode(),
                                             hashlib.sha256).hexdigest()
    with sqlite3.connect(app.config["SETTINGS"].db_path) as connection:
        tables = {name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        dump = "\n".join(connection.iterdump())
    assert tables == {"feedback", "cards", "replay", "schema_version", "sqlite_sequence"}
    assert key not in dump and PATIENT not in dump and USER not in dump


def test_a_failed_log_write_still_returns_the_cards(app, client, monkeypatch, caplog, order_select):
    def broken(*_):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(app.config["STORE"], "add_cards", broken)
    cards = _post(client, order_select(POOR))
    assert [c["indicator"] for c in cards if c["source"]["topic"]["code"] == "thiopurine-pgx"
            ] == ["critical"]
    assert "card-log-failed" in caplog.text


def test_the_card_sent_when_the_service_fails_is_logged(app, client, monkeypatch, order_select):
    from cds_service import engine

    def broken(*_):
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine, "evaluate", broken)
    cards = _post(client, order_select(POOR))
    assert [(r["card"], r["rule"]) for r in app.config["STORE"].cards()] == [
        (cards[0]["uuid"], "data-unavailable")]


# -- distinct alerts: the copies of one card an order form's re-firing issues --------------

def _logged(uuid: str, fingerprint: str | None, shown: bool = True) -> LoggedCard:
    return LoggedCard("2026-11-23T12:00:00.000Z", "thiopurine-order-select", "order-select",
                      f"hi-{uuid}", uuid, "cytopenia", "cytopenia-low", "warning", "v1",
                      "p" * 64, "u" * 64, fingerprint, shown)


def _answer(store: Store, uuid: str, outcome: str) -> None:
    item = {"card": uuid, "outcome": outcome, "outcomeTimestamp": "2026-11-23T12:05:00Z"}
    store.add_feedback("thiopurine-order-select", [item])


def _figures(result: report.Report) -> list[str]:
    line = next(line for line in report.text(result).splitlines()
                if line.startswith("cytopenia "))
    return line.split()[1:]


def test_copies_of_one_alert_count_as_one(make_store):
    store = make_store()
    store.add_cards([_logged("a1", "fa"), _logged("a2", "fa"), _logged("a3", "fa"),
                     _logged("b1", "fb")])
    _answer(store, "a2", "overridden")
    _answer(store, "b1", "accepted")
    result = report.build(store)
    tally = result.rules["cytopenia"]
    assert (tally.shown, tally.overridden, tally.override_rate) == (4, 1, 0.25)
    assert (len(tally.alerts), tally.alerts_overridden, tally.alert_override_rate) == (2, 1, 0.5)
    assert result.findings[("cytopenia", "cytopenia-low")].alerts == tally.alerts
    assert _figures(result) == ["4", "0", "1", "1", "2", "25.0%", "2", "50.0%"]


def test_an_alert_counts_by_the_feedback_received_last_on_any_of_its_cards(make_store):
    store = make_store()
    store.add_cards([_logged("a1", "fa"), _logged("a2", "fa")])
    _answer(store, "a2", "accepted")
    _answer(store, "a1", "overridden")  # the earlier card, answered later
    tally = report.build(store).total
    assert (tally.accepted, tally.overridden, tally.alert_override_rate) == (1, 1, 1.0)


def test_a_card_without_fingerprint_is_an_alert_of_its_own(make_store):
    store = make_store()
    store.add_cards([_logged("n1", None), _logged("n2", None), _logged("n3", None)])
    _answer(store, "n1", "overridden")
    result = report.build(store)
    tally = result.total
    assert (len(tally.alerts), tally.alerts_overridden) == (3, 1)
    assert _figures(result) == ["3", "0", "0", "1", "2", "33.3%", "3", "33.3%"]


def test_a_suppressed_card_is_no_alert(make_store):
    store = make_store()
    # s1 repeats a card shown before the period, so no card here shares its fingerprint.
    store.add_cards([_logged("a1", "fa"), _logged("a2", "fa", shown=False),
                     _logged("s1", "fs", shown=False)])
    _answer(store, "a1", "overridden")
    result = report.build(store)
    tally = result.total
    assert (tally.shown, tally.suppressed, len(tally.alerts), tally.alert_override_rate) == (
        1, 2, 1, 1.0)
    assert _figures(result) == ["1", "2", "0", "1", "0", "100.0%", "1", "100.0%"]


def test_the_page_shows_the_alerts(make_store):
    store = make_store()
    store.add_cards([_logged("a1", "fa"), _logged("a2", "fa"), _logged("b1", "fb")])
    _answer(store, "a1", "overridden")
    page = report.html(report.build(store))
    assert "<th scope=\"col\">alerts</th>" in page
    assert "<th scope=\"col\">alert override rate</th>" in page
    assert "<td>33.3%</td><td>2</td><td>50.0%</td>" in page  # cards' rate, alerts, alerts' rate
    assert "Alert override rate = overridden alerts / alerts." in page


def test_bounds():
    assert report.bound("2026-11-23") == "2026-11-23T00:00:00.000Z"
    assert report.bound("2026-11-23", end=True) == "2026-11-24T00:00:00.000Z"
    assert report.bound("2026-11-23T13:00:00+01:00") == "2026-11-23T12:00:00.000Z"

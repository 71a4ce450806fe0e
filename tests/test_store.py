"""The store, the same tests on SQLite and on a real PostgreSQL server: migrations, the JWT
replay cache, idempotent feedback, the card log, and failures said once."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import closing

import pytest

from cds_service import auth
from cds_service.config import Settings
from cds_service.store import (
    MIGRATIONS,
    SQLITE_PREFIX,
    LoggedCard,
    Store,
    StoreError,
    describe,
    is_postgres,
    open_store,
)

ISS, OTHER_ISS = "https://ehr.example.org", "https://other-ehr.example.org"
LATEST = MIGRATIONS[-1].version
ITEM = {"card": "card-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:05:00Z",
        "overrideReason": {"reason": {"code": "counts-recent", "system": "urn:x"}}}


def raw(url: str, sql: str, parameters: tuple = ()) -> list[tuple]:
    """SQL on a connection of the test's own, beside the store's."""
    if is_postgres(url):
        import psycopg

        with psycopg.connect(url, autocommit=True) as connection:
            cursor = connection.execute(sql.replace("?", "%s"), parameters or None)
            return cursor.fetchall() if cursor.description else []
    with closing(sqlite3.connect(url.removeprefix(SQLITE_PREFIX), isolation_level=None)) as c:
        return c.execute(sql, parameters).fetchall()


def card(uuid: str, hook: str = "order-select", fingerprint: str | None = "f1",
         shown: bool = True, issued_at: str = "2026-11-23T12:00:00.000Z") -> LoggedCard:
    return LoggedCard(issued_at, "thiopurine-" + hook, hook, "hi-1", uuid, "cytopenia",
                      "platelets-low", "warning", "v1", "p" * 64, "u" * 64, fingerprint, shown)


# -- migrations ----------------------------------------------------------------------------

def test_a_new_store_gets_every_migration_once(make_store, store_url):
    store = make_store()
    assert store.schema_version() == LATEST
    assert make_store().migrate() == LATEST  # a second worker or instance: nothing left to do
    rows = raw(store_url, "SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]


def test_a_store_newer_than_this_release_is_refused(make_store, store_url):
    make_store()
    raw(store_url, "INSERT INTO schema_version VALUES (?, ?, ?)", (LATEST + 1, "future", "-"))
    with pytest.raises(StoreError, match=f"schema version {LATEST + 1}, newer"):
        make_store()


def test_a_store_from_before_versioning_is_upgraded_with_its_data(tmp_path):
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as old:  # the schema of the release before this one
        old.executescript("""
            CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL
              DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), service TEXT NOT NULL,
              card TEXT NOT NULL, outcome TEXT NOT NULL, outcome_timestamp TEXT NOT NULL,
              accepted_suggestions TEXT, override_code TEXT, override_system TEXT,
              override_comment TEXT);
            INSERT INTO feedback (service, card, outcome, outcome_timestamp)
              VALUES ('s', 'old-card', 'accepted', '2026-11-01T00:00:00Z');
            CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
            INSERT INTO secrets VALUES ('pseudonym-hmac-sha256', x'00');
            CREATE TABLE seen_jti (jti TEXT PRIMARY KEY, iss TEXT, exp INTEGER);""")
        old.execute("INSERT INTO seen_jti VALUES ('j-1', ?, ?)", (ISS, int(time.time()) + 300))
        old.commit()
    store = Store(SQLITE_PREFIX + str(path), b"k" * 32)
    assert store.schema_version() == LATEST
    assert [f["card"] for f in store.feedback()] == ["old-card"]
    assert not store.check_and_store(ISS, "j-1", int(time.time()) + 300)  # still refused
    tables = {r[0] for r in raw(SQLITE_PREFIX + str(path),
                                "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "secrets" not in tables and "seen_jti" not in tables  # the key left with its table
    store.close()


# -- the JWT replay cache ------------------------------------------------------------------

def test_a_jti_is_accepted_once_per_issuer(make_store):
    store = make_store()
    exp = int(time.time()) + 300
    assert store.check_and_store(ISS, "j", exp)
    assert not store.check_and_store(ISS, "j", exp)
    assert store.check_and_store(OTHER_ISS, "j", exp)  # another issuer's jti is another token


def test_a_jti_is_refused_by_every_other_worker_or_instance(make_store):
    first, second = make_store(), make_store()
    exp = int(time.time()) + 300
    assert first.check_and_store(ISS, "j", exp)
    assert not second.check_and_store(ISS, "j", exp)


def test_the_replay_check_is_atomic_across_threads(make_store):
    store = make_store()
    exp = int(time.time()) + 300
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(store.check_and_store(ISS, "j", exp)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_expired_jtis_are_purged_after_the_leeway(make_store, store_url):
    now = int(time.time())
    assert make_store().check_and_store(ISS, "old", now - auth.MAX_LEEWAY - 10)
    assert make_store().check_and_store(ISS, "recent", now - 10)
    assert make_store().check_and_store(ISS, "new", now + 300)  # a new store purges first
    assert {r[0] for r in raw(store_url, "SELECT jti FROM replay")} == {"recent", "new"}


# -- feedback ------------------------------------------------------------------------------

def test_a_retried_feedback_item_is_stored_once(make_store):
    store = make_store()
    assert store.add_feedback("svc", [ITEM]) == [True]
    assert make_store().add_feedback("svc", [ITEM]) == [False]  # the retry, on another worker
    revised = {"card": "card-1", "outcome": "accepted", "acceptedSuggestions": [{"id": "s1"}],
               "outcomeTimestamp": "2026-11-23T12:06:00Z"}
    assert store.add_feedback("svc", [revised, ITEM]) == [True, False]
    assert [(f["outcome"], f["override_code"]) for f in store.feedback("card-1")] == [
        ("overridden", "counts-recent"), ("accepted", None)]


# -- the card log --------------------------------------------------------------------------

def test_the_card_log_answers_repeats_and_the_report(make_store):
    store = make_store()
    store.add_cards([card("c1"), card("c2", fingerprint="f2", shown=False),
                     card("c3", hook="order-sign", fingerprint="f3")])
    assert store.shown_at_select(["f1", "f2", "f3"], "2026-11-23T00:00:00.000Z") == {"f1": "c1"}
    assert store.shown_at_select(["f1"], "2026-11-23T12:00:00.001Z") == {}
    store.add_feedback("svc", [{**ITEM, "card": "c1"}, {**ITEM, "card": "nowhere"}])
    store.add_feedback("svc", [{**ITEM, "card": "c1", "outcome": "accepted",
                                "outcomeTimestamp": "2026-11-23T12:09:00Z",
                                "acceptedSuggestions": [{"id": "s"}]}])
    outcomes = store.card_outcomes()
    assert [(o["shown"], o["outcome"]) for o in outcomes] == [
        (1, "accepted"), (0, None), (1, None)]  # the last feedback item counts
    assert store.card_outcomes("2026-11-24T00:00:00.000Z") == []
    assert store.unmatched_feedback() == 1
    assert [c["card"] for c in store.cards("hi-1")] == ["c1", "c2", "c3"]


# -- failures ------------------------------------------------------------------------------

def test_a_failing_store_says_why_once_and_its_recovery(make_store, store_url, caplog):
    store = make_store()
    store.probe()
    raw(store_url, "ALTER TABLE replay RENAME TO replay_away")  # a real fault of the database
    with caplog.at_level(logging.WARNING, logger="cds_service.store"):
        for _ in range(3):
            with pytest.raises(StoreError, match="replay-cache failed"):
                store.probe()
        raw(store_url, "ALTER TABLE replay_away RENAME TO replay")
        store.probe()
    events = [r.getMessage() for r in caplog.records]
    assert len(events) == 2 and all(r.exc_info is None for r in caplog.records)  # no traceback
    assert '"event":"store-unavailable"' in events[0] and "replay" in events[0]
    assert '"event":"store-recovered"' in events[1]


def test_an_unopenable_sqlite_path_is_named(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreError, match="a-file"):
        Store(SQLITE_PREFIX + str(tmp_path / "a-file" / "store.sqlite3"), b"k" * 32)


def test_postgresql_needs_a_configured_pseudonym_key(postgres_url, caplog):
    with pytest.raises(StoreError, match="CDS_PSEUDONYM_KEY"):
        open_store(Settings(database_url=postgres_url))
    store = open_store(Settings(database_url=postgres_url, pseudonym_key="x" * 32))
    assert store.pseudonym("patient", "p1") == Store(
        postgres_url, b"x" * 32, migrate=False).pseudonym("patient", "p1")  # every instance
    store.close()


def test_sqlite_without_a_key_makes_one_for_the_run_and_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        store = open_store(Settings(db_path=str(tmp_path / "s.sqlite3")))
    assert "CDS_PSEUDONYM_KEY" in caplog.text
    assert len(store.pseudonym("patient", "p1")) == 64


def test_the_store_is_described_without_its_password():
    url = "postgresql://cds:s3cret@db.example.org:5433/cds?sslmode=require"
    assert describe(url) == "postgresql://cds@db.example.org:5433/cds"
    assert describe("sqlite:///:memory:") == "sqlite:///:memory:"

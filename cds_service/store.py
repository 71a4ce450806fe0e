"""The service's durable store (SQLite): feedback items, and a log of the cards issued.

SQLite in WAL mode is shared safely by the gunicorn workers of one host; every write commits
before the request is acknowledged, so an acknowledged item is on disk.

The card log holds no patient or user identifier in clear: both are HMAC-SHA256 pseudonyms
under a per-deployment key kept in this store's `secrets` table and generated on first use. A
pseudonym is stable within a deployment (so repeats can be recognised) but cannot be reversed,
or recomputed from a guessed id, without that key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    service TEXT NOT NULL,
    card TEXT NOT NULL,
    outcome TEXT NOT NULL,
    outcome_timestamp TEXT NOT NULL,
    accepted_suggestions TEXT,
    override_code TEXT,
    override_system TEXT,
    override_comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_card ON feedback(card);
CREATE TABLE IF NOT EXISTS cards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    issued_at TEXT NOT NULL,            -- UTC, e.g. 2026-11-23T12:00:00.000Z (as received_at)
    service TEXT NOT NULL,
    hook TEXT NOT NULL,
    hook_instance TEXT NOT NULL,
    card TEXT NOT NULL,                 -- the card's uuid: feedback.card joins here
    rule TEXT NOT NULL,                 -- source.topic.code, the rule family
    finding TEXT NOT NULL,              -- the finding key (cards/rules.yaml)
    indicator TEXT NOT NULL,
    knowledge_version TEXT NOT NULL,
    patient_hash TEXT NOT NULL,         -- HMAC-SHA256 pseudonym, never the id itself
    user_hash TEXT NOT NULL,
    fingerprint TEXT,                   -- repeat fingerprint (repeats.py); NULL: no draft order
    shown INTEGER NOT NULL DEFAULT 1,   -- 0: suppressed as a repeat, never sent
    repeat_of TEXT                      -- when suppressed: the order-select card it repeats
);
CREATE UNIQUE INDEX IF NOT EXISTS cards_card ON cards(card);
CREATE INDEX IF NOT EXISTS cards_issued ON cards(issued_at);
CREATE INDEX IF NOT EXISTS cards_fingerprint ON cards(fingerprint, issued_at);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
_PSEUDONYM_KEY = "pseudonym-hmac-sha256"


def timestamp(moment: datetime) -> str:
    """The one text form of times in this store: sorts and compares as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class LoggedCard:
    """One row of the card log, in column order."""
    issued_at: str
    service: str
    hook: str
    hook_instance: str
    card: str
    rule: str
    finding: str
    indicator: str
    knowledge_version: str
    patient_hash: str
    user_hash: str
    fingerprint: str | None = None
    shown: bool = True
    repeat_of: str | None = None


_CARD_COLUMNS = ", ".join(f.name for f in fields(LoggedCard))


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()  # one writer per process: no busy-wait sleeps between threads
        self._key: bytes | None = None
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            # Per connection, so that a ":memory:" store has its tables in every thread.
            connection.executescript(_SCHEMA)
            self._local.connection = connection
        return connection

    def _write(self, sql: str, rows: list[tuple], durable: bool = False) -> None:
        """All rows or none, committed before returning. `durable`: synced to disk (FULL), so
        an acknowledged write survives a power cut; otherwise WAL's NORMAL, which survives a
        crash of the service and costs no fsync on the hook path."""
        connection = self._connect()
        with self._lock:
            connection.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(sql, rows)
            except sqlite3.Error:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _query(self, sql: str, parameters: tuple = ()) -> list[dict]:
        connection = self._connect()
        connection.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in connection.execute(sql, parameters).fetchall()]
        finally:
            connection.row_factory = None

    def add_feedback(self, service: str, items: list[dict]) -> None:
        rows = []
        for i in items:
            override = i.get("overrideReason") or {}
            coding = override.get("reason") or {}
            rows.append((service, i["card"], i["outcome"], i["outcomeTimestamp"],
                         ",".join(s["id"] for s in i.get("acceptedSuggestions", [])) or None,
                         _text(coding.get("code")), _text(coding.get("system")),
                         _text(override.get("userComment"))))
        self._write(
            "INSERT INTO feedback (service, card, outcome, outcome_timestamp,"
            " accepted_suggestions, override_code, override_system, override_comment)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows, durable=True)

    def feedback(self, card: str | None = None) -> list[dict]:
        query = "SELECT * FROM feedback" + (" WHERE card = ?" if card else "") + " ORDER BY id"
        return self._query(query, (card,) if card else ())

    # -- the card log --------------------------------------------------------------------

    def keyed_hash(self, data: bytes) -> str:
        return hmac.new(self._secret(), data, hashlib.sha256).hexdigest()

    def pseudonym(self, kind: str, value: str) -> str:
        """e.g. pseudonym("patient", id): the kind keeps a patient and a user id apart."""
        return self.keyed_hash(f"{kind}:{value}".encode())

    def _secret(self) -> bytes:
        if self._key is None:
            connection = self._connect()
            # INSERT OR IGNORE: when two workers start at once, the first key written wins.
            connection.execute("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)",
                               (_PSEUDONYM_KEY, secrets.token_bytes(32)))
            (self._key,) = connection.execute(
                "SELECT value FROM secrets WHERE name = ?", (_PSEUDONYM_KEY,)).fetchone()
        return self._key

    def add_cards(self, cards: list[LoggedCard]) -> None:
        marks = ", ".join("?" * len(fields(LoggedCard)))
        self._write(f"INSERT INTO cards ({_CARD_COLUMNS}) VALUES ({marks})",
                    [astuple(c) for c in cards])

    def cards(self, hook_instance: str | None = None) -> list[dict]:
        query = "SELECT * FROM cards" + (" WHERE hook_instance = ?" if hook_instance else "")
        return self._query(query + " ORDER BY id", (hook_instance,) if hook_instance else ())

    def shown_at_select(self, fingerprints: list[str], since: str) -> dict[str, str]:
        """fingerprint -> uuid of a card with it shown at order-select at or after `since`."""
        if not fingerprints:
            return {}
        marks = ", ".join("?" * len(fingerprints))
        rows = self._query(
            "SELECT fingerprint, card FROM cards WHERE hook = 'order-select' AND shown = 1"
            f" AND issued_at >= ? AND fingerprint IN ({marks}) ORDER BY id",
            (since, *fingerprints))
        return {r["fingerprint"]: r["card"] for r in rows}

    def card_outcomes(self, since: str | None = None, until: str | None = None) -> list[dict]:
        """Each card issued in [since, until) with its last feedback received, if any."""
        where, parameters = _period("c.issued_at", since, until)
        return self._query(
            "SELECT c.rule, c.finding, c.indicator, c.shown, c.knowledge_version,"
            " f.outcome, f.override_code FROM cards c LEFT JOIN feedback f"
            " ON f.id = (SELECT max(id) FROM feedback WHERE card = c.card)"
            f" WHERE {where} ORDER BY c.id", parameters)

    def unmatched_feedback(self, since: str | None = None, until: str | None = None) -> int:
        """Feedback received in the period for a card the log does not hold."""
        where, parameters = _period("f.received_at", since, until)
        rows = self._query(
            "SELECT count(*) AS n FROM feedback f WHERE NOT EXISTS"
            f" (SELECT 1 FROM cards c WHERE c.card = f.card) AND {where}", parameters)
        return rows[0]["n"]


def _text(value: object) -> str | None:
    """A client's odd value (a system sent as an object) is kept as JSON, not a failed write."""
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _period(column: str, since: str | None, until: str | None) -> tuple[str, tuple]:
    conditions, parameters = ["1"], []
    if since:
        conditions.append(f"{column} >= ?")
        parameters.append(since)
    if until:
        conditions.append(f"{column} < ?")
        parameters.append(until)
    return " AND ".join(conditions), tuple(parameters)

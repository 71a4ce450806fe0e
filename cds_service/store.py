"""The service's durable store (SQLite): feedback items, and a log of the cards issued.

SQLite in WAL mode is shared safely by the gunicorn workers of one host; every write commits
before the request is acknowledged, so an acknowledged item is on disk.
"""

from __future__ import annotations

import sqlite3
import threading
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
"""


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            self._local.connection = connection
        return connection

    def add_feedback(self, service: str, items: list[dict]) -> None:
        """All items or none, committed before returning."""
        rows = [(service, i["card"], i["outcome"], i["outcomeTimestamp"],
                 ",".join(s["id"] for s in i.get("acceptedSuggestions", [])) or None,
                 (i.get("overrideReason") or {}).get("reason", {}).get("code"),
                 (i.get("overrideReason") or {}).get("reason", {}).get("system"),
                 (i.get("overrideReason") or {}).get("userComment")) for i in items]
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(
                "INSERT INTO feedback (service, card, outcome, outcome_timestamp,"
                " accepted_suggestions, override_code, override_system, override_comment)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def feedback(self, card: str | None = None) -> list[dict]:
        connection = self._connect()
        connection.row_factory = sqlite3.Row
        query = "SELECT * FROM feedback" + (" WHERE card = ?" if card else "") + " ORDER BY id"
        rows = connection.execute(query, (card,) if card else ()).fetchall()
        connection.row_factory = None
        return [dict(r) for r in rows]

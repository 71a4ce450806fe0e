"""One log format for everything, gunicorn included: a JSON object per line, with the time
(UTC), the level, the logger and the process.

The service's own records carry a JSON object as their message (`orjson.dumps({...})`): its
fields become the line's. Any other message (gunicorn's, a library's) is kept as "message". A
traceback stays on its line as "exception": the frames, and each exception's type. An exception's
own message is kept only for the operating system's and the database's errors; others (the FHIR
models' validation errors above all) may quote the data that caused them, which must never reach
a log.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import traceback
from datetime import UTC, datetime
from types import TracebackType

import orjson

HANDLER_NAME = "cds-json"
_SAFE_MESSAGE_TYPES = (OSError, sqlite3.Error)
_SAFE_MESSAGE_MODULES = ("psycopg", "psycopg_pool")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name, "pid": record.process}
        message = record.getMessage()
        fields = _json_object(message)
        if fields is None:
            entry["message"] = message
        else:
            entry.update((k, v) for k, v in fields.items() if k not in entry)
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = _exception(record.exc_info[1])
        return orjson.dumps(entry, default=str).decode()


def _json_object(message: str) -> dict | None:
    if not message.startswith("{"):
        return None
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _describe(error: BaseException) -> str:
    name = type(error).__qualname__
    safe = isinstance(error, _SAFE_MESSAGE_TYPES) or type(error).__module__.startswith(
        _SAFE_MESSAGE_MODULES)
    first = str(error).strip().splitlines()[0][:300] if safe and str(error).strip() else ""
    return f"{name}: {first}" if first else name


def _exception(error: BaseException) -> str:
    """The traceback of `error` and of its causes, outermost first, messages made safe."""
    parts, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{_describe(current)}")
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)
    return "\nwhile handling, or caused by:\n".join(parts)


def _uncaught(kind: type[BaseException], error: BaseException,
              trace: TracebackType | None) -> None:
    logging.getLogger("cds_service").critical('{"event": "uncaught-exception"}',
                                              exc_info=(kind, error, trace))


def configure(level: str) -> None:
    """JSON lines on stderr from the root logger, once per process; uncaught exceptions too."""
    root = logging.getLogger()
    if not any(h.name == HANDLER_NAME for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.name = HANDLER_NAME
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    sys.excepthook = _uncaught
    threading.excepthook = lambda args: _uncaught(args.exc_type, args.exc_value,
                                                  args.exc_traceback)


def gunicorn_logger() -> type:
    """gunicorn's `logger_class`: its own lines in the same format. Its access log stays off
    (the app logs each request), so that costs nothing per request."""
    from gunicorn import glogging

    class JsonLogger(glogging.Logger):
        def setup(self, cfg: object) -> None:
            super().setup(cfg)
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonFormatter())

    return JsonLogger

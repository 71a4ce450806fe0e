"""Deployment settings, read once from the environment (all optional: defaults run anywhere).

`Settings.from_env` checks every variable before anything starts and raises ConfigError naming
each problem, one line each, so a misconfigured deployment stops at once and says why.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from .auth import MODES as AUTH_MODES
from .knowledge import DEFAULT_DIR

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
MIN_KEY_CHARS = 32
_AT_LEAST = {"repeat_window_minutes": 0}  # every other number must be at least 1
_SECRETS = ("pseudonym_key", "database_url")  # never echoed in a message


class ConfigError(ValueError):
    """One or more settings are wrong; `problems` has one line for each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip().rstrip("/") for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    knowledge_dir: Path = DEFAULT_DIR
    db_path: str = "azathioprine-cds.sqlite3"   # SQLite, when database_url is not set
    database_url: str | None = field(default=None, repr=False)  # postgresql://... (password)
    pseudonym_key: str | None = field(default=None, repr=False)
    pseudonym_key_file: str | None = None
    auth_mode: str = "off"                      # off | required
    trusted_clients_file: str | None = None
    trusted_clients_json: str | None = None
    trust_sandbox: bool = False                 # the public sandbox key: for trying only
    public_base_url: str | None = None          # e.g. https://cds.example.org (JWT aud)
    cors_origins: tuple[str, ...] = ("*",)
    fhir_allowlist: tuple[str, ...] = ()        # empty: any http(s) fhirServer
    time_budget_ms: int = 1500                  # whole request, FHIR round trips included
    connect_timeout_ms: int = 300
    max_pages: int = 10
    max_fhir_bytes: int = 20_000_000
    max_fhir_total_bytes: int = 30_000_000      # all FHIR answers of one hook call
    max_fhir_requests: int = 50                 # FHIR GETs (pages, Medications) of one hook call
    max_body_bytes: int = 10_000_000
    max_array_items: int = 20_000               # drafts, selections, entries of one Bundle
    strict_412: bool = False                    # 412 instead of a data-unavailable card
    log_level: str = "INFO"
    suppress_repeats: bool = False              # order-sign drops non-critical order-select repeats
    repeat_window_minutes: int = 720            # how long an order-select card counts as shown

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """CDS_<FIELD> variables, e.g. CDS_AUTH_MODE=required, CDS_FHIR_ALLOWLIST=a,b.
        Raises ConfigError with every problem found."""
        env = os.environ if env is None else env
        values, problems = {}, []
        for f in fields(cls):
            raw = env.get(variable(f.name))
            if raw is None:
                continue
            try:
                values[f.name] = _convert(f.name, raw, getattr(cls, f.name))
            except ValueError as error:
                problems.append(f"{variable(f.name)}: {error}")
        settings = cls(**values)  # the values that failed above keep their defaults here
        problems += settings.problems(variable("db_path") in env)
        if problems:
            raise ConfigError(problems)
        return settings

    def problems(self, db_path_set: bool = False) -> list[str]:
        """What is wrong with these settings taken together, one line each."""
        found = []
        if self.auth_mode not in AUTH_MODES:
            found.append(f"CDS_AUTH_MODE: must be one of {', '.join(AUTH_MODES)},"
                         f" not {self.auth_mode!r}")
        if self.log_level not in LOG_LEVELS:
            found.append(f"CDS_LOG_LEVEL: must be one of {', '.join(LOG_LEVELS)},"
                         f" not {self.log_level!r}")
        if self.public_base_url and not _http_url(self.public_base_url):
            found.append("CDS_PUBLIC_BASE_URL: must be an http(s) URL such as"
                         f" https://cds.example.org, not {self.public_base_url!r}")
        found += [f"CDS_FHIR_ALLOWLIST: {url!r} is not an http(s) URL"
                  for url in self.fhir_allowlist if not _http_url(url)]
        found += self._store_problems(db_path_set)
        return found

    def _store_problems(self, db_path_set: bool) -> list[str]:
        found = []
        url = self.database_url
        postgres = bool(url) and urlsplit(url).scheme in ("postgresql", "postgres")
        if url and not (postgres or url.startswith("sqlite:///")):
            found.append("CDS_DATABASE_URL: must start with postgresql:// or sqlite:///")
        if url and db_path_set:
            found.append("CDS_DB_PATH and CDS_DATABASE_URL are both set: set one")
        if self.pseudonym_key and self.pseudonym_key_file:
            found.append("CDS_PSEUDONYM_KEY and CDS_PSEUDONYM_KEY_FILE are both set: set one")
        elif self.pseudonym_key and len(self.pseudonym_key) < MIN_KEY_CHARS:
            found.append(f"CDS_PSEUDONYM_KEY: must be at least {MIN_KEY_CHARS} characters")
        elif self.pseudonym_key_file:
            found += _key_file_problems(self.pseudonym_key_file)
        elif postgres and not self.pseudonym_key:
            found.append("CDS_PSEUDONYM_KEY or CDS_PSEUDONYM_KEY_FILE is required with"
                         " PostgreSQL: every instance must use the same key")
        return found


def variable(name: str) -> str:
    return f"CDS_{name.upper()}"


def _http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _key_file_problems(path: str) -> list[str]:
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        return [f"CDS_PSEUDONYM_KEY_FILE: cannot read {path}: {error.__class__.__name__}"]
    if len(key) < MIN_KEY_CHARS:
        return [f"CDS_PSEUDONYM_KEY_FILE: {path} must hold at least {MIN_KEY_CHARS} characters"]
    return []


def _convert(name: str, raw: str, default: object) -> object:
    shown = "" if name in _SECRETS else f", not {raw[:80]!r}"
    if isinstance(default, bool):
        word = raw.strip().lower()
        if word not in _TRUE + _FALSE:
            raise ValueError(f"must be one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}{shown}")
        return word in _TRUE
    if isinstance(default, int):
        try:
            number = int(raw)
        except ValueError:
            raise ValueError(f"must be a whole number{shown}") from None
        least = _AT_LEAST.get(name, 1)
        if number < least:
            raise ValueError(f"must be at least {least}{shown}")
        return number
    if isinstance(default, tuple):
        return _split(raw)
    if isinstance(default, Path):
        return Path(raw)
    if name == "log_level":
        return raw.strip().upper()
    if name == "auth_mode":
        return raw.strip()
    return raw or None

"""Deployment settings, read once from the environment (all optional: defaults run anywhere)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from .knowledge import DEFAULT_DIR


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip().rstrip("/") for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    knowledge_dir: Path = DEFAULT_DIR
    db_path: str = "azathioprine-cds.sqlite3"
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
    suppress_repeats: bool = True               # order-sign drops non-critical order-select repeats
    repeat_window_minutes: int = 720            # how long an order-select card counts as shown

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """CDS_<FIELD> variables, e.g. CDS_AUTH_MODE=required, CDS_FHIR_ALLOWLIST=a,b."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(f"CDS_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _convert(f.name, raw, getattr(cls, f.name))
        return cls(**values)


def _convert(name: str, raw: str, default: object) -> object:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError as error:
            raise ValueError(f"CDS_{name.upper()} must be an integer") from error
    if isinstance(default, tuple):
        return _split(raw)
    if isinstance(default, Path):
        return Path(raw)
    return raw or None

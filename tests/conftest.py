"""Shared fixtures: the app with a fixed clock and a private store, and the FHIR fixtures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_service import create_app
from cds_service.config import Settings
from cds_service.knowledge import load_knowledge

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the fixtures are dated relative to this


@pytest.fixture(scope="session")
def knowledge():
    return load_knowledge()


@pytest.fixture
def make_app(tmp_path, knowledge):
    def factory(**overrides):
        settings = Settings(db_path=str(tmp_path / "store.sqlite3"), **overrides)
        return create_app(settings, knowledge=knowledge, clock=lambda: NOW)
    return factory


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def load_request(name: str) -> dict:
    return json.loads((FIXTURES / "requests" / f"{name}.json").read_text())

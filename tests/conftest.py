"""Shared fixtures: the app with a fixed clock and a private store, and requests built from the
factories (tests/factories.py)."""

from __future__ import annotations

import pytest

from cds_service import create_app
from cds_service.config import Settings
from cds_service.knowledge import Knowledge, load_knowledge

from .factories import NOW, Scenario, apply


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


def hook_call(knowledge: Knowledge, given: dict | None = None) -> tuple[str, dict]:
    """(path, body) of the baseline patient changed as `given` says (tests/cases/README.md)."""
    scenario = apply(Scenario(knowledge), given or {})
    return f"/cds-services/{scenario.service}", scenario.body(knowledge)


@pytest.fixture
def order_select(knowledge):
    """given -> the order-select request of the baseline patient changed as `given` says (a new
    hook instance each time)."""
    def build(given: dict) -> dict:
        path, body = hook_call(knowledge, given)
        assert path == "/cds-services/thiopurine-order-select", path
        return body
    return build

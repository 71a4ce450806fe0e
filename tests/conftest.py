"""Shared fixtures: the app with a fixed clock and a private store, requests built from the
factories (tests/factories.py), and stores on SQLite and on PostgreSQL (a fresh schema per test,
when CDS_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cds_service import create_app
from cds_service.config import Settings
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.store import SQLITE_PREFIX, Store

from .factories import NOW, Scenario, apply
from .fhir_server import FhirServer

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_VARIABLE = "CDS_TEST_DATABASE_URL"
PSEUDONYM_KEY = "pseudonym-key-for-the-tests-only-0123456789"


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
def fhir():
    """A real local FHIR server (tests/fhir_server.py) on a loopback port."""
    server = FhirServer().start()
    yield server
    server.stop()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


# Named situations several modules post (the changes to the baseline patient).
TPMT_POOR = {"pgx": {"TPMT": {"phenotype": "poor"}}}                      # critical
TPMT_INTERMEDIATE = {"pgx": {"TPMT": {"phenotype": "intermediate"}}}      # warning
PLATELETS_149 = {"counts": {"platelets": 149}}                          # warning
BOTH_NORMAL = {"pgx": {"TPMT": {"phenotype": "normal"}, "NUDT15": {"phenotype": "normal"}}}
COUNTS_FETCHED = {"prefetch": {"bloodCounts": "absent"}}   # the service fetches them


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


def postgres_base() -> str:
    """The PostgreSQL server for the tests, or a skip that says how to enable them."""
    url = os.environ.get(POSTGRES_VARIABLE)
    if not url:
        pytest.skip(f"PostgreSQL tests: set {POSTGRES_VARIABLE}, e.g."
                    " postgresql://postgres@127.0.0.1:5432/test (.ci/run does)")
    return url


def in_schema(url: str, schema: str) -> str:
    """The URL with its search_path set to `schema` (libpq's options parameter)."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL of its own: a new schema, dropped with everything in it afterwards."""
    import psycopg

    base = postgres_base()
    schema = f"cds_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield in_schema(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """The same test against both back ends."""
    if request.param == "sqlite":
        return SQLITE_PREFIX + str(tmp_path / "store.sqlite3")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def make_store(store_url):
    """Stores on `store_url` (several: as several workers or instances), closed afterwards."""
    stores: list[Store] = []

    def factory(migrate: bool = True) -> Store:
        stores.append(Store(store_url, PSEUDONYM_KEY.encode(), migrate=migrate))
        return stores[-1]
    yield factory
    for store in stores:
        store.close()

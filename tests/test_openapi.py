"""The running app against its own OpenAPI document (schemathesis): every response is documented
and conforms to its schema, and no input, valid or not, gets a 5xx or an internal error."""

from __future__ import annotations

import logging
import socket

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from cds_service import create_app
from cds_service.config import Settings
from cds_service.openapi import DOCUMENT, document

from .conftest import NOW
from .test_properties import FHIR, KNOWLEDGE, Crashes, offline

# Not negative_data_rejection: a CORS preflight rightly answers any path, known id or not.
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance,
          checks.unsupported_method]  # an undeclared method: 405 with an Allow header

# The document as the app serves it (see test_served_document_is_the_tested_one). Loaded at
# import: schemathesis' fixture-based loader (schemathesis.pytest.from_fixture) fails on pytest 9.
schema = schemathesis.openapi.from_dict(document(list(KNOWLEDGE.services)))


@pytest.fixture(scope="module")
def wsgi_app(tmp_path_factory, knowledge):
    """Any fhirServer but the unroutable one is refused (403), and name lookups fail."""
    settings_ = Settings(db_path=str(tmp_path_factory.mktemp("openapi") / "store.sqlite3"),
                         fhir_allowlist=(FHIR,))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", offline(socket.getaddrinfo))
        yield create_app(settings_, knowledge=knowledge, clock=lambda: NOW)


@pytest.fixture(scope="module")
def crashes():
    handler, logger = Crashes(), logging.getLogger("cds_service")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_api_conforms_to_its_openapi_document(case, wsgi_app, crashes):
    crashes.records.clear()
    case.call_and_validate(app=wsgi_app, checks=CHECKS)
    assert not crashes.records, crashes.text()


def test_served_document_is_the_tested_one(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == schema.raw_schema


def test_document_names_the_services_and_the_error_body(knowledge):
    served = document(list(knowledge.services))
    assert served["openapi"].startswith("3.1")
    enum = served["components"]["parameters"]["serviceId"]["schema"]["enum"]
    assert enum == sorted(knowledge.services)
    assert "enum" not in DOCUMENT["components"]["parameters"]["serviceId"]["schema"]
    for code in ("400", "401", "403", "404", "405", "412", "413"):
        content = served["components"]["responses"][f"E{code}"]["content"]
        assert content["application/json"]["schema"]["$ref"].endswith("/OperationOutcome")

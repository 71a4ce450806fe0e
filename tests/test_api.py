"""The HTTP edge as a client sees it: discovery, CORS, errors in one JSON shape, feedback."""

from __future__ import annotations

import pytest

SERVICE = "/cds-services/thiopurine-order-select"
SANDBOX_FEEDBACK = {"feedback": [{
    "card": "f850e6a0-a0a7-4ced-bdd8-281d4bccb972", "outcome": "overridden",
    "outcomeTimestamp": "2026-11-22T20:43:33.385Z",
    "overrideReason": {"reason": {"code": "benefit-outweighs-risk",
                                  "system": "http://example.org/override"}}}]}


def test_discovery_lists_the_order_and_patient_view_services(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.get_json()["services"]}
    assert {s["hook"] for s in services.values()} == {
        "order-select", "order-sign", "medication-prescribe", "patient-view"}
    for service in services.values():
        for template in service["prefetch"].values():
            assert "today()" not in template
            assert template.count("{{") == template.count("}}")
        assert service["description"]


def test_prefetch_templates_use_only_2_0_tokens(client):
    import re
    services = client.get("/cds-services").get_json()["services"]
    tokens = {t for s in services for v in s["prefetch"].values()
              for t in re.findall(r"\{\{(.*?)\}\}", v)}
    assert tokens <= {"context.patientId", "context.userId", "context.encounterId",
                      "userPractitionerId", "userPractitionerRoleId", "userPatientId",
                      "userRelatedPersonId"}


@pytest.mark.parametrize("path", ["/cds-services", SERVICE, SERVICE + "/feedback"])
def test_preflight_answers_without_authentication(make_app, path):
    client = make_app(auth_mode="required", trust_sandbox=True,
                      public_base_url="http://localhost:8080").test_client()
    response = client.options(path, headers={
        "Origin": "http://localhost:8080", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code < 300
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


def test_cors_header_on_errors_too(client):
    response = client.post(SERVICE, data=b"not json", headers={"Origin": "http://x.test"})
    assert response.status_code == 400
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_configured_origins_are_echoed_and_others_get_none(make_app):
    client = make_app(cors_origins=("https://ehr.example.org",)).test_client()
    good = client.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    bad = client.get("/cds-services", headers={"Origin": "https://evil.example"})
    assert good.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert "Access-Control-Allow-Origin" not in bad.headers


@pytest.mark.parametrize("body, field", [
    ({"hook": "order-sign", "hookInstance": "x", "context": {}}, "hook"),
    ({"hook": "order-select", "context": {"patientId": "p", "userId": "u"}}, "hookInstance"),
    ({"hook": "order-select", "hookInstance": "x"}, "context"),
    ({"hook": "order-select", "hookInstance": "x", "context": {"userId": "u"}}, "patientId"),
    ({"hook": "order-select", "hookInstance": "x", "fhirServer": "ftp://x",
      "context": {"patientId": "p", "userId": "u"}}, "fhirServer"),
    ({"hook": "order-select", "hookInstance": "x", "fhirAuthorization": {"access_token": "t"},
      "context": {"patientId": "p", "userId": "u"}}, "fhirServer"),
    ({"hook": "order-select", "hookInstance": "x", "prefetch": [],
      "context": {"patientId": "p", "userId": "u"}}, "prefetch"),
    ({"hook": "order-select", "hookInstance": "x",
      "context": {"patientId": "p", "userId": "u", "draftOrders": []}}, "draftOrders"),
    ({"hook": "order-select", "hookInstance": "x",
      "context": {"patientId": "p", "userId": "u", "selections": "MedicationRequest/1"}},
     "selections"),
    ([1, 2], "object"),
])
def test_bad_requests_get_a_400_operation_outcome_naming_the_problem(client, body, field):
    response = client.post(SERVICE, json=body)
    assert response.status_code == 400
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert field in outcome["issue"][0]["diagnostics"]


def test_invalid_utf8_is_a_400(client):
    response = client.post(SERVICE, data=b'{"hook": "\xff\xfe"}',
                           content_type="application/json")
    assert response.status_code == 400


def test_unknown_service_and_wrong_method(client):
    assert client.post("/cds-services/nope", json={}).status_code == 404
    response = client.put(SERVICE, json={})
    assert response.status_code == 405
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_body_over_the_limit_is_413(make_app):
    client = make_app(max_body_bytes=1000).test_client()
    response = client.post(SERVICE, data=b"{" + b" " * 2000 + b"}",
                           content_type="application/json")
    assert response.status_code == 413


def test_sandbox_feedback_shape_is_stored(client, app):
    response = client.post(SERVICE + "/feedback", json=SANDBOX_FEEDBACK)
    assert response.status_code == 200
    stored = app.config["STORE"].feedback("f850e6a0-a0a7-4ced-bdd8-281d4bccb972")
    assert stored[0]["override_code"] == "benefit-outweighs-risk"
    assert stored[0]["service"] == "thiopurine-order-select"


def test_accepted_feedback_with_suggestion_is_stored(client, app):
    body = {"feedback": [{"card": "c1", "outcome": "accepted",
                          "acceptedSuggestions": [{"id": "s1"}],
                          "outcomeTimestamp": "2026-11-22T20:43:23.327Z"}]}
    assert client.post(SERVICE + "/feedback", json=body).status_code == 200
    assert app.config["STORE"].feedback("c1")[0]["accepted_suggestions"] == "s1"


@pytest.mark.parametrize("item", [
    {"outcome": "accepted", "outcomeTimestamp": "2026-11-22T20:43:23Z"},
    {"card": "c", "outcome": "maybe", "outcomeTimestamp": "2026-11-22T20:43:23Z"},
    {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-22T20:43:23Z"},
    {"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"},
    {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-22T20:43:23"},
    {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-22T20:43:23Z",
     "overrideReason": {}},
    {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-22T20:43:23Z",
     "overrideReason": {"reason": {"system": "x"}}},
])
def test_malformed_feedback_is_refused_and_nothing_stored(client, app, item):
    good = SANDBOX_FEEDBACK["feedback"][0]
    response = client.post(SERVICE + "/feedback", json={"feedback": [good, item]})
    assert response.status_code == 400
    assert app.config["STORE"].feedback() == []


def test_feedback_for_unknown_service_is_404(client):
    assert client.post("/cds-services/nope/feedback", json=SANDBOX_FEEDBACK).status_code == 404


def test_arrays_over_the_limit_are_413(make_app):
    client = make_app(max_array_items=3).test_client()
    entries = [{"resource": {"resourceType": "MedicationRequest", "id": str(i)}} for i in range(4)]
    body = {"hook": "order-sign", "hookInstance": "x",
            "context": {"patientId": "p", "userId": "u",
                        "draftOrders": {"resourceType": "Bundle", "entry": entries}}}
    response = client.post("/cds-services/thiopurine-order-sign", json=body)
    assert response.status_code == 413
    assert "draftOrders.entry" in response.get_json()["issue"][0]["diagnostics"]
    body["context"]["draftOrders"]["entry"] = entries[:3]
    body["prefetch"] = {"bloodCounts": {"resourceType": "Bundle", "entry": [{}] * 4}}
    assert client.post("/cds-services/thiopurine-order-sign", json=body).status_code == 413

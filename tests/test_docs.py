"""GET /docs/<page>: the pages cards link to, public even when calls need a JWT (a clinician's
browser follows the link without one)."""

from __future__ import annotations

from .factories import Scenario, apply

PUBLIC = "https://cds.example.org"


def test_the_data_unavailable_page_is_public_html(make_app):
    client = make_app(auth_mode="required", trust_sandbox=True,
                      public_base_url=PUBLIC).test_client()
    assert client.get("/cds-services").status_code == 401  # calls do need a JWT
    response = client.get("/docs/data-unavailable")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "<strong>not done</strong>" in response.get_data(as_text=True)


def test_an_unknown_page_is_a_404_operation_outcome(client):
    response = client.get("/docs/secrets")
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_the_data_unavailable_card_links_the_page_at_the_public_url(make_app, knowledge):
    body = apply(Scenario(knowledge), {"prefetch": {"bloodCounts": "error"}}).body(knowledge)
    client = make_app(public_base_url=PUBLIC + "/").test_client()
    cards = client.post("/cds-services/thiopurine-order-select", json=body).get_json()["cards"]
    assert [c["source"]["url"] for c in cards] == [f"{PUBLIC}/docs/data-unavailable"]

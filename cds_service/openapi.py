"""GET /openapi.json: the service's own OpenAPI 3.1 document (package data, read once).

The served copy lists this deployment's service ids as the enum of the `service_id` parameter.
"""

from __future__ import annotations

import copy
import json
from importlib import resources

import orjson
from flask import Blueprint, Response, current_app

bp = Blueprint("openapi", __name__)
DOCUMENT: dict = json.loads(
    resources.files(__package__).joinpath("openapi.json").read_text(encoding="utf-8"))


def document(service_ids: list[str]) -> dict:
    """The document with the given service ids filled in."""
    doc = copy.deepcopy(DOCUMENT)
    if service_ids:
        doc["components"]["parameters"]["serviceId"]["schema"]["enum"] = sorted(service_ids)
    return doc


@bp.get("/openapi.json")
def openapi() -> Response:
    body = current_app.extensions.get("openapi")
    if body is None:
        body = orjson.dumps(document(list(current_app.config["KNOWLEDGE"].services)))
        current_app.extensions["openapi"] = body
    return Response(body, mimetype="application/json")

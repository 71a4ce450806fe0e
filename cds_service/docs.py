"""GET /docs/<page>: the service's own documentation pages that cards link to (package data)."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, abort

bp = Blueprint("docs", __name__)
PAGES = {"data-unavailable"}


@bp.get("/docs/<page>")
def page(page: str) -> Response:
    if page not in PAGES:
        abort(404)
    text = resources.files(__package__).joinpath(f"docs/{page}.html").read_text("utf-8")
    return Response(text, mimetype="text/html")

"""Thiopurine safety CDS Hooks 2.0 service (azathioprine, mercaptopurine, thioguanine)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlsplit

from flask import Flask

from .config import Settings
from .knowledge import Knowledge, load_knowledge
from .store import open_store


def create_app(settings: Settings | None = None, knowledge: Knowledge | None = None,
               clock: Callable[[], datetime] | None = None) -> Flask:
    """The app factory: knowledge, models, keys and the store load here, once, never per
    request. Raises ConfigError, KnowledgeError, StoreError or ValueError (trusted clients)
    with a message fit for one line."""
    from . import api, docs, logs, openapi, ops
    from .auth import Authenticator

    settings = settings or Settings.from_env()
    _check_audience_base(settings)
    logs.configure(settings.log_level)
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["KNOWLEDGE"] = knowledge or load_knowledge(settings.knowledge_dir)
    app.config["CLOCK"] = clock or api.utc_now
    app.config["STORE"] = store = open_store(settings)
    app.config["AUTHENTICATOR"] = Authenticator.from_config(
        settings.auth_mode, settings.trusted_clients_file, settings.trusted_clients_json,
        store, allow_sandbox=settings.trust_sandbox)
    # One byte more than allowed: a chunked body (no Content-Length) is cut there, not at the
    # limit, so that _body() can tell "too large" (413) from "complete".
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(docs.bp)
    api.register_errors(app)
    return app


def _check_audience_base(settings: Settings) -> None:
    """With client authentication on, the JWT `aud` is checked against CDS_PUBLIC_BASE_URL and
    never against the Host or X-Forwarded-* headers a caller sends: no start without one."""
    if settings.auth_mode != "required":
        return
    parts = urlsplit(settings.public_base_url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("CDS_AUTH_MODE=required needs CDS_PUBLIC_BASE_URL, the service's public"
                         " http(s) base URL (e.g. https://cds.example.org): the JWT aud is "
                         "checked against it")

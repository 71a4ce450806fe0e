"""Thiopurine safety CDS Hooks 2.0 service (azathioprine, mercaptopurine, thioguanine)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from flask import Flask

from .config import Settings
from .knowledge import Knowledge, load_knowledge
from .store import Store


def create_app(settings: Settings | None = None, knowledge: Knowledge | None = None,
               clock: Callable[[], datetime] | None = None) -> Flask:
    """The app factory: knowledge, models and keys load here, once, never per request."""
    from . import api, openapi
    from .auth import Authenticator, ReplayCache

    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(message)s")
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["KNOWLEDGE"] = knowledge or load_knowledge(settings.knowledge_dir)
    app.config["CLOCK"] = clock or api.utc_now
    app.config["STORE"] = Store(settings.db_path)
    app.config["AUTHENTICATOR"] = Authenticator.from_config(
        settings.auth_mode, settings.trusted_clients_file, settings.trusted_clients_json,
        ReplayCache(settings.db_path), allow_sandbox=settings.trust_sandbox)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    api.register_errors(app)
    return app

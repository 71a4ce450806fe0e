"""Operations endpoints: liveness, readiness and Prometheus metrics.

They carry no patient data, so they need no client authentication (restrict them at the proxy),
and they stay out of the access log while they answer 200: a probe every few seconds per
replica would drown the requests that matter.
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, current_app

from . import metrics
from .store import StoreError

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
bp = Blueprint("ops", __name__)


def _json(body: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


@bp.get("/healthz")
def healthz() -> Response:
    """The process answers: restart it if not."""
    return _json({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Fit to take traffic: knowledge loaded, the store takes writes, and the JWT replay cache
    (in the store) refuses a repeat. The reason for a failure is in the log (store-unavailable)."""
    knowledge = current_app.config.get("KNOWLEDGE")
    checks = {"knowledge": f"ok ({knowledge.version})" if knowledge and knowledge.services
              else "not loaded"}
    try:
        current_app.config["STORE"].probe()
        checks["store"] = "ok"
    except StoreError:
        checks["store"] = "failed: see the log"
    required = current_app.config["AUTHENTICATOR"].required
    checks["replay_cache"] = checks["store"] if required else "not used (CDS_AUTH_MODE=off)"
    ready = checks["knowledge"].startswith("ok") and checks["store"] == "ok"
    return _json({"status": "ready" if ready else "not ready", "checks": checks},
                 200 if ready else 503)


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, headers={"Content-Type": content_type})

"""HTTP edge: the CDS Hooks routes, CORS, client authentication, JSON errors and access logs."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from . import engine, feedback, metrics, protocol, repeats
from .cards import VERSION_EXTENSION
from .errors import CDSError, operation_outcome
from .ops import PUBLIC_PATHS
from .protocol import HookRequest
from .store import LoggedCard, StoreError, timestamp

bp = Blueprint("cds", __name__)
log = logging.getLogger("cds_service.access")
_ALLOWED_HEADERS = "Authorization, Content-Type"
_ALLOWED_METHODS = "GET, POST, OPTIONS"
_PUBLIC = PUBLIC_PATHS | {"/openapi.json", "/docs/data-unavailable"}


def json_response(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def _body() -> object:
    settings = current_app.config["SETTINGS"]
    if (request.content_length or 0) > settings.max_body_bytes:
        raise CDSError(413, f"the body exceeds {settings.max_body_bytes} bytes", code="too-long")
    raw = request.get_data(cache=False)
    if len(raw) > settings.max_body_bytes:
        raise CDSError(413, f"the body exceeds {settings.max_body_bytes} bytes", code="too-long")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise CDSError(400, f"the body is not valid JSON ({error.msg})", code="structure") from None


def _service(service_id: str):
    service = current_app.config["KNOWLEDGE"].services.get(service_id)
    if service is None:
        raise CDSError(404, f"no CDS service '{service_id}'", code="not-found")
    g.service = service_id
    return service


@bp.before_app_request
def _authenticate() -> None:
    g.started = time.perf_counter()
    authenticator = current_app.config["AUTHENTICATOR"]
    if request.method == "OPTIONS" or not authenticator.required or request.path in _PUBLIC:
        return  # preflights, the API description and the probes carry no patient data
    # Never from Host or X-Forwarded-*: a caller sets those (create_app requires the setting).
    audience = current_app.config["SETTINGS"].public_base_url.rstrip("/") + request.path
    from .auth import AuthError  # imported here so a broken key config fails at start-up only
    try:
        g.client = authenticator.authenticate(request.headers.get("Authorization"), audience)
    except AuthError as error:
        log.warning(orjson.dumps({"event": "auth-rejected", "path": request.path,
                                  "reason": str(error)}).decode())
        raise CDSError(401, "authentication required", code="login") from None


@bp.get("/cds-services")
def discovery() -> Response:
    services = []
    knowledge = current_app.config["KNOWLEDGE"]
    for service in knowledge.services.values():
        entry = {"hook": service.hook, "id": service.id, "title": service.title,
                 "description": service.description,
                 "prefetch": knowledge.queries(service.id),
                 "extension": {VERSION_EXTENSION: knowledge.version}}
        if service.usageRequirements:
            entry["usageRequirements"] = service.usageRequirements
        if service.hook == "order-sign":  # advertised as the HL7 PDDI-CDS IG does
            entry["extension"][repeats.CONFIGURATION_KEY] = [repeats.CONFIGURATION_ITEM]
        services.append(entry)
    return json_response({"services": services})


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    service = _service(service_id)
    body = _body()
    settings = current_app.config["SETTINGS"]
    hook_request = protocol.parse_request(body, service, settings.max_array_items)
    g.hook_instance, g.hook_request = hook_request.hook_instance, hook_request
    _check_fhir_server(hook_request.fhir_server, settings.fhir_allowlist)
    now = current_app.config["CLOCK"]()
    result = engine.evaluate(hook_request, current_app.config["KNOWLEDGE"], settings, now,
                             _base_url())
    _strict_412(result, settings)
    cards = _issue(hook_request, body, result, now)
    g.rules = sorted({c["source"]["topic"]["code"] for c in cards})
    return json_response({"cards": cards})


def _issue(request: HookRequest, body: object, result: engine.Result,
           now: datetime) -> list[dict]:
    """The cards to send: order-sign repeats dropped, every card logged. Clinical safety
    first: no failure of the store may cost a card, so any error here shows them all."""
    try:
        issued = repeats.plan(current_app.config["STORE"], request, body, result, now,
                              current_app.config["SETTINGS"])
    except Exception as error:
        _store_failed("repeat-check-failed", request, len(result.cards), error)
        issued = repeats.unfiltered(result)
    _log_cards(request, issued, now)
    suppressed = sum(not i.shown for i in issued)
    if suppressed:
        g.suppressed = suppressed
    return [i.card for i in issued if i.shown]


def _log_cards(request: HookRequest, issued: list[repeats.Issued], now: datetime) -> None:
    """Committed before the response is sent; a failure is logged, never raised."""
    for i in issued:
        metrics.card(i.card["source"]["topic"]["code"], i.card["indicator"], i.shown)
    if not issued:
        return
    store = current_app.config["STORE"]
    try:
        patient, user = store.pseudonym("patient", request.patient_id), store.pseudonym(
            "user", request.user_id)
        store.add_cards([LoggedCard(
            issued_at=timestamp(now), service=request.service.id, hook=request.service.hook,
            hook_instance=request.hook_instance, card=i.card["uuid"],
            rule=i.card["source"]["topic"]["code"], finding=i.key,
            indicator=i.card["indicator"],
            knowledge_version=current_app.config["KNOWLEDGE"].version, patient_hash=patient,
            user_hash=user, fingerprint=i.fingerprint, shown=i.shown, repeat_of=i.repeat_of)
            for i in issued])
    except Exception as error:
        _store_failed("card-log-failed", request, len(issued), error)


def _store_failed(event: str, request: HookRequest, cards: int, error: Exception) -> None:
    # The store logs its own failures once per outage: a traceback per call would drown the log.
    if not isinstance(error, StoreError):
        logging.getLogger("cds_service").exception(orjson.dumps({
            "event": event, "hook_instance": request.hook_instance, "cards": cards}).decode())


def _base_url() -> str:
    """This service's public URL: the configured one, else as this request reached it."""
    return current_app.config["SETTINGS"].public_base_url or request.host_url


def _strict_412(result: engine.Result, settings) -> None:
    """In strict mode the spec's answer when required data cannot be had."""
    missing = [f for f in result.findings if f.key == "data-unavailable"]
    if settings.strict_412 and missing:
        checks = ", ".join(missing[0].values["checks"])
        raise CDSError(412, f"required data could not be obtained: {checks}", code="incomplete")


def _check_fhir_server(url: str | None, allowlist: tuple[str, ...]) -> None:
    if url and allowlist and url.rstrip("/") not in allowlist:
        raise CDSError(403, "fhirServer is not on this service's allow-list", code="forbidden")


@bp.post("/cds-services/<service_id>/feedback")
def post_feedback(service_id: str) -> Response:
    _service(service_id)
    items = feedback.parse_feedback(_body())
    stored = current_app.config["STORE"].add_feedback(service_id, items)
    for item, new in zip(items, stored, strict=True):  # a repeated item is a retry: a no-op
        metrics.feedback(item["outcome"], "stored" if new else "duplicate")
    return json_response({})


@bp.after_app_request
def _cors_and_log(response: Response) -> Response:
    origins = current_app.config["SETTINGS"].cors_origins
    origin = request.headers.get("Origin")
    if "*" in origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = _ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    metrics.request(request.endpoint or "none", g.get("service", ""), response.status_code,
                    seconds)
    if request.path not in PUBLIC_PATHS or response.status_code != 200:
        _access_log(response.status_code, seconds)
    return response


def _access_log(status: int, seconds: float) -> None:
    record = {"event": "request", "method": request.method, "path": request.path,
              "status": status, "duration_ms": round(seconds * 1000, 2)}
    for key in ("service", "hook_instance", "rules", "suppressed", "error"):
        if key in g:
            record[key] = g.get(key)
    log.info(orjson.dumps(record).decode())


def _error(status: int, message: str, code: str) -> Response:
    return json_response(operation_outcome(message, code), status)


def register_errors(app: Flask) -> None:
    @app.errorhandler(CDSError)
    def _cds_error(error: CDSError) -> Response:
        g.error = error.message[:200]  # why, in the access log (messages name fields, not data)
        return _error(error.status, error.message, error.code)

    @app.errorhandler(StoreError)
    def _store_error(_: StoreError) -> Response:
        # Feedback not stored, or a token whose jti cannot be recorded (the replay check fails
        # closed): a retry may succeed, on this replica or another one. Logged by the store.
        response = _error(503, "the service's store is unavailable: try again", "transient")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        response = _error(error.code or 400, error.description or error.name, "processing")
        allow = dict(error.get_headers()).get("Allow")
        if allow:  # 405 must say what is allowed (RFC 9110)
            response.headers["Allow"] = allow
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # A bug must not look like safety or kill the worker: hook calls get a card that says
        # the checks were not done; anything else a JSON error.
        logging.getLogger("cds_service").exception("unexpected error")
        if request.method == "POST" and request.path.count("/") == 2 and "service" in g:
            card = engine.failure_card(current_app.config["KNOWLEDGE"], _base_url())
            if "hook_request" in g:  # counted like any card shown
                _log_cards(g.hook_request, [repeats.Issued(card, "data-unavailable")],
                           current_app.config["CLOCK"]())
            return json_response({"cards": [card]})
        return _error(503, "the service could not complete the request", "exception")


def utc_now() -> datetime:
    return datetime.now(UTC)

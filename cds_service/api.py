"""HTTP edge: the CDS Hooks routes, CORS, client authentication, JSON errors and access logs."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from . import engine, feedback, protocol, repeats
from .errors import CDSError, operation_outcome
from .protocol import HookRequest
from .store import LoggedCard, timestamp

bp = Blueprint("cds", __name__)
log = logging.getLogger("cds_service.access")
_ALLOWED_HEADERS = "Authorization, Content-Type"
_ALLOWED_METHODS = "GET, POST, OPTIONS"


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
    if request.method == "OPTIONS" or not authenticator.required or request.path == "/openapi.json":
        return  # preflights and the public API description carry no patient data
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
    for service in current_app.config["KNOWLEDGE"].services.values():
        entry = {"hook": service.hook, "id": service.id, "title": service.title,
                 "description": service.description, "prefetch": service.prefetch}
        if service.usage:
            entry["usageRequirements"] = service.usage
        if service.hook == "order-sign":  # advertised as the HL7 PDDI-CDS IG does
            entry["extension"] = {repeats.CONFIGURATION_KEY: [repeats.CONFIGURATION_ITEM]}
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
    result = engine.evaluate(hook_request, current_app.config["KNOWLEDGE"], settings, now)
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
    except Exception:
        _store_failed("repeat-check-failed", request, len(result.cards))
        issued = repeats.unfiltered(result)
    _log_cards(request, issued, now)
    suppressed = sum(not i.shown for i in issued)
    if suppressed:
        g.suppressed = suppressed
    return [i.card for i in issued if i.shown]


def _log_cards(request: HookRequest, issued: list[repeats.Issued], now: datetime) -> None:
    """Committed before the response is sent; a failure is logged, never raised."""
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
    except Exception:
        _store_failed("card-log-failed", request, len(issued))


def _store_failed(event: str, request: HookRequest, cards: int) -> None:
    logging.getLogger("cds_service").exception(orjson.dumps({
        "event": event, "hook_instance": request.hook_instance, "cards": cards}).decode())


def _check_fhir_server(url: str | None, allowlist: tuple[str, ...]) -> None:
    if url and allowlist and url.rstrip("/") not in allowlist:
        raise CDSError(403, "fhirServer is not on this service's allow-list", code="forbidden")


@bp.post("/cds-services/<service_id>/feedback")
def post_feedback(service_id: str) -> Response:
    _service(service_id)
    items = feedback.parse_feedback(_body())
    current_app.config["STORE"].add_feedback(service_id, items)
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
    _access_log(response.status_code)
    return response


def _access_log(status: int) -> None:
    record = {"event": "request", "method": request.method, "path": request.path,
              "status": status,
              "duration_ms": round((time.perf_counter() - g.get("started", time.perf_counter()))
                                   * 1000, 2)}
    for key in ("service", "hook_instance", "rules", "suppressed"):
        if key in g:
            record[key] = g.get(key)
    log.info(orjson.dumps(record).decode())


def _error(status: int, message: str, code: str) -> Response:
    return json_response(operation_outcome(message, code), status)


def register_errors(app: Flask) -> None:
    @app.errorhandler(CDSError)
    def _cds_error(error: CDSError) -> Response:
        return _error(error.status, error.message, error.code)

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
            card = engine.failure_card(current_app.config["KNOWLEDGE"])
            if "hook_request" in g:  # counted like any card shown
                _log_cards(g.hook_request, [repeats.Issued(card, "data-unavailable")],
                           current_app.config["CLOCK"]())
            return json_response({"cards": [card]})
        return _error(503, "the service could not complete the request", "exception")


def utc_now() -> datetime:
    return datetime.now(UTC)

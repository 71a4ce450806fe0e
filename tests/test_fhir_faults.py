"""The fetch path against a real local FHIR server (tests/fhir_server.py), healthy and faulty.

Each test removes a request's prefetch, lets the server answer the service's queries with the
same data (or with a fault), POSTs through the Flask test client under a small time budget, and
checks that the answer comes in time with the right cards, and that the access token goes to
fhirServer as Bearer and nowhere else. Requests are the clinical cases of tests/cases/*.yaml and
the sandbox captures of fixtures/sandbox/.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import pytest

from cds_service.config import Settings
from cds_service.fhir_client import FetchError, FhirClient

from .factories import Factory, Scenario, apply
from .fhir_server import (
    FHIR_JSON,
    FhirServer,
    Reply,
    outcome,
    query_key,
    resource,
    searchset,
    trickle,
)
from .test_cases import CASES
from .test_golden import NAMES, normalise, sandbox_request

BASELINE: dict = {}   # the baseline patient of tests/factories.py: no cards
BUDGET_MS = 400
HEALTHY_BUDGET_MS = 2000  # a healthy server must never be cut off by a loaded CI machine
MARGIN_S = 0.35          # test-client and evaluation overhead on top of the budget
TOKEN = "token-for-the-fhir-server-only"
UNAVAILABLE = Counter({("data-unavailable", "warning"): 1})


@pytest.fixture
def elsewhere():
    """Another host (another port): the token must never reach it, nor any request."""
    server = FhirServer().start()
    yield server
    server.stop()


def _data(body: dict) -> dict[str, object]:
    """What the FHIR server holds: the request's prefetch, each Bundle as its resources."""
    return {key: [e["resource"] for e in value.get("entry", [])]
            if isinstance(value, dict) and value.get("resourceType") == "Bundle" else value
            for key, value in (body.get("prefetch") or {}).items()}


def _queries(app, service: str, body: dict) -> dict[str, str]:
    queries = app.config["KNOWLEDGE"].queries(service)
    client = FhirClient(body["fhirServer"], None, app.config["SETTINGS"], 0)
    patient = body["context"]["patientId"]
    return {key: client.url_for(template.replace("{{context.patientId}}", patient))
            for key, template in queries.items()}


def _serve(app, service: str, body: dict, data: dict, fhir: FhirServer) -> dict[str, str]:
    """Point `body` at the server and let it answer each of the service's queries from `data`
    (a key `data` lacks: an empty searchset, as a server that found nothing)."""
    body["fhirServer"] = fhir.base
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer",
                                 "expires_in": 300, "scope": "patient/*.read", "subject": "cds"}
    queries = _queries(app, service, body)
    for key, url in queries.items():
        value = data.get(key) or []
        fhir.serve(url, resource(value if isinstance(value, dict) else searchset(value)))
    return queries


class Fetched(NamedTuple):
    service: str
    body: dict                  # the request, without prefetch
    queries: dict[str, str]     # the service's query URLs by prefetch key
    data: dict                  # what the server holds by key


def _without_prefetch(app, given: dict, fhir: FhirServer) -> Fetched:
    """The baseline changed as `given` says, minus its prefetch, which the server now serves
    instead."""
    knowledge = app.config["KNOWLEDGE"]
    scenario = apply(Scenario(knowledge), given)
    body = scenario.body(knowledge)
    data = _data(body)
    body.pop("prefetch")
    return Fetched(scenario.service, body, _serve(app, scenario.service, body, data, fhir), data)


def _post(client, service: str, body: dict):
    started = time.monotonic()
    response = client.post(f"/cds-services/{service}", json=body)
    return response, time.monotonic() - started


def _cards(response) -> Counter:
    assert response.status_code == 200, response.get_json()
    return Counter((c["source"]["topic"]["code"], c["indicator"])
                   for c in response.get_json()["cards"])


def _evidence(response, check: str) -> str:
    """The data-unavailable card's evidence line for one check (cds_service/facts FACTS)."""
    cards = [c for c in response.get_json()["cards"]
             if c["source"]["topic"]["code"] == "data-unavailable"]
    lines = [line for c in cards for line in c["detail"].splitlines()
             if line.startswith(f"- {check}: ")]
    assert lines, [c["detail"] for c in cards]
    return lines[0]


def _token_stayed_home(fhir: FhirServer, elsewhere: FhirServer | None = None) -> None:
    assert fhir.requests, "the FHIR server was never asked"
    assert {seen.authorization for seen in fhir.requests} == {f"Bearer {TOKEN}"}
    if elsewhere is not None:
        assert elsewhere.requests == []


def _servable(case: dict) -> bool:
    """Cases whose whole data a server can give back (no null, no OperationOutcome)."""
    given = case.get("given", {})
    raw = [r for resources in given.get("raw", {}).values() for r in resources]
    states = given.get("prefetch", {})  # per key, or "absent" for the whole prefetch
    states = set(states.values()) if isinstance(states, dict) else {states}
    return states <= {"absent"} and not any(
        r.get("resourceType") == "OperationOutcome" for r in raw)


REQUESTS = [pytest.param(("case", p.values[0]), id=p.id) for p in CASES if _servable(p.values[0])]
REQUESTS += [pytest.param(("sandbox", name), id=f"sandbox: {name}") for name in NAMES]


def _request(knowledge, kind: str, item) -> tuple[str, dict]:
    if kind == "sandbox":
        path, body = sandbox_request(item)
        return path.rsplit("/", 1)[1], body
    scenario = apply(Scenario(knowledge), item.get("given", {}))
    return scenario.service, scenario.body(knowledge)


@pytest.mark.parametrize("request_", REQUESTS)
def test_a_healthy_server_gives_the_same_cards_as_the_prefetch(request_, make_app, fhir):
    """Every case and capture, fetched instead of prefetched: the same cards, word for word,
    in time, the token sent as Bearer to fhirServer only."""
    app = make_app(time_budget_ms=HEALTHY_BUDGET_MS)
    service, body = _request(app.config["KNOWLEDGE"], *request_)
    data = _data(body)
    queries = _serve(app, service, body, data, fhir)  # what the prefetch leaves out, too
    prefetched, _ = _post(app.test_client(), service, body)
    fhir.requests.clear()
    body.pop("prefetch", None)
    fetched, seconds = _post(app.test_client(), service, body)
    assert _cards(fetched) == _cards(prefetched)
    assert normalise(fetched.get_json()) == normalise(prefetched.get_json())
    assert seconds < HEALTHY_BUDGET_MS / 1000 + MARGIN_S
    asked = {query_key(p) for p in fhir.paths()}
    assert asked <= {query_key(u) for u in queries.values()}
    if asked:  # a call with nothing to judge fetches nothing
        _token_stayed_home(fhir)


# --- faults on the bloodCounts query; the other keys are served normally ---------------------

def _slow(fhir, elsewhere, url, bundle):
    fhir.serve(url, Reply(200, resource(bundle).body, delay=2.0))


def _http_500(fhir, elsewhere, url, bundle):
    fhir.serve(url, Reply(500, b"Internal Server Error", {"Content-Type": "text/plain"}))


def _http_401(fhir, elsewhere, url, bundle):
    fhir.serve(url, outcome("token expired", 401))


def _not_json(fhir, elsewhere, url, bundle):
    fhir.serve(url, Reply(200, b"<html><body>Login</body></html>", {"Content-Type": "text/html"}))


def _operation_outcome(fhir, elsewhere, url, bundle):
    fhir.serve(url, outcome("database is down"))


def _outcome_in_bundle(fhir, elsewhere, url, bundle):
    failure = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "timeout", "diagnostics": "partial failure"}]}
    fhir.serve(url, resource(searchset([failure])))


def _huge(fhir, elsewhere, url, bundle):
    """The real counts, padded with irrelevant Observations past max_fhir_bytes (50 kB)."""
    weight = {"resourceType": "Observation", "status": "final", "subject": {
        "reference": "Patient/pt-thio-01"}, "code": {"text": "Body weight"},
        "valueQuantity": {"value": 70, "unit": "kg"}}
    padded = dict(bundle, entry=bundle["entry"] + [{"resource": weight}] * 400)
    fhir.serve(url, resource(padded))


def _next_loops(fhir, elsewhere, url, bundle):
    page2 = f"{fhir.base}/Observation?page=2"
    fhir.serve(url, resource(dict(bundle, link=[{"relation": "next", "url": page2}])))
    fhir.serve(page2, resource(searchset([], next_url=url)))


def _endless_pages(fhir, elsewhere, url, bundle):
    fhir.serve(url, resource(dict(bundle, link=[
        {"relation": "next", "url": f"{fhir.base}/Observation?page=2"}])))
    for page in range(2, 50):
        fhir.serve(f"{fhir.base}/Observation?page={page}",
                   resource(searchset([], next_url=f"{fhir.base}/Observation?page={page + 1}")))


def _redirect_elsewhere(fhir, elsewhere, url, bundle):
    target = url.replace(fhir.origin, elsewhere.origin)
    elsewhere.serve(target, resource(bundle))
    fhir.serve(url, Reply(302, b"", {"Location": target}))


def _next_elsewhere(fhir, elsewhere, url, bundle):
    target = f"{elsewhere.base}/Observation?page=2"
    elsewhere.serve(target, resource(searchset([])))
    fhir.serve(url, resource(dict(bundle, link=[{"relation": "next", "url": target}])))


def _link_not_a_list(fhir, elsewhere, url, bundle):
    fhir.serve(url, resource(dict(bundle, link=5)))


def _entry_not_a_list(fhir, elsewhere, url, bundle):
    fhir.serve(url, resource(dict(bundle, entry={"resource": bundle["entry"][0]["resource"]})))


def _search_answer_not_a_bundle(fhir, elsewhere, url, bundle):
    fhir.serve(url, resource({"resourceType": "Patient", "id": "pt-thio-01"}))


def _page_2_not_a_bundle(fhir, elsewhere, url, bundle):
    page2 = f"{fhir.base}/Observation?page=2"
    fhir.serve(url, resource(dict(bundle, link=[{"relation": "next", "url": page2}])))
    fhir.serve(page2, resource({"resourceType": "Patient", "id": "pt-thio-01"}))


FAULTS = {  # name: (script the server, what the card must say ("": any reason), settings)
    "slow": (_slow, "time", {}),
    "http-500": (_http_500, "HTTP 500", {}),
    "http-401": (_http_401, "refused access (HTTP 401)", {}),
    "not-json": (_not_json, "did not answer with JSON", {}),
    "operation-outcome": (_operation_outcome, "database is down", {}),
    "outcome-in-bundle": (_outcome_in_bundle, "reported an error", {}),
    "huge-bundle": (_huge, "exceeded 50000 bytes", {"max_fhir_bytes": 50_000}),
    "next-links-loop": (_next_loops, "loop", {}),
    "endless-pages": (_endless_pages, "only the first 3 pages", {"max_pages": 3}),
    "redirect-elsewhere": (_redirect_elsewhere, "redirected", {}),
    "next-link-elsewhere": (_next_elsewhere, "another host", {}),
    "link-not-a-list": (_link_not_a_list, "", {}),
    "entry-not-a-list": (_entry_not_a_list, "", {}),
    "search-answer-not-a-bundle": (_search_answer_not_a_bundle, "", {}),
    "page-2-not-a-bundle": (_page_2_not_a_bundle, "", {}),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_faulty_server_gives_a_timely_data_unavailable_card(fault, make_app, fhir, elsewhere):
    script, says, settings = FAULTS[fault]
    app = make_app(time_budget_ms=BUDGET_MS, **settings)
    call = _without_prefetch(app, BASELINE, fhir)
    script(fhir, elsewhere, call.queries["bloodCounts"], searchset(call.data["bloodCounts"]))
    response, seconds = _post(app.test_client(), call.service, call.body)
    assert seconds < BUDGET_MS / 1000 + MARGIN_S
    assert _cards(response) == UNAVAILABLE
    assert says in _evidence(response, "blood counts")
    _token_stayed_home(fhir, elsewhere)
    if fault == "endless-pages":
        assert sum("page=" in p for p in fhir.paths()) == 2  # first page + 2 next: 3 in all


TRICKLE_HEAD = b'{"resourceType": "Bundle", "type": "searchset"'


def _trickling(fhir: FhirServer, pieces: int, framing: str = "content-length") -> Reply:
    headers = {"Content-Type": FHIR_JSON}
    if framing == "content-length":
        headers["Content-Length"] = str(len(TRICKLE_HEAD) + pieces + 1)
    return Reply(200, trickle(fhir, TRICKLE_HEAD, pieces), headers)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_body_that_trickles_in_is_abandoned_at_the_deadline(framing, make_app, fhir):
    """Headers at once, then one byte every 100 ms for 2.5 s: the answer is timely AND the
    service hangs up by its deadline instead of reading on in a fetch thread."""
    app = make_app(time_budget_ms=BUDGET_MS)
    call = _without_prefetch(app, BASELINE, fhir)
    fhir.serve(call.queries["bloodCounts"], _trickling(fhir, 25, framing))
    started = time.monotonic()
    response, seconds = _post(app.test_client(), call.service, call.body)
    assert seconds < BUDGET_MS / 1000 + MARGIN_S
    assert _cards(response) == UNAVAILABLE
    assert "time" in _evidence(response, "blood counts")
    while not fhir.aborted and time.monotonic() < started + 3:
        time.sleep(0.05)
    assert fhir.aborted, "the service kept reading after its deadline"
    assert fhir.aborted[0] - started < BUDGET_MS / 1000 + 0.5


def test_an_informational_outcome_in_a_searchset_does_not_hide_the_data(make_app, fhir):
    """Servers add `search.mode: outcome` OperationOutcomes with severity information (e.g. an
    ignored parameter); the results beside it are complete and must still be judged."""
    app = make_app(time_budget_ms=BUDGET_MS)
    call = _without_prefetch(app, {"counts": {"platelets": 40},
                                   "pgx": {"TPMT": {"phenotype": "poor"}}}, fhir)
    bundle = searchset(call.data["bloodCounts"])
    note = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "information", "code": "informational",
        "diagnostics": "Unknown search parameter _sort was ignored"}]}
    fhir.serve(call.queries["bloodCounts"], resource(dict(
        bundle, entry=[*bundle["entry"], {"resource": note, "search": {"mode": "outcome"}}])))
    response, _ = _post(app.test_client(), call.service, call.body)
    assert _cards(response) == Counter({("thiopurine-pgx", "critical"): 1,
                                        ("cytopenia", "critical"): 1})


def test_queries_run_concurrently(make_app, fhir):
    """Five or more absent keys, 200 ms each: well under the 1 s+ a serial fetch would take."""
    app = make_app(time_budget_ms=1500)
    call = _without_prefetch(app, BASELINE, fhir)
    assert len(call.queries) >= 5
    for key, reply in list(fhir.routes.items()):
        fhir.routes[key] = Reply(reply.status, reply.body, reply.headers, delay=0.2)
    response, seconds = _post(app.test_client(), call.service, call.body)
    assert _cards(response) == Counter()
    assert len(fhir.requests) == len(call.queries)
    assert seconds < 0.6
    assert fhir.max_in_flight >= 4


def test_an_allowlist_refuses_other_fhir_servers(make_app, fhir):
    app = make_app(fhir_allowlist=("https://fhir.hospital.example/r4",))
    call = _without_prefetch(app, BASELINE, fhir)
    response, _ = _post(app.test_client(), call.service, call.body)
    assert 400 <= response.status_code < 500
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert fhir.requests == []


def test_an_allowlist_admits_the_listed_server(make_app, fhir):
    app = make_app(fhir_allowlist=(fhir.base,), time_budget_ms=BUDGET_MS)
    call = _without_prefetch(app, BASELINE, fhir)
    response, _ = _post(app.test_client(), call.service, call.body)
    assert _cards(response) == Counter()
    _token_stayed_home(fhir)


@pytest.mark.parametrize("server", ["file:///etc/passwd", "ftp://127.0.0.1/fhir",
                                    "gopher://127.0.0.1:70/", "127.0.0.1/fhir"])
def test_only_http_fhir_servers_are_called(server, make_app, fhir):
    app = make_app()
    call = _without_prefetch(app, BASELINE, fhir)
    call.body["fhirServer"] = server
    response, _ = _post(app.test_client(), call.service, call.body)
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("fault", ["slow", "http-500"])
def test_strict_mode_answers_412_in_time(fault, make_app, fhir, elsewhere):
    app = make_app(time_budget_ms=BUDGET_MS, strict_412=True)
    call = _without_prefetch(app, BASELINE, fhir)
    FAULTS[fault][0](fhir, elsewhere, call.queries["bloodCounts"],
                     searchset(call.data["bloodCounts"]))
    response, seconds = _post(app.test_client(), call.service, call.body)
    assert seconds < BUDGET_MS / 1000 + MARGIN_S
    assert response.status_code == 412
    outcome_ = response.get_json()
    assert outcome_["resourceType"] == "OperationOutcome"
    assert "blood counts" in outcome_["issue"][0]["diagnostics"]


# --- issue 12: decoding, escaping errors, starvation, fan-out, paths, bytes ------------------

SELECT = "thiopurine-order-select"
TWO_CRITICAL = {"counts": {"platelets": 40}, "pgx": {"TPMT": {"phenotype": "poor"}}}
FEBUXOSTAT = {"medications": [{"drug": "febuxostat", "strength": 40, "tablets": 1}]}
PLATELETS_40 = {"counts": {"platelets": 40}}


def _fetched(app, given: dict, fhir: FhirServer) -> tuple[dict, dict[str, str]]:
    """(order-select body without prefetch, query URLs by key): the server serves the data."""
    call = _without_prefetch(app, given, fhir)
    assert call.service == SELECT
    return call.body, call.queries


def _prefetched(app, given: dict) -> dict:
    """The order-select request with its whole prefetch."""
    knowledge = app.config["KNOWLEDGE"]
    return apply(Scenario(knowledge), given).body(knowledge)


def _gzipped(reply: Reply) -> Reply:
    return Reply(reply.status, gzip.compress(reply.body),
                 {**reply.headers, "Content-Encoding": "gzip"})


def test_a_gzip_compressing_server_gives_the_cards(make_app, fhir):
    """Servers behind proxies compress: every answer is gzip here, and the febuxostat card
    must come from it, not a data-unavailable warning."""
    app = make_app(time_budget_ms=HEALTHY_BUDGET_MS)
    body, _ = _fetched(app, FEBUXOSTAT, fhir)
    fhir.routes = {key: _gzipped(reply) for key, reply in fhir.routes.items()}
    response, _ = _post(app.test_client(), SELECT, body)
    assert _cards(response) == Counter({("xanthine-oxidase-interaction", "critical"): 1})
    _token_stayed_home(fhir)


def test_a_zip_bomb_is_cut_at_the_byte_cap(make_app, fhir):
    """20 MB of JSON whitespace in ~20 kB of gzip: the cap counts decoded bytes, so decoding
    stops at max_fhir_bytes instead of inflating it all."""
    app = make_app(time_budget_ms=BUDGET_MS, max_fhir_bytes=1_000_000)
    body, queries = _fetched(app, BASELINE, fhir)
    bomb = gzip.compress(TRICKLE_HEAD + b" " * 20_000_000 + b"}", compresslevel=9)
    assert len(bomb) < 1_000_000  # the compressed answer alone is under the cap
    fhir.serve(queries["bloodCounts"], Reply(200, bomb, {"Content-Type": FHIR_JSON,
                                                         "Content-Encoding": "gzip"}))
    response, seconds = _post(app.test_client(), SELECT, body)
    assert seconds < BUDGET_MS / 1000 + MARGIN_S
    assert _cards(response) == UNAVAILABLE
    assert "exceeded 1000000 bytes" in _evidence(response, "blood counts")


def _short_body(fhir: FhirServer) -> Reply:
    """Content-Length 1000, ten bytes, then the server hangs up (urllib3 ProtocolError)."""
    return Reply(200, [TRICKLE_HEAD[:10]], {"Content-Type": FHIR_JSON, "Content-Length": "1000",
                                            "Connection": "close"})


def _stalled_body(fhir: FhirServer) -> Reply:
    """Ten bytes, then silence past the deadline (urllib3 ReadTimeoutError from read1)."""
    return Reply(200, trickle(fhir, TRICKLE_HEAD[:10], 1, pause=5),
                 {"Content-Type": FHIR_JSON, "Content-Length": "1000"})


def _bad_chunk_size(fhir: FhirServer) -> Reply:
    """Chunked framing with a chunk size that is not hexadecimal (urllib3 ProtocolError)."""
    return Reply(200, [b"zz\r\n{}\r\n"], {"Content-Type": FHIR_JSON, "Content-Length": "8",
                                          "Transfer-Encoding": "chunked", "Connection": "close"})


def _bad_gzip(fhir: FhirServer) -> Reply:
    return Reply(200, b"this is not gzip", {"Content-Type": FHIR_JSON,
                                            "Content-Encoding": "gzip"})


BROKEN_ANSWERS = {"short-body": _short_body, "stalled-body": _stalled_body,
                  "bad-chunk-size": _bad_chunk_size, "bad-gzip": _bad_gzip}


@pytest.mark.parametrize("fault", sorted(BROKEN_ANSWERS))
def test_a_broken_answer_costs_only_its_key(fault, make_app, fhir):
    """The medications query breaks in a way only urllib3 or http.client reports; the critical
    cards computed from the prefetched counts and PGx result must still come."""
    app = make_app(time_budget_ms=BUDGET_MS)
    body = _prefetched(app, TWO_CRITICAL)
    queries = _queries(app, SELECT, dict(body, fhirServer=fhir.base))
    body["fhirServer"] = fhir.base
    del body["prefetch"]["medications"]
    fhir.serve(queries["medications"], BROKEN_ANSWERS[fault](fhir))
    response, seconds = _post(app.test_client(), SELECT, body)
    assert seconds < BUDGET_MS / 1000 + MARGIN_S
    assert _cards(response) == Counter({("cytopenia", "critical"): 1,
                                        ("thiopurine-pgx", "critical"): 1,
                                        ("data-unavailable", "warning"): 1})
    assert "all checks" not in response.get_data(as_text=True)
    _evidence(response, "current medications")


def test_a_bug_while_fetching_one_key_costs_only_that_key(make_app, fhir, monkeypatch):
    """Not a network error at all (here a KeyError from reading the search): still that key's
    failure alone, never the generic 'all checks' card."""
    follow = FhirClient.follow

    def broken(self, url, resources):
        if "MedicationRequest" in url:
            raise KeyError("a bug")
        return follow(self, url, resources)

    monkeypatch.setattr(FhirClient, "follow", broken)
    app = make_app(time_budget_ms=BUDGET_MS)
    body = _prefetched(app, TWO_CRITICAL)
    body["fhirServer"] = fhir.base
    del body["prefetch"]["medications"]
    response, _ = _post(app.test_client(), SELECT, body)
    assert _cards(response) == Counter({("cytopenia", "critical"): 1,
                                        ("thiopurine-pgx", "critical"): 1,
                                        ("data-unavailable", "warning"): 1})
    assert "unexpected error" in _evidence(response, "current medications")


def test_an_unusable_host_name_costs_only_the_fetched_keys(make_app):
    """A 300-character label makes urllib3 raise LocationParseError: every fetched key fails,
    and the critical cards from the prefetch still come."""
    app = make_app(time_budget_ms=BUDGET_MS)
    body = _prefetched(app, TWO_CRITICAL)
    body["fhirServer"] = f"http://{'a' * 300}.example/fhir"
    del body["prefetch"]["medications"]
    response, _ = _post(app.test_client(), SELECT, body)
    assert _cards(response) == Counter({("cytopenia", "critical"): 1,
                                        ("thiopurine-pgx", "critical"): 1,
                                        ("data-unavailable", "warning"): 1})
    assert "could not be reached" in _evidence(response, "current medications")


def _wait_for_hang_ups(fhir: FhirServer, count: int, started: float) -> None:
    while len(fhir.aborted) < count and time.monotonic() < started + 3:
        time.sleep(0.05)


def test_headers_that_trickle_in_are_cut_at_the_deadline(make_app, fhir):
    """The status line and headers one byte every 50 ms, never ending: the service must hang up
    by its deadline (freeing the fetch thread), not read headers for as long as they come."""
    app = make_app(time_budget_ms=BUDGET_MS)
    body, queries = _fetched(app, BASELINE, fhir)
    fhir.serve(queries["bloodCounts"], Reply(trickle_headers=True))
    started = time.monotonic()
    response, seconds = _post(app.test_client(), SELECT, body)
    assert seconds < BUDGET_MS / 1000 + MARGIN_S
    assert _cards(response) == UNAVAILABLE
    assert "time" in _evidence(response, "blood counts")
    _wait_for_hang_ups(fhir, 1, started)
    assert fhir.aborted, "the service kept reading headers after its deadline"
    assert fhir.aborted[0] - started < BUDGET_MS / 1000 + 0.3


def test_an_answer_cut_short_at_the_deadline_is_never_taken_for_data(fhir):
    """Cut off in its headers, http.client sees a 200 with headers ending there and an empty
    body: that must read as the deadline, not as an answer."""
    fhir.serve(f"{fhir.base}/Patient/pt-1", Reply(trickle_headers=True))
    client = FhirClient(fhir.base, TOKEN, Settings(), time.monotonic() + 0.2)
    with pytest.raises(FetchError, match="the time budget ran out"):
        client.read("Patient/pt-1")


@pytest.mark.parametrize("part", ["headers", "body"])
def test_trickling_servers_do_not_starve_other_calls(part, make_app, fhir, elsewhere):
    """Three calls naming a server that trickles its headers or body (a GET per query each,
    more than the old pool of 16 threads) are in flight when a call naming a healthy server
    comes: it must get all its data in time. Every hostile connection is dropped by its call's
    deadline."""
    app = make_app(time_budget_ms=BUDGET_MS)
    hostile, queries = _fetched(app, BASELINE, fhir)
    gets = 3 * len(queries)
    fhir.respond = lambda path: (Reply(trickle_headers=True) if part == "headers"
                                 else _trickling(fhir, 50))
    healthy, _ = _fetched(app, BASELINE, elsewhere)
    started = time.monotonic()
    with ThreadPoolExecutor(3) as callers:
        calls = [callers.submit(_post, app.test_client(), SELECT, hostile) for _ in range(3)]
        while len(fhir.requests) < gets and time.monotonic() < started + 1:
            time.sleep(0.01)  # the hostile GETs hold their threads now
        response, seconds = _post(app.test_client(), SELECT, healthy)
        assert all(_cards(c.result()[0]) == UNAVAILABLE for c in calls)
    assert _cards(response) == Counter(), response.get_json()["cards"][0]["detail"]
    assert seconds < BUDGET_MS / 1000 + MARGIN_S
    _wait_for_hang_ups(fhir, len(fhir.requests), started)
    assert len(fhir.aborted) == len(fhir.requests) == gets
    assert max(fhir.aborted) - started < 2 * BUDGET_MS / 1000 + 0.3


def test_the_fan_out_of_one_call_is_capped_and_every_excess_reported(make_app, fhir):
    """30 active orders naming 30 different Medications: with a cap of 12 GETs the server sees
    12 (the queries first, then Medications) and each Medication not fetched is named."""
    app = make_app(time_budget_ms=HEALTHY_BUDGET_MS, max_fhir_requests=12)
    body, queries = _fetched(app, BASELINE, fhir)
    orders = [{"resourceType": "MedicationRequest", "id": f"mr-{i}", "status": "active",
               "intent": "order", "subject": {"reference": "Patient/pt-thio-01"},
               "medicationReference": {"reference": f"Medication/med-{i}"}} for i in range(30)]
    fhir.serve(queries["medications"], resource(searchset(orders)))
    for i in range(30):
        fhir.serve(f"{fhir.base}/Medication/med-{i}", resource(
            {"resourceType": "Medication", "id": f"med-{i}", "code": {"text": "paracetamol"}}))
    response, _ = _post(app.test_client(), SELECT, body)
    assert len(fhir.requests) == 12, fhir.paths()
    detail = "\n".join(c["detail"] for c in response.get_json()["cards"])
    assert detail.count("cap of 12 FHIR requests") == 30 - (12 - len(queries)), detail
    _token_stayed_home(fhir)


def test_the_bytes_of_one_call_are_capped_across_all_answers(make_app, fhir):
    """An answer of ~30 kB per query against a budget of 100 kB for the whole call: the keys
    read after the budget is spent fail, and say so; memory is bounded by bytes, not only
    time."""
    app = make_app(time_budget_ms=HEALTHY_BUDGET_MS, max_fhir_total_bytes=100_000)
    body, queries = _fetched(app, BASELINE, fhir)
    filler = [{"resourceType": "Basic", "id": f"b-{i}", "code": {"text": "x" * 280}}
              for i in range(100)]
    for url in queries.values():
        fhir.serve(url, resource(searchset(filler)))
    response, _ = _post(app.test_client(), SELECT, body)
    detail = "\n".join(c["detail"] for c in response.get_json()["cards"])
    assert len(queries) - 4 <= detail.count("exceeded 100000 bytes in all") <= len(queries) - 2


def _escaping_medications(fhir: FhirServer, url: str) -> None:
    refs = ["Medication/../../admin/secrets", "Medication/%2e%2e/%2e%2e/admin",
            "Medication/m1?_format=xml&patient=pt-2", f"{fhir.origin}/admin/Medication/m2"]
    fhir.serve(url, resource(searchset([
        {"resourceType": "MedicationRequest", "id": f"mr-{i}", "status": "active",
         "intent": "order", "subject": {"reference": "Patient/pt-thio-01"},
         "medicationReference": {"reference": ref}} for i, ref in enumerate(refs)])))


def test_references_from_the_server_never_leave_its_base(make_app, fhir):
    """With an allow-list, references in the server's own answers that would climb out of the
    base, or add parameters, are refused (and reported); no GET goes outside /fhir/."""
    app = make_app(time_budget_ms=BUDGET_MS, fhir_allowlist=(fhir.base,))
    body, queries = _fetched(app, BASELINE, fhir)
    _escaping_medications(fhir, queries["medications"])
    response, _ = _post(app.test_client(), SELECT, body)
    assert response.status_code == 200
    assert all(p.startswith("/fhir/") and ".." not in p and "%2e" not in p.lower()
               for p in fhir.paths()), fhir.paths()
    assert not [p for p in fhir.paths() if p.startswith("/fhir/Medication/")]
    detail = "\n".join(c["detail"] for c in response.get_json()["cards"])
    assert detail.count("was not followed") == 4


def test_a_next_link_outside_the_base_is_refused(make_app, fhir):
    app = make_app(time_budget_ms=BUDGET_MS)
    body, queries = _fetched(app, BASELINE, fhir)
    bundle = _prefetched(app, BASELINE)["prefetch"]["bloodCounts"]
    outside = f"{fhir.origin}/admin/Observation?page=2"
    fhir.serve(outside, resource(searchset([])))
    fhir.serve(queries["bloodCounts"], resource(dict(bundle, link=[
        {"relation": "next", "url": outside}])))
    response, _ = _post(app.test_client(), SELECT, body)
    assert _cards(response) == UNAVAILABLE
    assert "outside fhirServer" in _evidence(response, "blood counts")
    assert not [p for p in fhir.paths() if not p.startswith("/fhir/")]


@pytest.mark.parametrize("field, value", [
    ("patientId", "pt-thio-01&patient=pt-2"), ("patientId", ".."),
    ("patientId", "../../admin"), ("patientId", "x" * 65), ("userId", "Practitioner/a&b=c"),
    ("medicationReference", "Medication/../../admin"),
    ("medicationReference", "Medication/m1?patient=pt-2"),
    ("fhirServer", "http://user:secret@127.0.0.1:9/fhir"),
])
def test_ids_references_and_userinfo_are_refused_before_any_fetch(field, value, make_app, fhir):
    app = make_app(time_budget_ms=BUDGET_MS)
    body, _ = _fetched(app, BASELINE, fhir)
    if field == "medicationReference":
        draft = body["context"]["draftOrders"]["entry"][0]["resource"]
        draft.pop("medicationCodeableConcept", None)
        draft["medicationReference"] = {"reference": value}
    elif field == "fhirServer":
        body["fhirServer"] = fhir.base.replace("127.0.0.1", "user:secret@127.0.0.1")
    else:
        body["context"][field] = value
    response, _ = _post(app.test_client(), SELECT, body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert fhir.requests == []


def _nested(depth: int) -> dict:
    extension = {"url": "http://example.org/x", "valueString": "deep"}
    for _ in range(depth):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    return extension


def test_a_deeply_nested_resource_from_the_server_is_read_not_a_crash(make_app, fhir):
    """A legal `extension` nested 126 deep on the latest platelet count: no rule reads it, so it
    voids nothing (no RecursionError, no generic 'all checks' card): the critical card comes."""
    app = make_app(time_budget_ms=HEALTHY_BUDGET_MS)
    call = _without_prefetch(app, PLATELETS_40, fhir)
    body, queries = call.body, call.queries
    counts = searchset(call.data["bloodCounts"])
    counts["entry"][0]["resource"]["extension"] = [_nested(126)]
    fhir.serve(queries["bloodCounts"], Reply(200, json.dumps(counts).encode(),
                                             {"Content-Type": FHIR_JSON}))
    response, _ = _post(app.test_client(), SELECT, body)
    assert _cards(response) == Counter({("cytopenia", "critical"): 1})


ALLOPURINOL = {"medications": [{"drug": "allopurinol", "strength": 100, "tablets": 3}]}


def _dstu2(app, fhir: FhirServer, medication_orders: list[dict]) -> dict:
    """The allopurinol patient on a DSTU2 server: MedicationRequest searches answer 404 (the
    server's unknown-type answer), the same search for MedicationOrder gives `medication_orders`
    (the key's fallback in services.yaml)."""
    call = _without_prefetch(app, ALLOPURINOL, fhir)
    del fhir.routes[query_key(call.queries["medications"])]
    client = FhirClient(fhir.base, None, app.config["SETTINGS"], 0)
    fallback = app.config["KNOWLEDGE"].fallbacks["medications"].replace(
        "{{context.patientId}}", call.body["context"]["patientId"])
    fhir.serve(client.url_for(fallback), resource(searchset(medication_orders)))
    return call.body


def test_a_dstu2_server_is_asked_for_medication_orders(make_app, fhir):
    """The sandbox's default server is DSTU2: the allopurinol the patient takes is a
    MedicationOrder, and the interaction card must come from it, not 'checks incomplete'."""
    app = make_app(time_budget_ms=HEALTHY_BUDGET_MS)
    order = Factory(app.config["KNOWLEDGE"]).order(drug="allopurinol", strength=100, tablets=3,
                                                   shape="DSTU2", status="active")
    body = _dstu2(app, fhir, [order])
    response, _ = _post(app.test_client(), SELECT, body)
    assert _cards(response) == Counter({("xanthine-oxidase-interaction", "warning"): 1})
    card = response.get_json()["cards"][0]
    assert "allopurinol" in card["detail"].lower()
    assert any(p.startswith("/fhir/MedicationOrder?") for p in fhir.paths())
    _token_stayed_home(fhir)


def test_when_the_fallback_is_refused_too_the_first_refusal_is_reported(make_app, fhir):
    app = make_app(time_budget_ms=HEALTHY_BUDGET_MS)
    body = _dstu2(app, fhir, [])
    fhir.routes = {key: reply for key, reply in fhir.routes.items()
                   if "MedicationOrder" not in key[0]}
    response, _ = _post(app.test_client(), SELECT, body)
    assert _cards(response) == UNAVAILABLE
    assert "HTTP 404" in _evidence(response, "current medications")
    assert any(p.startswith("/fhir/MedicationOrder?") for p in fhir.paths())


def test_a_server_that_times_out_is_not_asked_the_fallback(make_app, fhir):
    """Only a refusal means 'not this resource type'; a slow server is not asked again."""
    app = make_app(time_budget_ms=BUDGET_MS)
    body = _dstu2(app, fhir, [])
    call_queries = _queries(app, SELECT, body)
    fhir.serve(call_queries["medications"], Reply(200, trickle(fhir, TRICKLE_HEAD, 50, 0.1),
                                                  {"Content-Type": FHIR_JSON}))
    response, _ = _post(app.test_client(), SELECT, body)
    assert _cards(response) == UNAVAILABLE
    assert not any(p.startswith("/fhir/MedicationOrder?") for p in fhir.paths())

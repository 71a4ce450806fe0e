"""A real, scriptable FHIR server on 127.0.0.1 for fault tests and the load test.

`FhirServer.routes` maps a query (path + parameters) to what to answer; `respond` may be replaced
to script a fault. Every request is recorded (path and Authorization header) so tests can check
who was called with what. Handler threads are daemons: a stuck one never blocks shutdown.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import orjson

FHIR_JSON = "application/fhir+json"


@dataclass
class Reply:
    status: int = 200
    body: bytes | Iterable[bytes] = b""   # an iterable is streamed piece by piece: chunked,
    #                                       or raw if the headers give a Content-Length
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0                    # seconds to wait before the status line
    trickle_headers: bool = False         # headers one byte every 50 ms, never ending


def resource(document: object, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(document), {"Content-Type": FHIR_JSON})


def outcome(text: str, status: int = 200) -> Reply:
    return resource({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "processing", "diagnostics": text}]}, status)


def searchset(resources: list[dict], next_url: str | None = None) -> dict:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "link": links, "entry": [{"resource": r} for r in resources]}


def trickle(server: FhirServer, head: bytes, pieces: int, pause: float = 0.1) -> Iterator[bytes]:
    """`head`, then a space (JSON whitespace) every `pause` s, then `}`; cut short by stop()."""
    yield head
    for _ in range(pieces):
        if server.closing.wait(pause):
            return
        yield b" "
    yield b"}"


def query_key(url: str) -> tuple[str, tuple]:
    """A query's identity, whatever the order and quoting of its parameters."""
    parts = urlsplit(url)
    return parts.path.rstrip("/"), tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))


@dataclass
class Seen:
    path: str
    authorization: str | None


class FhirServer:
    def __init__(self) -> None:
        self.routes: dict[tuple, Reply] = {}
        self.requests: list[Seen] = []
        self.aborted: list[float] = []    # when a client hung up while we were still sending
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.respond: Callable[[str], Reply] = self.route
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.origin = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.base = f"{self.origin}/fhir"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})

    def start(self) -> FhirServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends trickles (their connections close) and waits, bounded, for handlers to finish."""
        self.closing.set()
        for _ in range(40):
            if not self.in_flight:
                break
            time.sleep(0.05)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def route(self, path: str) -> Reply:
        reply = self.routes.get(query_key(path))
        return reply if reply is not None else outcome(f"no such query: {path}", 404)

    def serve(self, url: str, reply: Reply) -> None:
        self.routes[query_key(url)] = reply

    def paths(self) -> list[str]:
        with self.lock:
            return [seen.path for seen in self.requests]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections under the load test
    owner: FhirServer

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hung up: expected
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        owner: FhirServer = self.server.owner
        with owner.lock:
            owner.requests.append(Seen(self.path, self.headers.get("Authorization")))
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            self._send(owner.respond(self.path))
        except ConnectionError:
            owner.aborted.append(time.monotonic())
            self.close_connection = True
        finally:
            with owner.lock:
                owner.in_flight -= 1

    def _send(self, reply: Reply) -> None:
        self.server.owner.closing.wait(reply.delay)  # stop() cuts a delay short
        if reply.trickle_headers:  # until the client hangs up (a write then fails) or stop()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Pad: ")
            while not self.server.owner.closing.wait(0.05):
                self.wfile.write(b"x")
                self.wfile.flush()
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if isinstance(reply.body, bytes):
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        chunked = "Content-Length" not in reply.headers
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in reply.body:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            self.wfile.flush()
        if self.server.owner.closing.is_set():
            self.close_connection = True  # cut short: the client sees the body end early
        elif chunked:
            self.wfile.write(b"0\r\n\r\n")

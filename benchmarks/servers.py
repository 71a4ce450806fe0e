"""The processes under test (service, floor), what /proc says about them, and a FHIR stub.

CPU is read from the gunicorn workers' /proc/<pid>/stat (utime + stime cover all of a process's
threads, exited ones included), so the client's own CPU never counts against the server.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # the name may hold spaces; fields follow ')'


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # a process that exited while we looked
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        total += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14 and 15)
    return total / CLOCK_TICKS


class LoadMeter:
    """How busy the machine was with processes other than ours (the benchmark, its servers)
    over an interval, as a share of all cores: other sessions on a shared host skew latency."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.began = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        values = [int(v) for v in Path("/proc/stat").read_text().split()[1:9]]
        busy = (sum(values) - values[3] - values[4]) / CLOCK_TICKS  # all but idle, iowait
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system + cpu_seconds(self.pids)

    def other_percent(self) -> float:
        wall, busy, ours = (b - a for a, b in zip(self.began, self._sample(), strict=True))
        return max(0.0, (busy - ours) / (wall * (os.cpu_count() or 1)) * 100)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size: RSS with pages shared with the master and siblings split."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    workers: list[int] = field(default_factory=list)
    startup_s: float = 0.0

    def stop(self) -> None:
        """SIGTERM the master (gunicorn stops its workers gracefully); SIGKILL the group
        we created if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def start(name: str, command: list[str], env: dict[str, str], log: Path, port: int,
          probe: tuple[str, bytes], workers: int, timeout_s: float = 60.0) -> Server:
    """Start a server and time it from process start to the first 200 on a POST."""
    started = time.perf_counter()
    # A new session: Ctrl-C in the terminal reaches only the benchmark, which then stops the
    # servers in order, instead of racing them.
    with log.open("wb") as output:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, env=env, stdout=output, stderr=output,
                                   start_new_session=True)
    server = Server(name, process, port)
    deadline = started + timeout_s
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; see {log.name}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            status, _ = post(conn, *probe)
            conn.close()
            if status == 200:
                server.startup_s = time.perf_counter() - started
                break
        except OSError:
            pass  # not listening yet
        time.sleep(0.01)
    else:
        server.stop()
        raise RuntimeError(f"{name} gave no 200 within {timeout_s:.0f} s; see {log.name}")
    server.workers = _wait_for_workers(process.pid, workers)
    return server


def _wait_for_workers(master: int, count: int, timeout_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = children(master)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"only {len(children(master))} of {count} workers came up")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a burst of new connections from the service's
    # fetch threads would overflow it, and a dropped SYN is retried only after a second.
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client closing a kept-alive connection is normal, not worth a traceback


def _query(url: str) -> tuple[str, frozenset[str]]:
    """("Observation", {codes}) of a search, ("Patient/x", {}) of a read, from any FHIR URL."""
    parts = urlsplit(url)
    path = parts.path.split("/r4/", 1)[-1].strip("/")
    codes = parse_qs(parts.query).get("code", [""])[0]
    return path, frozenset(c for c in codes.split(",") if c)


class FhirStub:
    """A FHIR server on loopback that answers the service's prefetch queries from `documents`
    (workloads.fhir_documents) after `latency_s`, and records how many queries overlapped."""

    def __init__(self, documents: list[bytes], latency_s: float) -> None:
        self.documents: dict[str, bytes] = {}                      # reads by "Type/id"
        self.searches: list[tuple[str, frozenset[str], bytes]] = []  # by type and codes
        for raw in documents:
            document = json.loads(raw)
            if document["resourceType"] != "Bundle":
                self.documents[f"{document['resourceType']}/{document['id']}"] = raw
            for link in document.get("link", []):
                if link["relation"] == "self":
                    self.searches.append((*_query(link["url"]), raw))
        self.latency_s = latency_s
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.queries = 0
        self.durations: list[float] = []
        self.httpd = _QuietServer((HOST, 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}/r4"

    def __enter__(self) -> FhirStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = self.queries = 0
            self.durations = []

    def route(self, target: str) -> tuple[int, bytes]:
        """A read by `Type/id`; a search by type and `code` against the documents' self
        links; a search nothing matches gets an empty searchset, as from a real server."""
        kind, codes = _query(target)
        if kind in self.documents:
            return 200, self.documents[kind]
        for doc_kind, doc_codes, body in self.searches:
            if doc_kind == kind and (codes & doc_codes or not codes and not doc_codes):
                return 200, body
        if "/" in kind:
            return 404, json.dumps({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "not-found"}]}).encode()
        return 200, json.dumps({"resourceType": "Bundle", "type": "searchset",
                                "total": 0}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real FHIR server offers
            # Headers and body go out in two writes; with Nagle on, the body waits for the
            # client's delayed ACK (40 ms), which real servers (tcp_nodelay) do not do.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                began = time.perf_counter()
                with stub.lock:
                    stub.in_flight += 1
                    stub.queries += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    time.sleep(stub.latency_s)
                    status, body = stub.route(self.path)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with stub.lock:
                        stub.in_flight -= 1
                        stub.durations.append(time.perf_counter() - began)

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per query would drown the report

        return Handler

"""Bounded load test of the service under its production server (gunicorn via the CLI).

    .venv/bin/python benchmarks/load_test.py [--seconds 30] [--clients 8] [--workers 2]

Starts `azathioprine-cds serve` on a free loopback port with its store in a temp dir, and a
local fake FHIR server (tests/fhir_server.py). Concurrent clients then mix hook calls (requests
built with the test factories, with prefetch, with the prefetch fetched from the fake server, and
with a FHIR server that answers 500) and feedback posts, each with a unique card uuid. Records
status codes, latency p50/p99 and throughput; samples the workers' RSS (from /proc) after a
warm-up and at the end; afterwards checks every acknowledged feedback item is in the SQLite store.

Exits non-zero on any 5xx or transport error, a worker that died or logged an internal error,
memory growth > 10%, a hook answer that differs from its single-client answer, or an
acknowledged feedback item missing from the store.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_service.config import Settings  # noqa: E402
from cds_service.fhir_client import FhirClient  # noqa: E402
from cds_service.knowledge import load_knowledge  # noqa: E402
from tests.factories import Scenario, apply  # noqa: E402
from tests.fhir_server import FhirServer, Reply, resource, searchset  # noqa: E402

# The baseline patient of tests/factories.py, changed as tests/cases/README.md describes.
POOR = {"TPMT": {"phenotype": "poor"}}
PREFETCHED = {
    "baseline": {},
    "tpmt-poor": {"pgx": POOR},
    "febuxostat-active": {"medications": ["febuxostat"]},
    "platelets-49": {"counts": {"platelets": 49}},
    "order-sign-tpmt-intermediate-azathioprine-and-allopurinol": {
        "hook": "order-sign", "pgx": {"TPMT": {"diplotype": "*1/*3A"}},
        "drafts": ["azathioprine", {"drug": "allopurinol", "strength": 100, "tablets": 1}]},
    "medication-prescribe-stu3-tpmt-poor": {"hook": "medication-prescribe",
                                            "draft": {"shape": "STU3"}, "pgx": POOR},
}
FETCHED = {"baseline": {}, "platelets-40-tpmt-poor": {"counts": {"platelets": 40}, "pgx": POOR}}
FEEDBACK_SHARE = 0.3
MAX_GROWTH = 0.10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hook_call(given: dict, knowledge) -> tuple[str, dict]:
    """(service, body) of the baseline patient changed as `given` says."""
    scenario = apply(Scenario(knowledge), given)
    return scenario.service, scenario.body(knowledge)


def without_prefetch(given: dict, server: FhirServer, knowledge) -> tuple[str, dict]:
    """A request whose prefetch the fake server now holds instead."""
    service, body = hook_call(given, knowledge)
    prefetch = body.pop("prefetch")
    body["fhirServer"] = server.base
    body["fhirAuthorization"] = {"access_token": "load-test", "token_type": "Bearer",
                                 "expires_in": 300, "scope": "patient/*.read", "subject": "cds"}
    client = FhirClient(server.base, None, Settings(), 0)
    for key, template in knowledge.queries(service).items():
        query = template.replace("{{context.patientId}}", body["context"]["patientId"])
        server.serve(client.url_for(query), resource(prefetch.get(key) or searchset([])))
    return service, body


def hook_calls(healthy: list[FhirServer], failing: FhirServer) -> list[tuple[str, str, dict]]:
    """(label, service, body) for every hook call in the mix; one healthy server per fetched
    request, as the requests share a patient (and so their query URLs)."""
    knowledge = load_knowledge()
    calls = []
    for name, given in PREFETCHED.items():
        calls.append((f"prefetch:{name}", *hook_call(given, knowledge)))
    for (name, given), server in zip(FETCHED.items(), healthy, strict=True):
        calls.append((f"fetch:{name}", *without_prefetch(given, server, knowledge)))
    service, body = without_prefetch(FETCHED["baseline"], failing, knowledge)
    calls.append(("fetch-500:baseline", service, body))
    return calls


def feedback_body() -> tuple[str, dict]:
    card = str(uuid.uuid4())
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    item = {"card": card, "outcomeTimestamp": stamp}
    if random.random() < 0.5:
        item |= {"outcome": "accepted", "acceptedSuggestions": [{"id": str(uuid.uuid4())}]}
    else:
        item |= {"outcome": "overridden", "overrideReason": {
            "reason": {"code": "benefit-outweighs-risk", "system": "http://example.org/override"},
            "userComment": "load test"}}
    return card, {"feedback": [item]}


def card_key(response: requests.Response) -> tuple:
    try:
        cards = response.json()["cards"]
        return tuple(sorted((c["source"]["topic"]["code"], c["indicator"]) for c in cards))
    except (ValueError, KeyError, TypeError):
        return ("unreadable",)


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {"hook": [], "feedback": []}
        self.status: Counter = Counter()
        self.errors: Counter = Counter()
        self.inconsistent: Counter = Counter()
        self.example: dict[str, str] = {}  # label -> one differing answer's card summaries
        self.acked: list[str] = []


def client_loop(url: str, calls, reference: dict, results: Results, until: float,
                seed: int) -> None:
    rng, session = random.Random(seed), requests.Session()
    for _ in range(1_000_000):  # bounded in count as well as in time
        if time.monotonic() >= until:
            break
        card = None
        if rng.random() < FEEDBACK_SHARE:
            kind = "feedback"
            card, body = feedback_body()
            target = f"{url}/cds-services/thiopurine-order-select/feedback"
        else:
            kind = "hook"
            label, service, body = rng.choice(calls)
            target = f"{url}/cds-services/{service}"
        started = time.perf_counter()
        try:
            response = session.post(target, json=body, timeout=15)
        except requests.RequestException as error:
            with results.lock:
                results.errors[type(error).__name__] += 1
            continue
        elapsed = time.perf_counter() - started
        with results.lock:
            results.latency[kind].append(elapsed)
            results.status[(kind, response.status_code)] += 1
            if kind == "feedback" and response.status_code == 200:
                results.acked.append(card)
            if kind == "hook" and response.status_code == 200 and (
                    card_key(response) != reference[label]):
                results.inconsistent[label] += 1
                results.example.setdefault(label, " | ".join(
                    c["summary"] for c in response.json()["cards"]))


def run_clients(url, calls, reference, results, seconds, clients) -> None:
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=client_loop, daemon=True,
                                args=(url, calls, reference, results, until, i))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)


def workers(master: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{master}/task").iterdir():
        children += [int(p) for p in (task / "children").read_text().split()]
    return sorted(children)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_ready(url: str, process: subprocess.Popen, expected_workers: int) -> None:
    for _ in range(300):  # up to 30 s
        if process.poll() is not None:
            raise SystemExit(f"the service exited at start-up (code {process.returncode})")
        try:
            if requests.get(f"{url}/cds-services", timeout=1).status_code == 200 and len(
                    workers(process.pid)) >= expected_workers:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit("the service did not start within 30 s")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000 if ordered else 0.0


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # gunicorn's graceful shutdown of its workers
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured run (default 30)")
    parser.add_argument("--warmup", type=float, default=15.0,
                        help="unmeasured load first, so caches and thread pools fill (15 s)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cds-load-"))
    db_path, log_path = tmp / "store.sqlite3", tmp / "service.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, CDS_DB_PATH=str(db_path))
    command = [str(Path(sys.executable).parent / "azathioprine-cds"), "serve", "--host",
               "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
               "--threads", str(args.threads)]
    healthy = [FhirServer().start() for _ in FETCHED]
    failing = FhirServer().start()
    failing.respond = lambda path: Reply(500, b"down", {"Content-Type": "text/plain"})
    calls = hook_calls(healthy, failing)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=tmp, start_new_session=True)
    try:
        wait_ready(url, process, args.workers)
        reference = {label: card_key(requests.post(f"{url}/cds-services/{service}", json=body,
                                                   timeout=15))
                     for label, service, body in calls}
        warm = Results()
        run_clients(url, calls, reference, warm, args.warmup, args.clients)
        pids = workers(process.pid)
        rss_start = {pid: rss_kib(pid) for pid in pids}
        results = Results()
        started = time.monotonic()
        run_clients(url, calls, reference, results, args.seconds, args.clients)
        elapsed = time.monotonic() - started
        pids_end = workers(process.pid)
        rss_end = {pid: rss_kib(pid) for pid in pids_end}
    finally:
        stop(process)
        for server in [*healthy, failing]:
            server.stop()

    acked = warm.acked + results.acked
    with sqlite3.connect(db_path) as connection:
        stored = {row[0] for row in connection.execute("SELECT card FROM feedback")}
    missing = [card for card in acked if card not in stored]
    log_text = log_path.read_text(errors="replace")
    internal = log_text.count("unexpected error") + log_text.count("Traceback")
    restarts = log_text.count("Booting worker") - args.workers

    total = sum(results.status.values())
    print(f"service: {' '.join(command[1:])}")
    print(f"measured {elapsed:.1f} s, {args.clients} clients, {len(calls)} hook variants, "
          f"{FEEDBACK_SHARE:.0%} feedback")
    print(f"requests: {total}  throughput: {total / elapsed:.1f} req/s")
    for kind, values in results.latency.items():
        codes = {code: n for (k, code), n in sorted(results.status.items()) if k == kind}
        print(f"  {kind:9s} n={len(values):6d}  p50={percentile(values, 0.5):7.1f} ms  "
              f"p99={percentile(values, 0.99):7.1f} ms  status={codes}")
    print(f"transport errors: {dict(results.errors) or 0}")
    print(f"answers differing from the single-client answer: {dict(results.inconsistent) or 0}")
    for label, summaries in results.example.items():
        print(f"  e.g. {label}: {reference[label]} became: {summaries}")
    growth = (sum(rss_end.values()) - sum(rss_start.values())) / max(1, sum(rss_start.values()))
    print(f"worker RSS (KiB) after warm-up: {rss_start}  end: {rss_end}  growth: {growth:+.1%}")
    print(f"feedback acknowledged: {len(acked)}  in store: {len(stored)}  missing: {len(missing)}")
    print(f"internal errors in the service log: {internal}  worker restarts: {restarts}")

    failures = []
    if any(code >= 500 for _, code in results.status) or any(
            code >= 500 for _, code in warm.status):
        failures.append("5xx answers")
    if results.errors or warm.errors:
        failures.append("transport errors")
    if results.inconsistent:
        failures.append("answers changed under load")
    if growth > MAX_GROWTH:
        failures.append(f"memory grew {growth:.1%} (> {MAX_GROWTH:.0%})")
    if pids != pids_end or restarts:
        failures.append(f"workers changed: {pids} -> {pids_end}")
    if internal:
        failures.append("internal errors logged")
    if missing:
        failures.append(f"{len(missing)} acknowledged feedback items missing, e.g. {missing[:3]}")
    print("RESULT: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    if failures:
        print(f"store and service log kept in {tmp}")
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

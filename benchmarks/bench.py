"""Benchmark: the CDS service against a bare Flask floor on the same gunicorn configuration.

    .venv/bin/python benchmarks/bench.py            # default run, a few minutes
    .venv/bin/python benchmarks/bench.py --quick    # a short run, well under a minute

Starts `azathioprine-cds serve` and `benchmarks/floor_app.py` on free loopback ports, drives both
with the same bodies and prints per workload: server CPU per request (from the workers' /proc),
sequential p50/p99, throughput and p99 with 8 concurrent clients, and service/floor ratios; then a
CPU-vs-prefetch-size curve, start-up time, memory per worker and a summary against the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import servers
import workloads
from servers import HOST, FhirStub, Server

CLIENTS = 8
FHIR_LATENCY_S = 0.020
SCALING_SIZES = (10, 100, 500, 1000, 2000, 5000)
WORKLOADS = 5  # build_workloads' bodies before the scaling ones
TARGETS = {"cpu_ratio": 3.0, "w2_conc_p99_ms": 50.0, "w3_p50_ms": 100.0, "round_trips": 2.0,
           "startup_s": 2.0, "rss_mb": 150.0, "w5_cpu_ratio": 2.0, "w5_conc_p99_ms": 50.0}


@dataclass(frozen=True)
class Plan:
    warmup: int
    sequential: int
    concurrent: int
    phase_s: float      # every phase also stops at this many seconds, whatever its count
    scaling_s: float
    probe: int          # sequential calls of the fetch-concurrency probe


FULL = Plan(warmup=30, sequential=400, concurrent=1200, phase_s=20.0, scaling_s=2.5, probe=50)
QUICK = Plan(warmup=10, sequential=80, concurrent=240, phase_s=3.0, scaling_s=0.5, probe=15)


@dataclass(frozen=True)
class Workload:
    title: str
    service: str
    body: bytes
    resources: int

    @property
    def path(self) -> str:
        return f"/cds-services/{self.service}"


@dataclass(frozen=True)
class Figures:
    cpu_ms: float
    p50_ms: float
    p99_ms: float
    rps: float
    conc_p99_ms: float
    requests: int
    errors: int
    other_pct: float    # the machine's CPU used by other processes meanwhile
    split: str          # each worker's share of the CPU under concurrency: balance


class Client:
    """One keep-alive connection; reconnects once if the server closed an idle one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
            try:
                return servers.post(self.conn, path, body)
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn:
            self.conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else math.nan


def sequential(client: Client, path: str, body: bytes, count: int,
               budget_s: float) -> tuple[list[float], int]:
    latencies, errors = [], 0
    deadline = time.perf_counter() + budget_s
    for _ in range(count):
        if time.perf_counter() > deadline:
            break
        began = time.perf_counter()
        status, _ = client.post(path, body)
        latencies.append(time.perf_counter() - began)
        errors += status != 200
    return latencies, errors


def concurrent(port: int, path: str, body: bytes, count: int,
               budget_s: float) -> tuple[list[float], float, int]:
    """CLIENTS threads, each on its own connection, released together by a barrier."""
    results: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors = [0] * CLIENTS
    began: list[float] = []
    barrier = threading.Barrier(CLIENTS, action=lambda: began.append(time.perf_counter()))

    def run(i: int) -> None:
        client = Client(port)
        try:
            barrier.wait(timeout=30)
            deadline = began[0] + budget_s
            for _ in range(max(1, count // CLIENTS)):
                if time.perf_counter() > deadline:
                    break
                t0 = time.perf_counter()
                try:
                    status, _ = client.post(path, body)
                except (OSError, http.client.HTTPException):
                    status = 0  # counted as an error; the next call reconnects
                results[i].append(time.perf_counter() - t0)
                errors[i] += status != 200
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=budget_s + 60)
    if not began:
        raise RuntimeError("the concurrent clients never started")
    wall = time.perf_counter() - began[0]
    latencies = [t for r in results for t in r]
    return latencies, wall, sum(errors)


def measure(server: Server, workload: Workload, plan: Plan, pids: list[int]) -> Figures:
    meter = servers.LoadMeter(pids)
    client = Client(server.port)
    sequential(client, workload.path, workload.body, plan.warmup, plan.phase_s)
    before = servers.cpu_seconds(server.workers)
    latencies, errors = sequential(client, workload.path, workload.body, plan.sequential,
                                   plan.phase_s)
    cpu = (servers.cpu_seconds(server.workers) - before) / len(latencies)
    client.close()
    before = [servers.cpu_seconds([pid]) for pid in server.workers]
    conc, wall, conc_errors = concurrent(server.port, workload.path, workload.body,
                                         plan.concurrent, plan.phase_s)
    used = [servers.cpu_seconds([pid]) - b for pid, b in zip(server.workers, before, strict=True)]
    split = "/".join(f"{100 * u / (sum(used) or 1):.0f}" for u in used)
    return Figures(cpu * 1000, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000,
                   len(conc) / wall, percentile(conc, 99) * 1000, len(latencies),
                   errors + conc_errors, meter.other_percent(), split)


def cpu_per_request(server: Server, path: str, body: bytes, plan: Plan) -> float:
    """CPU ms per request over as many calls as fit in plan.scaling_s (5 to 400)."""
    client = Client(server.port)
    sequential(client, path, body, 3, plan.scaling_s)
    before = servers.cpu_seconds(server.workers)
    done = 0
    deadline = time.perf_counter() + plan.scaling_s
    while done < 400 and (done < 5 or time.perf_counter() < deadline):
        client.post(path, body)
        done += 1
    client.close()
    return (servers.cpu_seconds(server.workers) - before) / done * 1000


def one_call(server: Server, workload: Workload, stub: FhirStub) -> tuple[str, int]:
    """The cards of one call (proof that the service did the work) and its FHIR queries."""
    stub.reset()
    status, raw = Client(server.port).post(workload.path, workload.body)
    if status != 200:
        return f"HTTP {status}", stub.queries
    cards = json.loads(raw)["cards"]
    names = [f"{c['source']['topic']['code']}/{c['indicator']}" for c in cards]
    return ", ".join(names) or "none", stub.queries


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (slope b, intercept a, R^2)."""
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return slope, intercept, 1 - ss_res / ss_tot if ss_tot and n > 2 else 1.0


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers] + [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r]
                         for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def progress(message: str) -> None:
    sys.stdout.flush()  # keep the report and the progress lines in order on a terminal
    print(f"... {message}", file=sys.stderr, flush=True)


def declared_keys(server: Server) -> dict[str, list[str]]:
    """Each service's prefetch keys, from its discovery endpoint."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    conn.request("GET", "/cds-services")
    services = json.loads(conn.getresponse().read())["services"]
    conn.close()
    return {s["id"]: list(s.get("prefetch", {})) for s in services}


def encode(title: str, service: str, body: dict) -> Workload:
    return Workload(title, service, json.dumps(body, separators=(",", ":")).encode(),
                    workloads.prefetch_size(body))


def build_workloads(fhir_base: str, keys: dict[str, list[str]]) -> list[Workload]:
    """The five workloads, then the scaling bodies: all built before any measuring."""
    now = workloads.now_utc()
    bodies = [
        ("1 sandbox order-select", "thiopurine-order-select",
         workloads.sandbox()),
        ("2 realistic order-sign", "thiopurine-order-sign",
         workloads.order_sign(now, counts=99, full_record=True)),
        ("3 large patient", "thiopurine-order-sign",
         workloads.order_sign(now, counts=1998, full_record=True)),
        ("4 fetch path", "thiopurine-order-select", workloads.fetch_path()),
        ("5 complex order-sign", "thiopurine-order-sign", workloads.complex_order_sign(now)),
    ]
    for _, service, body in bodies:
        workloads.complete(body, fhir_base, keys[service])
    for size in SCALING_SIZES:
        body = workloads.scaling_body(size, now, fhir_base, keys["thiopurine-order-sign"])
        bodies.append((f"scaling {size}", "thiopurine-order-sign", body))
    return [encode(*item) for item in bodies]


def start_servers(tmp: Path, probe: Workload, workers: int, threads: int,
                  stack: contextlib.ExitStack) -> tuple[Server, Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}  # defaults only
    env["CDS_DB_PATH"] = str(tmp / "store.sqlite3")
    bin_dir = Path(sys.executable).parent
    started = []
    for name, command in (
            ("service", [str(bin_dir / "azathioprine-cds"), "serve"]),
            ("floor", [sys.executable, str(Path(__file__).with_name("floor_app.py"))])):
        # gunicorn 23+ opens a control socket, by default one per user ($HOME/.gunicorn):
        # give each server its own so the two do not fight over it or touch $HOME.
        (tmp / name).mkdir()
        env["XDG_RUNTIME_DIR"] = str(tmp / name)
        port = servers.free_port()
        command += ["--host", HOST, "--port", str(port), "--workers", str(workers),
                    "--threads", str(threads)]
        progress(f"starting {name}: {' '.join(command[1:])}")
        server = servers.start(name, command, env, tmp / f"{name}.log", port,
                               (probe.path, probe.body), workers)
        stack.callback(server.stop)
        started.append(server)
    return started[0], started[1]


def code_state() -> str:
    """The commit measured, and how many files under cds_service/ and cards/ differ from it
    (read-only git calls: --no-optional-locks keeps `status` from touching the index)."""
    root = workloads.ROOT
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "--no-optional-locks", "status",
                                "--porcelain", "--", "cds_service", "cards"],
                               capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "code: unknown (no git)"
    return f"code: {head or 'unknown'}" + (f" + {len(dirty)} uncommitted files" if dirty else "")


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def run(plan: Plan, workers: int, threads: int) -> None:
    documents = workloads.fhir_documents()
    # The temporary directory is entered first so it outlives the servers writing logs into it.
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        stub = stack.enter_context(FhirStub(documents, FHIR_LATENCY_S))
        first = workloads.sandbox()
        workloads.complete(first, stub.base, [])
        try:
            service, floor = start_servers(
                tmp, encode("start-up", "thiopurine-order-select", first), workers, threads,
                stack)
            loads = build_workloads(stub.base, declared_keys(service))
            report(plan, workers, threads, service, floor, loads, stub)
        except Exception:  # not on Ctrl-C or SIGTERM: the user knows why it stopped
            for log in sorted(tmp.glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- last lines of {log.name}:", *tail, sep="\n", file=sys.stderr)
            raise


def report(plan: Plan, workers: int, threads: int, service: Server, floor: Server,
           loads: list[Workload], stub: FhirStub) -> None:
    print(f"Benchmark {datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on {machine()}; "
          f"load average {os.getloadavg()[0]:.2f} at start; {code_state()}")
    print(f"gunicorn gthread, {workers} workers x {threads} threads for both servers. Per "
          f"workload and server: {plan.warmup} warm-up, {plan.sequential} sequential and "
          f"{plan.concurrent} concurrent requests ({CLIENTS} clients), each phase capped at "
          f"{plan.phase_s:.0f} s\n")
    results: dict[str, tuple[Figures, Figures]] = {}
    rows = []
    pids = [s.process.pid for s in (service, floor)] + service.workers + floor.workers
    for load in loads[:WORKLOADS]:
        progress(f"workload {load.title}")
        cards, queries = one_call(service, load, stub)
        pair = measure(service, load, plan, pids), measure(floor, load, plan, pids)
        results[load.title] = pair
        rows += workload_rows(load, pair, cards, queries)
    print("Workloads (CPU = workers' utime+stime per request over the sequential run)")
    print(table(["workload", "server", "body KB", "resources", "CPU ms/req", "p50 ms",
                 "p99 ms", f"req/s @{CLIENTS}", f"p99 ms @{CLIENTS}", "requests", "errors",
                 "split %", "other %", "FHIR q", "cards"], rows))
    print(f"(split % = each worker's share of the CPU with {CLIENTS} clients; other % = CPU used "
          "meanwhile by processes outside the benchmark, share of all cores; FHIR q = queries "
          "one call made to the FHIR stub)")
    probe = fetch_probe(service, loads[3], plan, stub)
    print_probe(probe)
    progress("scaling curve")
    meter = servers.LoadMeter(pids)
    curve = scaling(service, floor, plan, loads[WORKLOADS:])
    print(f"(other processes used {meter.other_percent():.0f}% of the machine meanwhile)")
    memory = {s.name: [(servers.status_kb(p, "VmRSS"), servers.pss_kb(p)) for p in s.workers]
              for s in (service, floor)}
    print_startup_memory(service, floor, memory)
    summary(results, loads, probe, curve, service, memory["service"])
    busiest = max(f.other_pct for pair in results.values() for f in pair)
    if busiest > 10:
        print(f"NOTE: other processes used up to {busiest:.0f}% of the machine during the "
              "workloads: latencies and throughput are pessimistic; CPU per request holds.")


def workload_rows(load: Workload, pair: tuple[Figures, Figures], cards: str,
                  queries: int) -> list[list]:
    service, floor = pair
    size = f"{len(load.body) / 1024:.1f}"
    rows = []
    for name, f in (("service", service), ("floor", floor)):
        rows.append([load.title if name == "service" else "", name, size, load.resources,
                     f.cpu_ms, f.p50_ms, f.p99_ms, f"{f.rps:.0f}", f.conc_p99_ms, f.requests,
                     f.errors, f.split, f"{f.other_pct:.0f}",
                     queries if name == "service" else "-",
                     cards if name == "service" else "-"])

    def ratio(name: str) -> str:
        return f"{getattr(service, name) / getattr(floor, name):.2f}x"

    rows.append(["", "ratio", "", "", ratio("cpu_ms"), ratio("p50_ms"), ratio("p99_ms"),
                 ratio("rps"), ratio("conc_p99_ms"), "", "", "", "", "", ""])
    return rows


@dataclass(frozen=True)
class Probe:
    p50_ms: float
    query_ms: float
    queries_per_call: float
    max_in_flight: int


def fetch_probe(service: Server, load: Workload, plan: Plan, stub: FhirStub) -> Probe:
    """Sequential fetch-path calls with the stub counting how many of its queries overlap."""
    client = Client(service.port)
    client.post(load.path, load.body)  # a warm connection pool in the worker
    stub.reset()
    latencies, _ = sequential(client, load.path, load.body, plan.probe, plan.phase_s)
    client.close()
    return Probe(percentile(latencies, 50) * 1000,
                 sum(stub.durations) / len(stub.durations) * 1000,
                 stub.queries / len(latencies), stub.max_in_flight)


def print_probe(p: Probe) -> None:
    serial = p.query_ms * p.queries_per_call
    print(f"\nWorkload 4, the fetch path (stub FHIR server, {FHIR_LATENCY_S * 1000:.0f} ms per "
          "query, sequential calls)")
    print(table(["queries/call", "max in flight", "per-query ms", "sum if serial ms",
                 "service p50 ms", "round trips"],
                [[f"{p.queries_per_call:.1f}", p.max_in_flight, p.query_ms, serial, p.p50_ms,
                  p.p50_ms / p.query_ms]]))


def scaling(service: Server, floor: Server, plan: Plan,
            loads: list[Workload]) -> tuple[float, float]:
    rows, xs, ys, floor_ys = [], [], [], []
    for load in loads:
        cpu = cpu_per_request(service, load.path, load.body, plan)
        floor_cpu = cpu_per_request(floor, load.path, load.body, plan)
        xs.append(load.resources)
        ys.append(cpu)
        floor_ys.append(floor_cpu)
        rows.append([load.resources, f"{len(load.body) / 1024:.0f}", cpu, floor_cpu,
                     f"{cpu / floor_cpu:.2f}x"])
    slope, intercept, r2 = fit(xs, ys)
    f_slope, f_intercept, f_r2 = fit(xs, floor_ys)
    print("\nScaling: CPU per request against prefetch size (order-sign, blood counts over two "
          "years)")
    print(table(["resources", "body KB", "service CPU ms", "floor CPU ms", "ratio"], rows))
    print(f"fit service: {slope * 1000:.2f} ms per 1000 resources + {intercept:.2f} ms, "
          f"R^2 = {r2:.4f}")
    print(f"fit floor:   {f_slope * 1000:.2f} ms per 1000 resources + {f_intercept:.2f} ms, "
          f"R^2 = {f_r2:.4f}")
    return slope, r2


def print_startup_memory(service: Server, floor: Server,
                         memory: dict[str, list[tuple[int, int]]]) -> None:
    print("\nStart-up (process start to first 200 on POST) and memory per worker after the run")
    rows = []
    for server in (service, floor):
        rss = ", ".join(f"{r / 1024:.0f}" for r, _ in memory[server.name])
        pss = ", ".join(f"{p / 1024:.0f}" for _, p in memory[server.name])
        rows.append([server.name, server.startup_s, rss, pss])
    print(table(["server", "start-up s", "VmRSS MB per worker", "PSS MB per worker"], rows))


def summary(results: dict[str, tuple[Figures, Figures]], loads: list[Workload], probe: Probe,
            curve: tuple[float, float], service: Server,
            memory: list[tuple[int, int]]) -> None:
    w2, w2_floor = results[loads[1].title]
    w3, _ = results[loads[2].title]
    w5, w5_floor = results[loads[4].title]
    rss_mb = max(r for r, _ in memory) / 1024
    checks = [
        ("workload 2 CPU <= 3x floor", w2.cpu_ms / w2_floor.cpu_ms <= TARGETS["cpu_ratio"],
         f"{w2.cpu_ms:.2f} / {w2_floor.cpu_ms:.2f} ms = {w2.cpu_ms / w2_floor.cpu_ms:.2f}x"),
        (f"workload 2 p99 < 50 ms @{CLIENTS}", w2.conc_p99_ms < TARGETS["w2_conc_p99_ms"],
         f"{w2.conc_p99_ms:.1f} ms"),
        ("workload 3 p50 < 100 ms", w3.p50_ms < TARGETS["w3_p50_ms"], f"{w3.p50_ms:.1f} ms"),
        ("workload 4 about one round trip", probe.p50_ms / probe.query_ms < TARGETS["round_trips"],
         f"{probe.p50_ms:.1f} ms = {probe.p50_ms / probe.query_ms:.2f} x {probe.query_ms:.1f} ms "
         f"({probe.max_in_flight} of {probe.queries_per_call:.0f} queries in flight)"),
        ("workload 5 CPU <= 2x floor (issue 13)",
         w5.cpu_ms / w5_floor.cpu_ms <= TARGETS["w5_cpu_ratio"],
         f"{w5.cpu_ms:.2f} / {w5_floor.cpu_ms:.2f} ms = {w5.cpu_ms / w5_floor.cpu_ms:.2f}x"),
        (f"workload 5 p99 < 50 ms @{CLIENTS}", w5.conc_p99_ms < TARGETS["w5_conc_p99_ms"],
         f"{w5.conc_p99_ms:.1f} ms"),
        ("start-up < 2 s", service.startup_s < TARGETS["startup_s"], f"{service.startup_s:.2f} s"),
        ("< 150 MB per worker", rss_mb < TARGETS["rss_mb"], f"max VmRSS {rss_mb:.0f} MB"),
    ]
    print("\nSummary against the targets (issues 4 and 13)")
    print(table(["target", "result", "measured"],
                [[name, "PASS" if ok else "MISS", text] for name, ok, text in checks]))
    print(f"scaling: {curve[0] * 1000:.2f} ms CPU per 1000 prefetch resources, "
          f"R^2 = {curve[1]:.4f} (linear if close to 1)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests (well under 1 min)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="gunicorn workers for both servers (default: one per core)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the ExitStack stops the servers either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(QUICK if args.quick else FULL, args.workers, args.threads)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

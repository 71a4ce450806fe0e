"""Where a request's CPU goes: the app in-process (create_app + Flask test client) under cProfile.

    .venv/bin/python benchmarks/hotpath.py [--workload 1|2|3|5] [--calls 200] [--top 25]

Same bodies as bench.py; prints the functions by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from dataclasses import replace

import workloads
from servers import FhirStub

from cds_service import create_app
from cds_service.config import Settings

WORKLOADS = {"1": ("thiopurine-order-select", None), "2": ("thiopurine-order-sign", 99),
             "3": ("thiopurine-order-sign", 1998), "5": ("thiopurine-order-sign", None)}


def body_for(workload: str, fhir_base: str, keys: list[str]) -> bytes:
    service, counts = WORKLOADS[workload]
    if workload == "1":
        body = workloads.sandbox()
    elif workload == "5":
        body = workloads.complex_order_sign(workloads.now_utc())
    else:
        body = workloads.order_sign(workloads.now_utc(), counts=counts, full_record=True)
    workloads.complete(body, fhir_base, keys)
    return json.dumps(body, separators=(",", ":")).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="2")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    documents = workloads.fhir_documents()
    app = create_app(replace(Settings.from_env(), db_path=":memory:", log_level="WARNING"))
    service, _ = WORKLOADS[args.workload]
    keys = list(app.config["KNOWLEDGE"].services[service].prefetch)
    client = app.test_client()
    with FhirStub(documents, 0.0) as stub:
        body = body_for(args.workload, stub.base, keys)
        path = f"/cds-services/{service}"
        for _ in range(10):  # warm: first-call costs are start-up's, not the request's
            client.post(path, data=body, content_type="application/json")
        profiler = cProfile.Profile()
        began = time.process_time()
        profiler.enable()
        for _ in range(args.calls):
            assert client.post(path, data=body, content_type="application/json").status_code \
                == 200
        profiler.disable()
        spent = (time.process_time() - began) / args.calls * 1000
    print(f"workload {args.workload}: {len(body) / 1024:.0f} KB body, {args.calls} calls, "
          f"{spent:.2f} ms CPU per call under the profiler, {stub.queries} FHIR queries")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()

"""Prometheus metrics, summed across gunicorn workers (prometheus-client's multiprocess mode).

`serve` sets PROMETHEUS_MULTIPROC_DIR before anything here runs: prometheus-client picks its
value store when it is first imported, so the import and the metrics are deferred to first use
(the package itself must never import prometheus_client at import time). Without that variable
(tests, `check`) the metrics live in this process's default registry.

Every label takes values from a small fixed set (service ids, rule families, indicators,
reasons), never from a request: no identifier can reach a label, and the series stay few.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_lock = threading.Lock()
_failed = False
log = logging.getLogger("cds_service.metrics")


@functools.cache
def _create() -> SimpleNamespace:
    from prometheus_client import Counter, Histogram

    return SimpleNamespace(
        requests=Counter("cds_requests", "HTTP requests answered, by endpoint, service and status",
                         ["endpoint", "service", "status"]),
        latency=Histogram("cds_request_duration_seconds", "Time to answer, by endpoint and service",
                          ["endpoint", "service"], buckets=_LATENCY_BUCKETS),
        cards=Counter("cds_cards", "Cards sent, by rule family and indicator",
                      ["rule", "indicator"]),
        suppressed=Counter("cds_cards_suppressed", "Cards suppressed as order-sign repeats",
                           ["rule"]),
        fhir_failures=Counter("cds_fhir_fetch_failures", "FHIR fetches that failed, by reason",
                              ["reason"]),
        feedback=Counter("cds_feedback_items", "Feedback items received, by outcome and result",
                         ["outcome", "result"]),
        store_errors=Counter("cds_store_errors", "Store operations that failed", ["operation"]),
    )


def _metrics() -> SimpleNamespace:
    with _lock:  # two threads' first requests must not both register the metrics
        return _create()


def _never_raises(record: Callable[..., None]) -> Callable[..., None]:
    """A metric that cannot be recorded (its multiprocess file on a full disk, say) must never
    cost an answer: the failure is logged once per process and the answer goes out."""
    @functools.wraps(record)
    def run(*args: Any) -> None:
        global _failed
        try:
            record(*args)
        except Exception as error:
            if not _failed:
                _failed = True
                log.error('{"event": "metrics-failed", "reason": "%s"}', type(error).__name__)
    return run


@_never_raises
def request(endpoint: str, service: str, status: int, seconds: float) -> None:
    m = _metrics()
    m.requests.labels(endpoint, service, str(status)).inc()
    m.latency.labels(endpoint, service).observe(seconds)


@_never_raises
def card(rule: str, indicator: str, shown: bool) -> None:
    if shown:
        _metrics().cards.labels(rule, indicator).inc()
    else:
        _metrics().suppressed.labels(rule).inc()


@_never_raises
def fhir_fetch_failed(reason: str) -> None:
    """For the fetch code: `reason` from a fixed set, e.g. timeout, unreachable, http-5xx."""
    _metrics().fhir_failures.labels(reason).inc()


@_never_raises
def feedback(outcome: str, result: str) -> None:
    """result: stored, or duplicate (a client's retry of an item already stored)."""
    _metrics().feedback.labels(outcome, result).inc()


@_never_raises
def store_error(operation: str) -> None:
    _metrics().store_errors.labels(operation).inc()


def exposition() -> tuple[bytes, str]:
    """The text exposition format: all workers' values in multiprocess mode, else ours."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

"""`azathioprine-cds serve` as an operator runs it: configuration checked before start (one
line per problem, no traceback), JSON log lines from the app and from gunicorn, and metrics
summed across two worker processes."""

from __future__ import annotations

import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cds_service.logs import JsonFormatter

from .conftest import PSEUDONYM_KEY
from .service import Service, cli


def json_lines(text: str) -> list[dict]:
    """Every line must be one JSON object with a time and a level."""
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(e, dict) and e["time"].endswith("Z") and e["level"] for e in entries)
    return entries


@pytest.mark.parametrize("env, names", [
    ({"CDS_AUTH_MODE": "bogus"}, ["CDS_AUTH_MODE"]),
    ({"CDS_TIME_BUDGET_MS": "abc"}, ["CDS_TIME_BUDGET_MS"]),
    ({"CDS_MAX_BODY_BYTES": "-1"}, ["CDS_MAX_BODY_BYTES"]),
    ({"CDS_TRUST_SANDBOX": "ture"}, ["CDS_TRUST_SANDBOX"]),
    ({"CDS_DB_PATH": "{tmp}/a-file/store.sqlite3"}, ["{tmp}/a-file/store.sqlite3"]),
    ({"CDS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}, ["CDS_PSEUDONYM_KEY"]),
    ({"CDS_AUTH_MODE": "bogus", "CDS_TIME_BUDGET_MS": "abc", "CDS_TRUST_SANDBOX": "ture",
      "CDS_MAX_PAGES": "0"},
     ["CDS_AUTH_MODE", "CDS_TIME_BUDGET_MS", "CDS_TRUST_SANDBOX", "CDS_MAX_PAGES"]),
])
def test_a_misconfiguration_stops_the_start_with_one_line_per_problem(tmp_path, env, names):
    (tmp_path / "a-file").write_text("")  # a file where a folder should be: unwritable, root too
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    result = cli("serve", "--port", "1", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and not result.stdout
    entries = json_lines(result.stderr)
    problems = [e["message"] for e in entries if e.get("event") == "config-error"]
    assert len(problems) == len(names)
    assert [e for e in entries if e["level"] == "error"] == [
        e for e in entries if e.get("event") == "config-error"]  # nothing else says it again
    for name in names:
        assert sum(name.format(tmp=tmp_path) in p for p in problems) == 1, problems


def test_a_traceback_stays_on_its_json_line_without_the_data(caplog):
    message = "patient pt-secret-1 failed validation"
    try:
        raise ValueError(message)
    except ValueError:
        record = logging.LogRecord("cds_service", logging.ERROR, __file__, 1,
                                   '{"event": "unexpected-error"}', (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["event"] == "unexpected-error" and entry["level"] == "error"
    assert "Traceback" in entry["exception"] and entry["exception"].endswith("ValueError")
    assert "pt-secret-1" not in line  # an exception's message may quote the data: left out
    try:
        raise OSError(28, "No space left on device")
    except OSError:
        record.exc_info = sys.exc_info()
    assert "No space left on device" in json.loads(JsonFormatter().format(record))["exception"]


def _counts(url: str) -> tuple[float, float]:
    """Discovery calls answered 200, and their latency observations, as /metrics says."""
    requests_total = observations = 0.0
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.labels.get("endpoint") != "cds.discovery":
                continue
            if sample.name == "cds_requests_total" and sample.labels["status"] == "200":
                requests_total += sample.value
            if sample.name == "cds_request_duration_seconds_count":
                observations += sample.value
    return requests_total, observations


def test_two_workers_log_json_and_their_metrics_add_up(tmp_path):
    metrics_dir = tmp_path / "metrics"
    env = {"CDS_DB_PATH": str(tmp_path / "store.sqlite3"), "CDS_PSEUDONYM_KEY": PSEUDONYM_KEY,
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "CDS_LOG_LEVEL": "INFO"}
    sent = 0
    with Service(env, tmp_path, workers=2) as service, ThreadPoolExecutor(8) as pool:
        workers: set[str] = set()
        for _ in range(50):  # until both workers have answered; bounded
            codes = list(pool.map(lambda _: requests.get(f"{service.url}/cds-services",
                                                         timeout=10).status_code, range(16)))
            assert codes == [200] * 16
            sent += 16
            workers = {p.stem.rsplit("_", 1)[1] for p in Path(metrics_dir).glob("counter_*.db")}
            if len(workers) >= 2:
                break
        assert len(workers) == 2
        assert _counts(service.url) == (sent, sent)
    entries = json_lines(service.log.read_text())
    startup = next(e for e in entries if e.get("event") == "startup")
    assert startup["discovery"] == f"{service.url}/cds-services"
    assert startup["store"] == f"sqlite:///{tmp_path / 'store.sqlite3'}"
    assert Path(startup["knowledge"]).is_dir() and startup["knowledge_version"]
    assert startup["version"]
    booted = [e for e in entries if e["logger"] == "gunicorn.error"
              and e["message"].startswith("Booting worker")]
    assert {str(e["pid"]) for e in booted} == workers  # gunicorn's own lines, in JSON too
    assert sum(e.get("event") == "request" for e in entries) == sent
    assert not any(e.get("path") in ("/readyz", "/metrics") for e in entries)  # probe noise

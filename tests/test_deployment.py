"""The service as deployed: `azathioprine-cds serve` (gunicorn) started on loopback, alone and,
when nginx is installed, behind deploy/nginx-proxy.conf (the README's deployment example)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cds_service.knowledge import load_knowledge

from .conftest import ROOT, TPMT_POOR, hook_call

SERVICE = "/cds-services/thiopurine-order-select"
BODY_LIMIT = 100_000
NGINX = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")


def _critical() -> dict:
    """An order-select request giving one critical card (a TPMT poor metabolizer)."""
    return hook_call(load_knowledge(), TPMT_POOR)[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    return {**env, "CDS_DB_PATH": str(tmp_path / "store.sqlite3"), **settings}


def _serve(port: int) -> list[str]:
    return [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port),
            "--workers", "1", "--threads", "2"]


def _wait_until_listening(port: int, process: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port} (exit code {process.poll()})")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _start(tmp_path: Path, **settings: str) -> Iterator[tuple[str, Path]]:
    """The service on a free port: its base URL and the file its stderr goes to."""
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(_serve(port), env=_env(tmp_path, **settings), cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_until_listening(port, process)
        yield f"http://127.0.0.1:{port}", log
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    with _start(tmp_path_factory.mktemp("serve"), CDS_MAX_BODY_BYTES=str(BODY_LIMIT)) as served:
        yield served


def test_required_auth_without_a_public_url_refuses_to_start_in_one_line(tmp_path):
    """The JWT aud must never come from the Host header: no CDS_PUBLIC_BASE_URL, no start."""
    port = free_port()
    done = subprocess.run(_serve(port), env=_env(tmp_path, CDS_AUTH_MODE="required",
                                                  CDS_TRUST_SANDBOX="1"),
                          cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CDS_PUBLIC_BASE_URL" in lines[0], done.stderr


def test_trusting_the_sandbox_key_is_warned_at_start_up(tmp_path):
    settings = {"CDS_AUTH_MODE": "required", "CDS_TRUST_SANDBOX": "1",
                "CDS_PUBLIC_BASE_URL": "https://cds.example.org"}
    with _start(tmp_path, **settings) as (base, log):
        assert requests.get(f"{base}/cds-services", timeout=5).status_code == 401
        warnings = [json.loads(line) for line in log.read_text().splitlines()
                    if "startup-warning" in line]
        assert any("CDS_TRUST_SANDBOX=1" in w["message"] for w in warnings), log.read_text()


def _chunked(body: bytes, piece: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(body), piece):
        yield body[start:start + piece]


def test_a_chunked_body_over_the_limit_gets_413(service):
    base, _ = service
    body = json.dumps(dict(_critical(),
                           pad="x" * BODY_LIMIT)).encode()
    response = requests.post(base + SERVICE, data=_chunked(body), timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_chunked_body_under_the_limit_is_served(service):
    base, _ = service
    body = json.dumps(_critical()).encode()
    assert len(body) < BODY_LIMIT
    response = requests.post(base + SERVICE, data=_chunked(body, 500), timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.json()["cards"][0]["indicator"] == "critical"


# --- behind nginx ----------------------------------------------------------------------------

NGINX_CONF = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream azathioprine_cds {{ server 127.0.0.1:{upstream}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        include {root}/deploy/nginx-proxy.conf;
    }}
}}
"""


@pytest.fixture
def proxied(tmp_path) -> Iterator[str]:
    """gunicorn with 2 threads behind nginx running the README's proxy configuration."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    with _start(tmp_path) as (base, _):
        port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp_path, upstream=base.rsplit(":", 1)[1],
                                          port=port, root=ROOT))
        process = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf), "-e",
                                    str(tmp_path / "error.log")], stderr=subprocess.PIPE)
        try:
            _wait_until_listening(port, process, seconds=5)
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop(process)


def _stalled(port: int, head: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    connection.sendall(head)
    return connection


def test_slow_clients_behind_the_proxy_never_hold_the_service(proxied):
    """Six clients stall mid-request (three in their headers, three in their bodies): gunicorn
    alone would give each a thread and its two threads would be gone. Through the proxy a
    normal call is answered at once."""
    port = int(proxied.rsplit(":", 1)[1])
    body_head = (f"POST {SERVICE} HTTP/1.1\r\nHost: cds\r\nContent-Type: application/json\r\n"
                 "Content-Length: 5000\r\n\r\n{\"hook\": ").encode()
    header_head = f"POST {SERVICE} HTTP/1.1\r\nHost: cds\r\nContent-Ty".encode()
    stalled = [_stalled(port, head) for head in [body_head] * 3 + [header_head] * 3]
    try:
        started = time.monotonic()
        response = requests.post(proxied + SERVICE, timeout=10,
                                 json=_critical())
        assert response.status_code == 200
        assert response.json()["cards"][0]["indicator"] == "critical"
        assert time.monotonic() - started < 2
    finally:
        for connection in stalled:
            connection.close()


def test_the_proxy_refuses_a_huge_body_in_the_service_error_shape(proxied):
    port = int(proxied.rsplit(":", 1)[1])
    with _stalled(port, (f"POST {SERVICE} HTTP/1.1\r\nHost: cds\r\nContent-Type: "
                         "application/json\r\nContent-Length: 20000000\r\n\r\n").encode()) as c:
        answer = c.recv(65536).decode()
    head, _, payload = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413")
    assert json.loads(payload)["resourceType"] == "OperationOutcome"

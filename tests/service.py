"""`azathioprine-cds serve` as a real process on a loopback port, for the tests that need
gunicorn, its workers or several instances."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

COMMAND = str(Path(sys.executable).with_name("azathioprine-cds"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str, env: dict[str, str], cwd: Path,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """The command run to its end, with only `env` (and PATH) for its environment."""
    return subprocess.run([COMMAND, *args], env={"PATH": os.environ["PATH"], **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


class Service:
    def __init__(self, env: dict[str, str], cwd: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        self._env = {"PATH": os.environ["PATH"], **env}
        self._args = [COMMAND, "serve", "--port", str(self.port), "--workers", str(workers),
                      "--threads", "4"]
        self._cwd = cwd
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Service:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self._args, env=self._env, cwd=self._cwd,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log.read_text()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"serve was not ready within 30 s: {self.log.read_text()}")

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # gunicorn's graceful shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

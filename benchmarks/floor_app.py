"""The floor: a bare Flask endpoint on the service's exact gunicorn configuration.

It reads the JSON body the way a plain Flask view does (`request.get_json()`) and answers
`{"cards": []}`, so the service's cost above it is the CDS work itself, not the WSGI stack.

    .venv/bin/python benchmarks/floor_app.py --port 8081 [--workers N] [--threads 4]
"""

from __future__ import annotations

import argparse
import os

from flask import Flask, request
from gunicorn.app.base import BaseApplication

app = Flask(__name__)


@app.post("/cds-services/<service_id>")
def call_service(service_id: str) -> dict:
    request.get_json()
    return {"cards": []}


class Server(BaseApplication):
    """The same settings as `azathioprine-cds serve` (cds_service/cli.py, `_serve`): keep the
    two in step, or the comparison measures a configuration difference."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        super().__init__()

    def load_config(self) -> None:
        self.cfg.set("bind", f"{self.args.host}:{self.args.port}")
        self.cfg.set("workers", self.args.workers or os.cpu_count() or 1)
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("threads", self.args.threads)
        self.cfg.set("timeout", 30)
        self.cfg.set("graceful_timeout", 10)
        self.cfg.set("accesslog", None)
        self.cfg.set("control_socket_disable", True)

    def load(self) -> Flask:
        return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--workers", type=int, default=0, help="default: one per core")
    parser.add_argument("--threads", type=int, default=4)
    Server(parser.parse_args()).run()


if __name__ == "__main__":
    main()

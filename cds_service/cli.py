"""`azathioprine-cds serve | check FILE` (and the operators' tools)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import orjson

log = logging.getLogger("cds_service")


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from . import create_app
    from .config import Settings

    settings = Settings.from_env()
    app = create_app(settings)  # fails here, before binding, if knowledge or keys are broken
    if settings.auth_mode == "off":
        log.warning('{"event": "startup-warning", "message": "client authentication is OFF: '
                    'any caller is accepted (set CDS_AUTH_MODE=required)"}')
    if not settings.fhir_allowlist:
        log.warning('{"event": "startup-warning", "message": "any http(s) fhirServer is accepted'
                    ' (set CDS_FHIR_ALLOWLIST)"}')

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers or os.cpu_count() or 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", None)

        def load(self):
            return app

    Server().run()
    return 0


def _format(card: dict) -> str:
    lines = [f"[{card['indicator'].upper()}] {card['summary']}",
             f"  rule: {card['source']['topic']['code']}"]
    lines += [f"  {line}" for line in card.get("detail", "").splitlines() if line.strip()]
    for suggestion in card.get("suggestions", []):
        lines.append(f"  suggestion: {suggestion['label']}")
    for link in card.get("links", []):
        lines.append(f"  link: {link['label']} <{link['url']}>")
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    from . import create_app
    from .config import Settings

    document = json.loads(Path(args.file).read_text(encoding="utf-8"))
    body = document.get("body", document)  # a sandbox capture, or a bare request body
    service = args.service or _service_for(body.get("hook"))
    app = create_app(replace(Settings.from_env(), db_path=":memory:"))
    response = app.test_client().post(f"/cds-services/{service}", json=body)
    payload = response.get_json()
    if args.json:
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif response.status_code != 200:
        print(f"HTTP {response.status_code}: {payload['issue'][0]['diagnostics']}")
    elif not payload["cards"]:
        print("No cards: nothing to flag for the judged orders.")
    else:
        print("\n\n".join(_format(c) for c in payload["cards"]))
    return 0 if response.status_code == 200 else 1


def _service_for(hook: str | None) -> str:
    return {"order-select": "thiopurine-order-select", "order-sign": "thiopurine-order-sign",
            "medication-prescribe": "thiopurine-medication-prescribe"}.get(
        hook or "", "thiopurine-order-select")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="azathioprine-cds", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service with gunicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=0, help="default: one per core")
    serve.add_argument("--threads", type=int, default=4)
    serve.set_defaults(run=_serve)
    check = commands.add_parser("check", help="evaluate a CDS Hooks request stored in a file")
    check.add_argument("file")
    check.add_argument("--json", action="store_true", help="print the response as JSON")
    check.add_argument("--service", help="service id (default: from the request's hook)")
    check.set_defaults(run=_check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

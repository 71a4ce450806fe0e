"""`azathioprine-cds serve | check FILE | report` (and the operators' tools)."""

from __future__ import annotations

import argparse
import gc
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
    from .errors import KnowledgeError

    try:
        settings = Settings.from_env()
        app = create_app(settings)  # fails here, before binding, if settings or keys are broken
    except (ValueError, KnowledgeError) as error:
        print(f"azathioprine-cds: cannot start: {error}", file=sys.stderr)
        return 2
    gc.freeze()  # start-up objects (models, knowledge) are never collected: skip them in GC passes
    if settings.auth_mode == "off":
        log.warning('{"event": "startup-warning", "message": "client authentication is OFF: '
                    'any caller is accepted (set CDS_AUTH_MODE=required)"}')
    if settings.trust_sandbox:
        log.warning('{"event": "startup-warning", "message": "CDS_TRUST_SANDBOX=1: tokens signed '
                    'with the CDS Hooks sandbox key are accepted, and its private key is public:'
                    ' anyone can sign as the sandbox (for trying only, never production)"}')
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
            self.cfg.set("accesslog", None)  # the app logs one JSON line per request
            self.cfg.set("control_socket_disable", True)  # one fixed path per user: instances clash

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


def _report(args: argparse.Namespace) -> int:
    from . import report
    from .config import Settings
    from .store import Store

    path = args.db or Settings.from_env().db_path
    if not Path(path).is_file():  # a mistyped path must not report on a new, empty store
        print(f"no store at {path}", file=sys.stderr)
        return 2
    result = report.build(Store(path), args.since, args.until)
    print(report.text(result))
    if args.html:
        Path(args.html).write_text(report.html(result), encoding="utf-8")
        print(f"\nWrote {args.html}")
    return 0


def _date(value: str) -> str:
    from .report import bound

    try:
        bound(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {value!r}") from None
    return value


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
    report = commands.add_parser(
        "report", help="cards shown, accepted and overridden per rule (alert fatigue)",
        description="Per rule and finding, for the cards issued in a period: shown, suppressed"
                    " as repeats, accepted, overridden (per reason) and the override rate.")
    report.add_argument("--since", type=_date, metavar="DATE",
                        help="first day (YYYY-MM-DD, UTC) or an ISO date-time")
    report.add_argument("--until", type=_date, metavar="DATE",
                        help="last day, included (YYYY-MM-DD, UTC), or an ISO date-time"
                             " (excluded)")
    report.add_argument("--db", metavar="PATH",
                        help="the store (default: CDS_DB_PATH or azathioprine-cds.sqlite3)")
    report.add_argument("--html", metavar="FILE",
                        help="also write the report as one self-contained HTML page")
    report.set_defaults(run=_report)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

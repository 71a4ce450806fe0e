"""`azathioprine-cds serve | check FILE | report` (and the operators' tools)."""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import orjson

from .config import ConfigError, Settings
from .errors import KnowledgeError
from .metrics import MULTIPROC_ENV
from .store import StoreError

log = logging.getLogger("cds_service")
EXIT_FOUND, EXIT_UNUSABLE = 1, 2  # check: a card at --fail-on or above; nothing could be done
INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}


def _version() -> str:
    try:
        return metadata.version("azathioprine-cds")
    except metadata.PackageNotFoundError:
        return "unknown"


def _startup_problems(error: Exception) -> list[str]:
    """One line per problem, for any error create_app raises on purpose (no traceback)."""
    from .store import StoreError

    if isinstance(error, ConfigError):
        return error.problems
    if isinstance(error, StoreError):
        return [f"the store (CDS_DATABASE_URL or CDS_DB_PATH): {error}"]
    return [str(error)]


def _refuse(error: Exception) -> int:
    for problem in _startup_problems(error):
        log.error(orjson.dumps({"event": "config-error", "message": problem}).decode())
    return EXIT_UNUSABLE


def _metrics_dir() -> None:
    """prometheus-client's multiprocess folder, set before it is first imported. An operator's
    PROMETHEUS_MULTIPROC_DIR is emptied (an earlier run's values must not count); otherwise a
    fresh folder, removed when the master exits."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
        return
    directory = tempfile.mkdtemp(prefix="azathioprine-cds-metrics-")
    master = os.getpid()
    # Forked workers inherit this hook; only the master may remove the folder.
    atexit.register(lambda: os.getpid() == master and shutil.rmtree(directory, True))
    os.environ[MULTIPROC_ENV] = directory


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from . import create_app, logs

    logs.configure("INFO")
    try:
        _metrics_dir()
        settings = Settings.from_env()
        app = create_app(settings)  # fails here, before binding, if anything is misconfigured
    except (ValueError, KnowledgeError, StoreError, OSError) as error:
        return _refuse(error)
    gc.freeze()  # start-up objects (models, knowledge) are never collected: skip them in GC passes
    base = settings.public_base_url or f"http://{args.host}:{args.port}"
    log.info(orjson.dumps({
        "event": "startup", "version": _version(), "discovery": f"{base}/cds-services",
        "store": app.config["STORE"].description, "knowledge": str(settings.knowledge_dir),
        "knowledge_version": app.config["KNOWLEDGE"].version, "auth": settings.auth_mode,
        "workers": args.workers or os.cpu_count() or 1, "threads": args.threads}).decode())
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
            self.cfg.set("loglevel", settings.log_level.lower())
            self.cfg.set("logger_class", logs.gunicorn_logger())
            self.cfg.set("control_socket_disable", True)  # one fixed path per user: instances clash

        def load(self):
            return app

    Server().run()
    return 0


_MARKDOWN = [
    (re.compile(r"\[([^\]]+)\]\((\S+?)\)"), r"\1 <\2>"),        # [label](url)
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),                     # **bold**
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # *italic*
    (re.compile(r"`([^`]+)`"), r"\1"),                            # `code`
    (re.compile(r"^#{1,6}\s+", re.MULTILINE), ""),                 # # heading
]


def plain(markdown: str) -> str:
    """Card Markdown as terminal text: no raw markers, links as `label <url>`."""
    for pattern, replacement in _MARKDOWN:
        markdown = pattern.sub(replacement, markdown)
    return markdown


def _format(card: dict) -> str:
    lines = [f"[{card['indicator'].upper()}] {plain(card['summary'])}",
             f"  rule: {card['source']['topic']['code']}"]
    lines += [f"  {line}" for line in plain(card.get("detail", "")).splitlines() if line.strip()]
    for suggestion in card.get("suggestions", []):
        lines.append(f"  suggestion: {suggestion['label']}")
    for link in card.get("links", []):
        lines.append(f"  link: {link['label']} <{link['url']}>")
    return "\n".join(lines)


class _Unusable(Exception):
    """The input cannot be evaluated; the message says why, in one line."""


def _read_request(name: str) -> dict:
    path = Path(name)
    if path.is_dir():
        raise _Unusable(f"{name} is a folder: give a JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Unusable(f"{name}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise _Unusable(f"{name}: cannot read it ({type(error).__name__})") from None
    if not text.strip():
        raise _Unusable(f"{name} is empty")
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise _Unusable(f"{name} is not JSON ({error})") from None
    body = document.get("body", document) if isinstance(document, dict) else None
    if not isinstance(body, dict):  # a sandbox capture, or a bare request body
        raise _Unusable(f"{name} does not hold a CDS Hooks request (a JSON object)")
    return body


def _check(args: argparse.Namespace) -> int:
    from . import create_app

    try:
        body = _read_request(args.file)
        # Nothing leaves this run: an in-memory store, no client authentication.
        settings = replace(Settings.from_env(), database_url=None, db_path=":memory:",
                           auth_mode="off", pseudonym_key=secrets.token_hex(32),
                           pseudonym_key_file=None, log_level="WARNING")
        app = create_app(settings)
    except _Unusable as error:
        print(f"azathioprine-cds check: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (ValueError, KnowledgeError, StoreError) as error:
        for problem in _startup_problems(error):
            print(f"azathioprine-cds check: {problem}", file=sys.stderr)
        return EXIT_UNUSABLE
    service = args.service or _service_for(body.get("hook"))
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
    if response.status_code != 200:
        return EXIT_UNUSABLE
    worst = max((INDICATOR_RANK.get(c["indicator"], 0) for c in payload["cards"]), default=-1)
    return EXIT_FOUND if args.fail_on and worst >= INDICATOR_RANK[args.fail_on] else 0


def _no_store(url: str) -> int:
    from .store import describe

    print(f"azathioprine-cds report: no store at {describe(url)}", file=sys.stderr)
    return EXIT_UNUSABLE


def _report(args: argparse.Namespace) -> int:
    from . import report
    from .knowledge import load_knowledge
    from .store import SQLITE_PREFIX, Store, is_postgres, url_for

    if args.html and not Path(args.html).parent.is_dir():
        print(f"azathioprine-cds report: cannot write {args.html}: the folder"
              f" {Path(args.html).parent} does not exist", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        settings = Settings.from_env()
        url = args.db or url_for(settings)
        if not (is_postgres(url) or url.startswith(SQLITE_PREFIX)):
            url = SQLITE_PREFIX + url
        # A mistyped path or database must not report on a new, empty store.
        if not is_postgres(url) and not Path(url.removeprefix(SQLITE_PREFIX)).is_file():
            return _no_store(url)
        knowledge = load_knowledge(settings.knowledge_dir)
        store = Store(url, b"", migrate=False)  # the report reads no pseudonym
        try:
            if is_postgres(url) and store.schema_version() == 0:
                return _no_store(url)
            store.migrate()  # an older store is read once it is brought up to date
            result = report.build(store, args.since, args.until,
                                  report.override_reasons(knowledge))
        finally:
            store.close()
    except (ValueError, KnowledgeError, StoreError) as error:
        for problem in _startup_problems(error):
            print(f"azathioprine-cds report: {problem}", file=sys.stderr)
        return EXIT_UNUSABLE
    print(report.text(result))
    if args.html:
        Path(args.html).write_text(report.html(result), encoding="utf-8")
        print(f"\nWrote {args.html}")
    return 0


def _knowledge(args: argparse.Namespace) -> int:
    """`knowledge check [DIR]`: the start-up check, for informaticists; `knowledge export DIR`:
    a copy of the knowledge in use, to edit and point CDS_KNOWLEDGE_DIR at."""
    import shutil

    from .config import Settings
    from .errors import KnowledgeError
    from .knowledge import FILES, load_knowledge

    source = Path(args.dir) if args.action == "check" and args.dir else (
        Settings.from_env().knowledge_dir)
    if args.action == "export":
        target = Path(args.dir)
        if target.exists():
            print(f"{target} exists: choose a new folder", file=sys.stderr)
            return 2
        target.mkdir(parents=True)
        for name in FILES:
            shutil.copy(Path(source) / f"{name}.yaml", target / f"{name}.yaml")
        print(f"Copied the knowledge in {source} to {target}. Edit it, run"
              f" `azathioprine-cds knowledge check {target}`, then set"
              f" CDS_KNOWLEDGE_DIR={target}.")
        return 0
    try:
        knowledge = load_knowledge(source)
    except KnowledgeError as error:
        print(f"knowledge in {source} is not valid: {error}", file=sys.stderr)
        return 1
    print(f"knowledge in {source} is valid: version {knowledge.version}, "
          f"{len(knowledge.cards.findings)} findings, {len(knowledge.services)} services")
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
    check.add_argument("--fail-on", choices=("warning", "critical"),
                       help="exit 1 if a card is this severe or more (data-unavailable cards are"
                            " warnings); exit 2 if the request could not be evaluated")
    check.set_defaults(run=_check)
    report = commands.add_parser(
        "report", help="cards shown, accepted and overridden per rule (alert fatigue)",
        description="Per rule and finding, for the cards issued in a period: shown, suppressed"
                    " as repeats, accepted, overridden (per reason) and the override rate; and"
                    " the distinct alerts (the cards of one fingerprint) with their override"
                    " rate.")
    report.add_argument("--since", type=_date, metavar="DATE",
                        help="first day (YYYY-MM-DD, UTC) or an ISO date-time")
    report.add_argument("--until", type=_date, metavar="DATE",
                        help="last day, included (YYYY-MM-DD, UTC), or an ISO date-time"
                             " (excluded)")
    report.add_argument("--db", metavar="PATH|URL",
                        help="the store: a SQLite file or a postgresql:// URL (default:"
                             " CDS_DATABASE_URL, else CDS_DB_PATH, else azathioprine-cds.sqlite3)")
    report.add_argument("--html", metavar="FILE",
                        help="also write the report as one self-contained HTML page")
    report.set_defaults(run=_report)
    knowledge = commands.add_parser(
        "knowledge", help="check the knowledge files (cards/), or export a copy to edit")
    knowledge.add_argument("action", choices=("check", "export"))
    knowledge.add_argument("dir", nargs="?", help="check: the folder (default: the one in"
                           " use); export: the new folder to write")
    knowledge.set_defaults(run=_knowledge)
    args = parser.parse_args(argv)
    if args.command == "knowledge" and args.action == "export" and not args.dir:
        parser.error("knowledge export needs a folder to write")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

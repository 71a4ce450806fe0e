"""Calls to the EHR's FHIR server: bounded in time, pages and bytes; the token stays home.

Every failure becomes a FetchError whose message is safe to show in a card (no token, no body).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
import requests

from . import metrics
from .config import Settings

_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


class FetchError(Exception):
    """The data could not be obtained; the message says why, for a card. `reason`: a short
    fixed word for the metrics (cds_fhir_fetch_failures_total)."""

    def __init__(self, message: str, reason: str = "other") -> None:
        super().__init__(message)
        self.reason = reason


def executor() -> ThreadPoolExecutor:
    """One pool per process (created after gunicorn forks), for concurrent FHIR queries."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fhir")
        return _pool


def _session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
        _local.session.trust_env = False  # no proxies or .netrc credentials from the host
    return _local.session


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class FhirClient:
    def __init__(self, base: str, token: str | None, settings: Settings, deadline: float):
        self.base = base.rstrip("/")
        self.token = token
        self.settings = settings
        self.deadline = deadline

    def url_for(self, relative: str) -> str:
        path, _, query = relative.partition("?")
        params = urlencode(parse_qsl(query, keep_blank_values=True), safe=",")
        return f"{self.base}/{path.lstrip('/')}" + (f"?{params}" if params else "")

    def get_all(self, relative: str) -> tuple[list[dict], str | None]:
        """Resources of a read or search (following `next`), and why it is incomplete, if so."""
        if "?" not in relative:  # a read: one resource
            return [self._get(self.url_for(relative))], None
        return self.follow(self.url_for(relative), [])

    def follow(self, url: str | None, resources: list[dict]) -> tuple[list[dict], str | None]:
        """Search pages from `url` on, appended to `resources`."""
        seen: set[str] = set()
        pages = 0
        while url:
            if url in seen:
                return resources, "the server's next links loop"
            if pages >= self.settings.max_pages:
                return resources, f"only the first {pages} pages were read"
            seen.add(url)
            pages += 1
            document = self._get(url)
            if document.get("resourceType") != "Bundle":
                raise FetchError("the FHIR server answered a search without a Bundle")
            resources.extend(entries(document))
            url = next_link(document)
        return resources, None

    def _get(self, url: str) -> dict:
        try:
            return self._document(url)
        except FetchError as error:
            metrics.fhir_fetch_failed(error.reason)
            raise

    def _document(self, url: str) -> dict:
        if _origin(url) != _origin(self.base):
            raise FetchError("a link to another host was refused", "other-host")
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.01:
            raise FetchError("the time budget ran out", "timeout")
        headers = {"Accept": "application/fhir+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connect = min(self.settings.connect_timeout_ms / 1000, remaining)
        try:
            with _session().get(url, headers=headers, timeout=(connect, remaining),
                                allow_redirects=False, stream=True) as response:
                body = self._read(response)
        except requests.Timeout as error:
            raise FetchError("the FHIR server did not answer in time", "timeout") from error
        except requests.RequestException as error:
            raise FetchError("the FHIR server could not be reached", "unreachable") from error
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise FetchError("the FHIR server did not answer with JSON", "not-json") from error
        if not isinstance(document, dict):
            raise FetchError("the FHIR server did not answer with a FHIR resource", "not-fhir")
        if document.get("resourceType") == "OperationOutcome":
            raise FetchError(f"the FHIR server reported an error: {_diagnostics(document)}",
                             "operation-outcome")
        return document

    def _read(self, response: requests.Response) -> bytes:
        if 300 <= response.status_code < 400:
            raise FetchError(f"the FHIR server redirected (HTTP {response.status_code})",
                             "redirect")
        if response.status_code in (401, 403):
            raise FetchError(f"the FHIR server refused access (HTTP {response.status_code})",
                             "refused")
        if response.status_code != 200:
            raise FetchError(f"the FHIR server answered HTTP {response.status_code}",
                             f"http-{response.status_code // 100}xx")
        # read1 returns whatever has arrived, so a server that trickles its body is cut off at
        # the deadline (leaving the `with` closes the connection) instead of holding a thread.
        limit, chunks, size = self.settings.max_fhir_bytes, [], 0
        while chunk := response.raw.read1(65536):
            size += len(chunk)
            if size > limit:
                raise FetchError(f"the FHIR response exceeded {limit} bytes", "too-large")
            if time.monotonic() > self.deadline:
                raise FetchError("the time budget ran out", "timeout")
            chunks.append(chunk)
        return b"".join(chunks)


def entries(bundle: dict) -> list[dict]:
    """The resources of a Bundle; a malformed Bundle is an error, never 'no data'."""
    items = bundle.get("entry", [])
    if not isinstance(items, list) or not all(
            isinstance(e, dict) and isinstance(e.get("resource", {}), dict) for e in items):
        raise FetchError("the Bundle's entries are malformed")
    return [e["resource"] for e in items if "resource" in e]


def next_link(bundle: dict) -> str | None:
    links = bundle.get("link", [])
    if not isinstance(links, list):
        raise FetchError("the Bundle's links are malformed")
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) else None
    return None


def _diagnostics(outcome: dict) -> str:
    for issue in outcome.get("issue") or []:
        if isinstance(issue, dict):
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
            if isinstance(text, str):
                return text[:200]
    return "no details"

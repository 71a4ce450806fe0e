"""Calls to the EHR's FHIR server: bounded in time, requests, pages and bytes; the token goes
only to URLs under fhirServer.

Every failure becomes a FetchError whose message is safe to show in a card (no token, no body).
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import orjson
import requests
import urllib3

from . import metrics
from .config import Settings
from .deadline_http import NETWORK_ERRORS, session, within

PER_CALL = 10  # GETs of one hook call in flight at once (a service has at most 10 prefetch keys)
# Enough for 16 hook calls per worker (gunicorn runs 4) at full concurrency: as every GET ends
# by its call's deadline, one call can never wait for a thread another call holds.
POOL_THREADS = 16 * PER_CALL
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REFERENCE = re.compile(r"([A-Z][A-Za-z]{0,63})/([^/]+)(?:/_history/([^/]+))?")
_ENCODINGS = ("identity", "gzip", "deflate")

_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


class FetchError(Exception):
    """The data could not be obtained; the message says why, for a card. `reason`: a short
    fixed word for the metrics (cds_fhir_fetch_failures_total)."""

    def __init__(self, message: str, reason: str = "other") -> None:
        super().__init__(message)
        self.reason = reason


def is_fhir_id(value: str) -> bool:
    """A FHIR id (`[A-Za-z0-9\\-.]{1,64}`), but never `.` or `..`: those are path segments."""
    return _FHIR_ID.fullmatch(value) is not None and value.strip(".") != ""


def executor() -> ThreadPoolExecutor:
    """One pool per process (created after gunicorn forks), for concurrent FHIR queries."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="fhir")
        return _pool


def _session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = session(trust_env=False)  # no proxies or .netrc credentials from the host
    return _local.session


class FhirClient:
    """One hook call's FHIR server: its caps on GETs and bytes span every query of the call."""

    def __init__(self, base: str, token: str | None, settings: Settings, deadline: float):
        self.base = base.rstrip("/")
        self.token = token
        self.settings = settings
        self.deadline = deadline
        self._home = urlsplit(self.base)
        self._lock = threading.Lock()
        self._requests = self._bytes = 0

    def url_for(self, relative: str) -> str:
        path, _, query = relative.partition("?")
        params = urlencode(parse_qsl(query, keep_blank_values=True), safe=",")
        return f"{self.base}/{path.lstrip('/')}" + (f"?{params}" if params else "")

    def get_all(self, relative: str) -> tuple[list[dict], str | None]:
        """Resources of a read or search (following `next`), and why it is incomplete, if so."""
        if "?" not in relative:  # a read: one resource
            return [self.read(relative)], None
        return self.follow(self.url_for(relative), [])

    def read(self, reference: str) -> dict:
        """A resource by reference, relative (`Type/id[/_history/vid]`) or absolute under
        fhirServer; anything else is refused, never fetched."""
        relative = reference
        if "://" in reference:
            if not reference.startswith(self.base + "/"):
                raise FetchError("a reference outside fhirServer was not followed", "other-host")
            relative = reference[len(self.base) + 1:]
        match = _REFERENCE.fullmatch(relative)
        if match is None or not all(is_fhir_id(i) for i in match.groups()[1:] if i is not None):
            raise FetchError("a malformed reference was not followed")
        return self._get(f"{self.base}/{relative}")

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

    def _check_home(self, url: str) -> None:
        """Same scheme and host as fhirServer, a path at or under its path, no dot segments
        (decoded, as a server may decode them): the token never leaves for anywhere else."""
        try:
            parts = urlsplit(url)
        except ValueError:
            raise FetchError("a malformed link was refused") from None
        if (parts.scheme, parts.netloc.lower()) != (self._home.scheme, self._home.netloc.lower()):
            raise FetchError("a link to another host was refused", "other-host")
        segments = unquote(parts.path).replace("\\", "/").split("/")
        home = self._home.path
        if {".", ".."} & set(segments) or not (
                parts.path == home or parts.path.startswith(home + "/")):
            raise FetchError("a link outside fhirServer was refused", "other-host")

    def _charge_request(self) -> None:
        """One more GET for the call; over its cap, this query fails (and says so)."""
        with self._lock:
            allowed = self._requests < self.settings.max_fhir_requests
            self._requests += allowed
        if not allowed:
            raise FetchError(f"not fetched: the call reached its cap of "
                             f"{self.settings.max_fhir_requests} FHIR requests", "capped")

    def _charge_bytes(self, size: int) -> None:
        """Bytes read for the call, all answers together: memory is bounded by bytes too."""
        with self._lock:
            self._bytes += size
            total = self._bytes
        if total > self.settings.max_fhir_total_bytes:
            raise FetchError(f"the FHIR answers to this call exceeded "
                             f"{self.settings.max_fhir_total_bytes} bytes in all", "too-large")

    def _get(self, url: str) -> dict:
        try:
            return self._document(url)
        except FetchError as error:
            metrics.fhir_fetch_failed(error.reason)
            raise

    def _document(self, url: str) -> dict:
        self._check_home(url)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.01:
            raise FetchError("the time budget ran out", "timeout")
        self._charge_request()
        headers = {"Accept": "application/fhir+json", "Accept-Encoding": "gzip, deflate"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connect = min(self.settings.connect_timeout_ms / 1000, remaining)
        try:
            # within(): the socket is shut down at the deadline, however the server trickles.
            with within(self.deadline), _session().get(
                    url, headers=headers, timeout=(connect, remaining), allow_redirects=False,
                    stream=True) as response:
                body = self._read(response)
        except NETWORK_ERRORS as error:
            raise FetchError(*self._failure(error)) from error
        if time.monotonic() >= self.deadline:  # the watchdog may have cut it short: an early
            raise FetchError("the time budget ran out", "timeout")  # end is no answer
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

    def _failure(self, error: Exception) -> tuple[str, str]:
        """(message for the card, reason for the metrics)."""
        if time.monotonic() >= self.deadline:
            return "the time budget ran out", "timeout"
        if isinstance(error, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError):
            return "the FHIR server did not answer in time", "timeout"
        if isinstance(error, requests.exceptions.ContentDecodingError
                      | urllib3.exceptions.DecodeError):
            return "the FHIR server's compressed answer could not be decoded", "bad-encoding"
        return "the FHIR server could not be reached or broke off its answer", "unreachable"

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
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in _ENCODINGS:
            raise FetchError(f"the FHIR server used an unsupported encoding ({encoding[:20]})",
                             "bad-encoding")
        # read1 returns what has arrived, decoded, at most 64 KiB however well it compresses:
        # every cap below counts decoded bytes, so a zip bomb stops at the cap.
        limit, chunks, size = self.settings.max_fhir_bytes, [], 0
        while chunk := response.raw.read1(65536, decode_content=True):
            size += len(chunk)
            if size > limit:
                raise FetchError(f"the FHIR response exceeded {limit} bytes", "too-large")
            self._charge_bytes(len(chunk))
            if time.monotonic() > self.deadline:
                raise FetchError("the time budget ran out", "timeout")
            chunks.append(chunk)
        return b"".join(chunks)


def entries(bundle: dict) -> list[dict]:
    """The resources of a Bundle; a malformed Bundle is an error, never 'no data'."""
    items = bundle.get("entry", [])
    if not isinstance(items, list):
        raise FetchError("the Bundle's entries are malformed")
    resources = []
    for entry in items:  # one pass: prefetch Bundles hold thousands of entries
        resource = entry.get("resource") if isinstance(entry, dict) else False
        if resource is None:
            continue
        if not isinstance(resource, dict):
            raise FetchError("the Bundle's entries are malformed")
        resources.append(resource)
    return resources


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

"""Outbound HTTP under a wall-clock deadline (FHIR queries, JWK Set fetches).

A `requests` timeout bounds each socket read, not an exchange: a server that trickles its status
line, headers or body a byte at a time can hold the calling thread for as long as it likes. Here
every socket a call opens or reuses inside `within(deadline)` is handed to one watchdog thread,
which shuts it down when the deadline passes: the blocked read returns at once, the call fails
like any broken connection, and the thread is free again. (Name resolution happens before there
is a socket and is not covered: see the README's deployment notes.)
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager

# Everything a call can raise from the network, the HTTP framing or content decoding (urllib3's
# LocationParseError is a ValueError; a bad IDNA label a UnicodeError, also a ValueError).
NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError,
                  http.client.HTTPException, OSError, ValueError)

_local = threading.local()


class _Watchdog:
    """Shuts down the sockets of calls that outlive their deadline."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int]] = []      # (deadline, token), a heap
        self._sockets: dict[int, socket.socket] = {}  # token -> our duplicate of the socket
        self._tokens = itertools.count()
        self._wake = threading.Condition()
        threading.Thread(target=self._run, name="http-deadline", daemon=True).start()

    def watch(self, sock: socket.socket, deadline: float) -> int:
        # A duplicate descriptor: shutdown() acts on the connection whatever wraps or detaches
        # the caller's socket object (TLS does), and the descriptor cannot be reused meanwhile.
        duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type)
        with self._wake:
            token = next(self._tokens)
            self._sockets[token] = duplicate
            if not self._due or deadline < self._due[0][0]:
                self._wake.notify()  # else it already wakes no later than this deadline
            heapq.heappush(self._due, (deadline, token))
        return token

    def release(self, token: int) -> None:
        with self._wake:
            duplicate = self._sockets.pop(token, None)
        if duplicate is not None:
            duplicate.close()

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._due and self._due[0][1] not in self._sockets:
                    heapq.heappop(self._due)  # released in time
                wait = self._due[0][0] - time.monotonic() if self._due else None
                if wait is None or wait > 0:
                    self._wake.wait(wait)
                    continue
                duplicate = self._sockets.pop(heapq.heappop(self._due)[1])
                with contextlib.suppress(OSError):  # the peer may have closed it already
                    duplicate.shutdown(socket.SHUT_RDWR)
                duplicate.close()


_watchdogs: dict[int, _Watchdog] = {}
_watchdog_lock = threading.Lock()


def _watchdog() -> _Watchdog:
    """One per process: gunicorn forks workers, and threads do not survive a fork."""
    pid = os.getpid()
    with _watchdog_lock:
        if pid not in _watchdogs:
            _watchdogs[pid] = _Watchdog()
        return _watchdogs[pid]


@contextlib.contextmanager
def within(deadline: float) -> Iterator[None]:
    """Calls made by this thread inside the block lose their sockets at `deadline`
    (time.monotonic)."""
    _local.deadline, _local.tokens = deadline, {}
    try:
        yield
    finally:
        for token in _local.tokens.values():
            _watchdog().release(token)
        _local.deadline, _local.tokens = None, {}


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_local, "deadline", None)
    if sock is None or deadline is None or sock.fileno() in (-1, *_local.tokens):
        return
    _local.tokens[sock.fileno()] = _watchdog().watch(sock, deadline)


class _Watched:
    """A urllib3 connection whose socket is watched: when new (from the TLS handshake on) and
    whenever a kept-alive one is used again."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        _watch(sock)
        return sock

    def request(self, *args, **kwargs) -> None:
        _watch(self.sock)  # type: ignore[attr-defined]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _Connection(_Watched, HTTPConnection):
    pass


class _TLSConnection(_Watched, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS = {"http": _Pool, "https": _TLSPool}


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # a SOCKS manager keeps its own pools
            manager.pool_classes_by_scheme = _POOLS
        return manager


def session(trust_env: bool) -> requests.Session:
    """A requests Session whose calls honour `within`. trust_env: take proxies and .netrc
    credentials from the host's environment."""
    new = requests.Session()
    new.trust_env = trust_env
    for prefix in ("http://", "https://"):
        new.mount(prefix, _Adapter())
    return new

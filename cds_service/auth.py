"""Authentication of CDS clients: the CDS Hooks 2.0 JWT bearer token (spec section 7.1).

Every check fails closed with AuthError. Its message is for the log only (the HTTP answer is a
bare 401) and names iss, kid and jti at most, never the token.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt

from .deadline_http import NETWORK_ERRORS, session, within

log = logging.getLogger(__name__)

JWK = dict[str, Any]

MODES = ("off", "required")
# The spec forbids "none" and every symmetric (HS*) algorithm; only these may be allow-listed.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]

SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_JWKS_FILE = Path(__file__).with_name("sandbox-jwks.json")

MAX_LEEWAY = 300  # seconds; the replay cache keeps a jti this long past its exp
MAX_TOKEN_CHARS = 8192  # a CDS Hooks JWT is well under 1 KiB: don't parse anything huge
MAX_JTI_CHARS = 256
MAX_JWKS_BYTES = 64 * 1024
JWKS_MAX_AGE = 3600.0  # refetch a jwks_url at least hourly, so that removed keys stop working

_CLIENT_FIELDS = frozenset({"iss", "jwks", "jwks_file", "jwks_url", "jku"})
_KEY_SOURCES = ("jwks", "jwks_file", "jwks_url")


class AuthError(Exception):
    """A request that must get a 401; the message says why, for the log only."""


class ReplayCache(Protocol):
    """The (iss, jti) pairs already accepted, shared by every worker and instance (store.py)."""

    def check_and_store(self, iss: str, jti: str, exp: int) -> bool:
        """Store the pair and return True, or return False if it was stored before."""
        ...


class _RemoteKeys:
    """A client's JWK Set at a URL: fetched on first use, then cached."""

    def __init__(self, url: str, timeout: float, cooldown: float) -> None:
        self._url = url
        self._timeout = timeout
        self._cooldown = cooldown
        self._keys: dict[str, JWK] = {}
        self._fetched_at = -math.inf
        self._next_fetch = -math.inf
        self._lock = threading.Lock()

    def get(self, kid: str) -> JWK | None:
        # Other tokens of this issuer wait for a fetch under way (at most the timeout); other
        # issuers never do.
        with self._lock:
            now = time.monotonic()
            wanted = kid not in self._keys or now - self._fetched_at > JWKS_MAX_AGE
            if wanted and now >= self._next_fetch:
                self._fetch()
            return self._keys.get(kid)

    def _fetch(self) -> None:
        refetch = bool(self._keys)
        try:
            self._keys = _fetch_jwks(self._url, self._timeout)
            self._fetched_at = time.monotonic()
        except NETWORK_ERRORS as err:
            # Keep the keys we have: a client's outage must not lock out its valid tokens.
            log.warning("JWK Set fetch from %s failed: %s", self._url, err)
            refetch = True
        # Refetches and failures start the cool-down, so that tokens with made-up kids cannot
        # make us hammer the client; a kid missing from the first load may be a new key. It
        # counts from the end of the fetch: a slow fetch is never followed at once by another.
        if refetch:
            self._next_fetch = time.monotonic() + self._cooldown


@dataclass(frozen=True)
class _Client:
    iss: str
    keys: Mapping[str, JWK] | _RemoteKeys
    jku: frozenset[str]


class Authenticator:
    """Checks the CDS client's JWT on each request (see from_config for the settings)."""

    def __init__(
        self,
        mode: str,
        clients: Mapping[str, _Client],
        replay: ReplayCache,
        algorithms: tuple[str, ...],
        leeway: int,
        max_lifetime: int,
    ) -> None:
        self._mode = mode
        self._clients = clients
        self._replay = replay
        self._algorithms = algorithms
        self._leeway = leeway
        self._max_lifetime = max_lifetime

    @classmethod
    def from_config(
        cls,
        mode: str,
        clients_file: str | None,
        clients_json: str | None,
        replay: ReplayCache,
        allow_sandbox: bool = False,
        algorithms: tuple[str, ...] = ("ES384", "RS384", "ES256", "RS256"),
        leeway: int = 30,
        max_lifetime: int = 3600,
        jwks_timeout: float = 2.0,
        refresh_cooldown: float = 60.0,
    ) -> Authenticator:
        """Build from settings; raises ValueError on any bad setting or trusted-clients entry."""
        if mode not in MODES:
            raise ValueError(f"auth mode must be one of {', '.join(MODES)}, not {mode!r}")
        not_allowed = sorted(set(algorithms) - ASYMMETRIC_ALGORITHMS)
        if not algorithms or not_allowed:
            raise ValueError(
                f"auth algorithms must be asymmetric JWS algorithms from "
                f"{sorted(ASYMMETRIC_ALGORITHMS)}; not allowed: {not_allowed}"
            )
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"auth leeway must be 0 to {MAX_LEEWAY} seconds, not {leeway}")
        if max_lifetime <= 0 or jwks_timeout <= 0 or refresh_cooldown < 0:
            raise ValueError("auth max_lifetime, jwks_timeout must be > 0; refresh_cooldown >= 0")
        clients = _load_clients(
            clients_file, clients_json, allow_sandbox, jwks_timeout, refresh_cooldown
        )
        if mode == "required" and not clients:
            raise ValueError("auth mode 'required' needs at least one trusted client")
        return cls(mode, clients, replay, tuple(algorithms), leeway, max_lifetime)

    @property
    def required(self) -> bool:
        return self._mode == "required"

    def authenticate(self, authorization: str | None, audience: str) -> str:
        """Check the Authorization header of a call to the URL `audience`; return the iss."""
        token = _bearer_token(authorization)
        header, unverified_claims = _unverified(token)
        client, jwk = self._route(header, unverified_claims)
        claims = self._verify(token, header["alg"], jwk, client.iss, audience)
        self._check_claims(claims)
        if not self._replay.check_and_store(client.iss, claims["jti"], math.ceil(claims["exp"])):
            raise AuthError(f"replayed jti {_show(claims['jti'])} from iss {client.iss!r}")
        return client.iss

    def _route(self, header: dict[str, Any], claims: dict[str, Any]) -> tuple[_Client, JWK]:
        """The trusted client and key the unverified token names, if it may use them."""
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthError(f"alg {_show(alg)} is not allowed")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise AuthError(f"typ {_show(typ)} is not JWT")
        iss = claims.get("iss")
        client = self._clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise AuthError(f"untrusted iss {_show(iss)}")
        # Before any key lookup: a token must never steer us to a URL of its choosing.
        jku = header.get("jku")
        if "jku" in header and not (isinstance(jku, str) and jku in client.jku):
            raise AuthError(f"jku {_show(jku)} is not allowed for iss {iss!r}")
        kid = header.get("kid")
        jwk = client.keys.get(kid) if isinstance(kid, str) else None
        if jwk is None:
            raise AuthError(f"unknown kid {_show(kid)} for iss {iss!r}")
        return client, jwk

    def _verify(self, token: str, alg: str, jwk: JWK, iss: str, audience: str) -> dict[str, Any]:
        """The claims, once signature, aud, exp and the required claims check out."""
        # A key's own alg and use bind it: an RS384 key must not verify an RS256 signature.
        if jwk.get("alg", alg) != alg or jwk.get("use", "sig") != "sig":
            raise AuthError(f"key {jwk['kid']!r} of iss {iss!r} is not for {alg} signatures")
        try:
            return jwt.decode(
                token,
                key=jwt.PyJWK(jwk, algorithm=alg),
                algorithms=list(self._algorithms),
                audience=audience,
                issuer=iss,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as err:
            reason = f"{type(err).__name__}: {err}"
            raise AuthError(f"invalid token from iss {iss!r}: {reason}") from None

    def _check_claims(self, claims: dict[str, Any]) -> None:
        iat, exp, jti = claims["iat"], claims["exp"], claims["jti"]
        # PyJWT would also take numeric strings; NumericDate is a JSON number.
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (iat, exp)):
            raise AuthError("iat and exp must be numbers")
        # Explicit rather than trusting each PyJWT version to check it.
        if iat > time.time() + self._leeway:
            raise AuthError(f"iat is in the future (jti {_show(jti)})")
        # A long-lived token is a long replay window and keeps its jti stored for as long.
        if exp - iat > self._max_lifetime:
            raise AuthError(f"lifetime {exp - iat}s is over {self._max_lifetime}s")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise AuthError(f"jti must be a string of 1 to {MAX_JTI_CHARS} characters")


def _bearer_token(authorization: str | None) -> str:
    parts = (authorization or "").split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise AuthError("Authorization header missing or not 'Bearer <token>'")
    if len(parts[1]) > MAX_TOKEN_CHARS:
        raise AuthError(f"token longer than {MAX_TOKEN_CHARS} characters")
    return parts[1]


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, read only to pick the client and key: none of it is trusted yet."""
    try:
        decoded = jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError as err:
        raise AuthError(f"malformed token: {type(err).__name__}") from None
    return decoded["header"], decoded["payload"]


def _show(value: object) -> str:
    """An untrusted value, made safe and short for a log line."""
    return repr(value)[:120]


def _is_https_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme == "https" and bool(parts.netloc)


def _parse_jwks(doc: object, where: str) -> dict[str, JWK]:
    """A JWK Set's usable public keys by kid (RFC 7517 section 5: skip keys not understood)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"{where}: not a JWK Set (an object with a 'keys' array)")
    keys: dict[str, JWK] = {}
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
            continue  # the spec selects keys by kid only
        if "d" in jwk:
            raise ValueError(f"{where}: key {jwk['kid']!r} holds private key material")
        if jwk["kid"] in keys:
            raise ValueError(f"{where}: kid {jwk['kid']!r} is not unique")
        try:
            jwt.PyJWK(jwk)
        except (jwt.PyJWTError, TypeError):  # TypeError: e.g. an "alg" that is not a string
            continue
        keys[jwk["kid"]] = jwk
    if not keys:
        raise ValueError(f"{where}: no usable key with a kid")
    return keys


def _fetch_jwks(url: str, timeout: float) -> dict[str, JWK]:
    # within(): requests' timeout bounds each read only; this ends the whole exchange, headers
    # included, `timeout` seconds after it starts, however slowly the server sends.
    # No redirects: the keys come from the configured URL, not from wherever it points.
    deadline = time.monotonic() + timeout
    with session(trust_env=True) as http, within(deadline), http.get(
        url,
        timeout=timeout,
        allow_redirects=False,
        stream=True,
        headers={"Accept": "application/json"},
    ) as response:
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")
        body = bytearray()
        for chunk in response.iter_content(chunk_size=8192):
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"JWK Set over {MAX_JWKS_BYTES} bytes")
    if time.monotonic() >= deadline:  # cut short by the watchdog: whatever came is no answer
        raise ValueError(f"JWK Set took over {timeout}s")
    return _parse_jwks(json.loads(body), url)


def _read_json(path: Path, where: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{where}: cannot read JSON from {path}: {err}") from None


def _load_clients(
    clients_file: str | None,
    clients_json: str | None,
    allow_sandbox: bool,
    jwks_timeout: float,
    refresh_cooldown: float,
) -> dict[str, _Client]:
    """The trusted clients by iss, from the file and the JSON string together."""
    sources: list[tuple[str, object, Path]] = []
    if clients_file:
        where = f"auth clients file {clients_file}"
        # A relative jwks_file is relative to the clients file that names it.
        sources.append((where, _read_json(Path(clients_file), where), Path(clients_file).parent))
    if clients_json:
        try:
            sources.append(("auth clients JSON", json.loads(clients_json), Path.cwd()))
        except ValueError as err:
            raise ValueError(f"auth clients JSON is not JSON: {err}") from None

    clients: dict[str, _Client] = {}

    def add(client: _Client, where: str) -> None:
        if client.iss in clients:
            raise ValueError(f"{where}: iss {client.iss!r} is configured twice")
        clients[client.iss] = client

    for where, doc, base in sources:
        if (
            not isinstance(doc, dict)
            or set(doc) != {"clients"}
            or not isinstance(doc["clients"], list)
        ):
            raise ValueError(f'{where}: expected {{"clients": [...]}} and nothing else')
        for i, entry in enumerate(doc["clients"]):
            entry_where = f"{where}: clients[{i}]"
            add(_client(entry, entry_where, base, jwks_timeout, refresh_cooldown), entry_where)
    if allow_sandbox:
        keys = _parse_jwks(_read_json(SANDBOX_JWKS_FILE, "sandbox"), "sandbox JWK Set")
        add(_Client(SANDBOX_ISS, keys, frozenset({SANDBOX_JKU})), "allow_sandbox")
    return clients


def _client(
    entry: object, where: str, base: Path, jwks_timeout: float, refresh_cooldown: float
) -> _Client:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: not an object")
    unknown = sorted(set(entry) - _CLIENT_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(_CLIENT_FIELDS)}")
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss:
        raise ValueError(f"{where}: missing iss")
    where = f"{where} (iss {iss})"
    key_sources = [name for name in _KEY_SOURCES if name in entry]
    if len(key_sources) != 1:
        raise ValueError(f"{where}: needs exactly one key source of {', '.join(_KEY_SOURCES)}")
    jku = entry.get("jku", [])
    if not isinstance(jku, list) or not all(_is_https_url(url) for url in jku):
        raise ValueError(f"{where}: jku must be a list of https URLs")

    keys: Mapping[str, JWK] | _RemoteKeys
    if "jwks" in entry:
        keys = _parse_jwks(entry["jwks"], f"{where}: jwks")
    elif "jwks_file" in entry:
        if not isinstance(entry["jwks_file"], str):
            raise ValueError(f"{where}: jwks_file must be a path")
        path = base / entry["jwks_file"]
        keys = _parse_jwks(_read_json(path, where), f"{where}: {path}")
    else:
        url = entry["jwks_url"]
        if not _is_https_url(url):
            raise ValueError(f"{where}: jwks_url must be an https URL")
        keys = _RemoteKeys(url, jwks_timeout, refresh_cooldown)
        jku = [*jku, url]  # a jku naming the very URL we take the keys from is safe
    return _Client(iss, keys, frozenset(jku))

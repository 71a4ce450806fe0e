"""CDS client JWT authentication: one test per threat, each failing without its defence."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service import auth
from cds_service.auth import Authenticator, AuthError
from cds_service.store import SQLITE_PREFIX, Store

from .fhir_server import FhirServer, Reply

ISS = "https://ehr.example.org"
AUD = "https://cds.example.org/cds-services/azathioprine"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
EC_KID = "ec-1"
RSA_KID = "rsa-1"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
SANDBOX_JWKS = json.loads(auth.SANDBOX_JWKS_FILE.read_text())
# The sandbox's published public key (its private half is public too: trust it for trials only).
SANDBOX_KEY = {
    "kty": "EC",
    "use": "sig",
    "crv": "P-384",
    "kid": SANDBOX_KID,
    "x": "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",
    "y": "Sm3mLE-n1zYNla_aiE3cb3nZsL51RbC7ysw3q8aJLxGm-hx79RPMYpITDjp7kgzy",
    "alg": "ES384",
}


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.ECAlgorithm if alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
    return {**algorithm.to_jwk(private_key.public_key(), as_dict=True), "kid": kid, "alg": alg}


@pytest.fixture(scope="module")
def jwks(ec_key: Any, rsa_key: Any) -> dict[str, Any]:
    return {"keys": [public_jwk(ec_key, EC_KID, "ES384"), public_jwk(rsa_key, RSA_KID, "RS384")]}


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims; an override of None removes the claim."""
    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def sign(
    key: Any, alg: str = "ES384", kid: str = EC_KID, headers: dict | None = None, **overrides: Any
) -> str:
    return jwt.encode(
        claims(**overrides),
        key,
        algorithm=alg,
        headers={"kid": kid, "typ": "JWT", **(headers or {})},
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], body: dict[str, Any], hmac_secret: bytes | None) -> str:
    """A token PyJWT refuses to make: alg none, or HMAC keyed with a public key."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    signature = b""
    if hmac_secret is not None:
        signature = hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def ReplayCache(path: str) -> Store:  # noqa: N802 - the replay cache lives in the store
    return Store(SQLITE_PREFIX + path, b"pseudonym-key-for-tests-only-32b")


def make_auth(tmp_path: Path, clients: list[dict[str, Any]] | None, **kwargs: Any) -> Authenticator:
    clients_json = None if clients is None else json.dumps({"clients": clients})
    replay = ReplayCache(str(tmp_path / "jti.sqlite3"))
    return Authenticator.from_config("required", None, clients_json, replay, **kwargs)


@pytest.fixture
def authn(tmp_path: Path, jwks: dict[str, Any]) -> Authenticator:
    return make_auth(tmp_path, [{"iss": ISS, "jwks": jwks}])


def reject(
    authenticator: Authenticator, token: str | None, match: str, audience: str = AUD
) -> None:
    header = None if token is None else f"Bearer {token}"
    with pytest.raises(AuthError, match=match) as info:
        authenticator.authenticate(header, audience)
    if token:  # the reason goes to the log: no token, and not even its signature, in it
        assert token not in str(info.value)
        signature = token.rpartition(".")[2]
        assert not signature or signature not in str(info.value)


# --- accepted -------------------------------------------------------------------------------


def test_valid_es384_token_is_accepted(authn: Authenticator, ec_key: Any) -> None:
    assert authn.authenticate(f"Bearer {sign(ec_key)}", AUD) == ISS
    assert authn.required


def test_valid_rs384_token_is_accepted(authn: Authenticator, rsa_key: Any) -> None:
    assert authn.authenticate(f"Bearer {sign(rsa_key, 'RS384', RSA_KID)}", AUD) == ISS


def test_scheme_is_case_insensitive(authn: Authenticator, ec_key: Any) -> None:
    assert authn.authenticate(f"bearer {sign(ec_key)}", AUD) == ISS


def test_aud_as_one_element_array_is_accepted(authn: Authenticator, ec_key: Any) -> None:
    assert authn.authenticate(f"Bearer {sign(ec_key, aud=[AUD])}", AUD) == ISS


def test_aud_array_holding_the_url_is_accepted(authn: Authenticator, ec_key: Any) -> None:
    token = sign(ec_key, aud=["https://other.example.org", AUD])
    assert authn.authenticate(f"Bearer {token}", AUD) == ISS


def test_lifetime_of_exactly_max_is_accepted(authn: Authenticator, ec_key: Any) -> None:
    now = int(time.time())
    assert authn.authenticate(f"Bearer {sign(ec_key, iat=now, exp=now + 3600)}", AUD) == ISS


# --- the Authorization header ---------------------------------------------------------------


def test_missing_header_is_rejected(authn: Authenticator) -> None:
    reject(authn, None, "missing")
    with pytest.raises(AuthError):
        authn.authenticate("", AUD)


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Token x.y.z"])
def test_wrong_scheme_is_rejected(authn: Authenticator, header: str) -> None:
    with pytest.raises(AuthError, match="Bearer"):
        authn.authenticate(header, AUD)


def test_token_without_scheme_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    with pytest.raises(AuthError, match="Bearer"):
        authn.authenticate(sign(ec_key), AUD)


def test_garbage_token_is_rejected(authn: Authenticator) -> None:
    reject(authn, "not.a.jwt", "malformed")


def test_huge_token_is_rejected_unparsed(authn: Authenticator, ec_key: Any) -> None:
    reject(authn, sign(ec_key, pad="x" * auth.MAX_TOKEN_CHARS), "longer than")


# --- algorithm ------------------------------------------------------------------------------


def test_alg_none_is_rejected(authn: Authenticator) -> None:
    token = forge({"alg": "none", "typ": "JWT", "kid": EC_KID}, claims(), hmac_secret=None)
    reject(authn, token, "alg 'none' is not allowed")


@pytest.mark.parametrize("secret_form", ["pem", "jwk"])
def test_hs256_keyed_with_the_public_key_is_rejected(
    authn: Authenticator, rsa_key: Any, jwks: dict[str, Any], secret_form: str
) -> None:
    # The classic confusion attack: the public key, which anyone has, used as an HMAC secret.
    if secret_form == "pem":
        secret = rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        secret = json.dumps(jwks["keys"][1]).encode()
    token = forge({"alg": "HS256", "typ": "JWT", "kid": RSA_KID}, claims(), secret)
    reject(authn, token, "alg 'HS256' is not allowed")


def test_alg_not_on_the_list_is_rejected(tmp_path: Path, jwks: dict, rsa_key: Any) -> None:
    only_es384 = make_auth(tmp_path, [{"iss": ISS, "jwks": jwks}], algorithms=("ES384",))
    reject(only_es384, sign(rsa_key, "RS384", RSA_KID), "alg 'RS384' is not allowed")


def test_alg_other_than_the_keys_own_alg_is_rejected(authn: Authenticator, rsa_key: Any) -> None:
    # The key is published as RS384; the same RSA key must not pass for RS256.
    reject(authn, sign(rsa_key, "RS256", RSA_KID), "not for RS256")


def test_alg_of_another_key_type_is_rejected(tmp_path: Path, ec_key: Any, rsa_key: Any) -> None:
    # An RSA key without its own "alg" must not be used for an ES384 token.
    rsa_jwk = public_jwk(rsa_key, RSA_KID, "RS384")
    del rsa_jwk["alg"]
    authenticator = make_auth(tmp_path, [{"iss": ISS, "jwks": {"keys": [rsa_jwk]}}])
    reject(authenticator, sign(ec_key, "ES384", RSA_KID), "invalid token")


def test_typ_other_than_jwt_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    reject(authn, sign(ec_key, headers={"typ": "at+jwt"}), "typ")


# --- issuer, jku and kid ---------------------------------------------------------------------


def test_untrusted_iss_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    reject(authn, sign(ec_key, iss="https://evil.example.org"), "untrusted iss")


def test_missing_iss_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    reject(authn, sign(ec_key, iss=None), "untrusted iss None")


@responses.activate
def test_jku_not_allowed_is_rejected_without_any_fetch(
    tmp_path: Path, jwks: dict, ec_key: Any
) -> None:
    evil = "https://evil.example.org/jwks.json"
    responses.get(evil, json=jwks)
    responses.get(JWKS_URL, json=jwks)
    authenticator = make_auth(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}])
    reject(authenticator, sign(ec_key, headers={"jku": evil}), "jku")
    assert len(responses.calls) == 0


@responses.activate
def test_allowed_jku_is_accepted_and_jwks_url_is_implicitly_allowed(
    tmp_path: Path, jwks: dict, ec_key: Any
) -> None:
    other = "https://ehr.example.org/other-jwks.json"
    responses.get(JWKS_URL, json=jwks)
    authenticator = make_auth(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL, "jku": [other]}])
    for jku in (other, JWKS_URL):
        assert authenticator.authenticate(f"Bearer {sign(ec_key, headers={'jku': jku})}", AUD)
    # The allowed jku is only allowed: keys still come from the configured jwks_url.
    assert [call.request.url for call in responses.calls] == [JWKS_URL]


def test_jku_on_client_with_inline_keys_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    reject(authn, sign(ec_key, headers={"jku": JWKS_URL}), "jku")


def test_unknown_kid_with_inline_keys_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    reject(authn, sign(ec_key, kid="nope"), "unknown kid 'nope'")


@responses.activate
def test_jwks_url_is_fetched_once_and_cached(
    tmp_path: Path, jwks: dict, ec_key: Any, rsa_key: Any
) -> None:
    responses.get(JWKS_URL, json=jwks)
    authenticator = make_auth(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}])
    assert authenticator.authenticate(f"Bearer {sign(ec_key)}", AUD) == ISS
    assert authenticator.authenticate(f"Bearer {sign(rsa_key, 'RS384', RSA_KID)}", AUD) == ISS
    assert authenticator.authenticate(f"Bearer {sign(ec_key)}", AUD) == ISS
    assert len(responses.calls) == 1
    assert responses.calls[0].request.headers["Accept"] == "application/json"


@responses.activate
def test_unknown_kid_refetches_once_then_cool_down_holds(
    tmp_path: Path, jwks: dict, ec_key: Any
) -> None:
    responses.get(JWKS_URL, json=jwks)
    authenticator = make_auth(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}])
    assert authenticator.authenticate(f"Bearer {sign(ec_key)}", AUD) == ISS
    assert len(responses.calls) == 1
    reject(authenticator, sign(ec_key, kid="new-1"), "unknown kid")
    assert len(responses.calls) == 2  # one refetch, in case the client rotated its keys
    reject(authenticator, sign(ec_key, kid="new-2"), "unknown kid")
    reject(authenticator, sign(ec_key, kid="new-1"), "unknown kid")
    assert len(responses.calls) == 2  # within the cool-down: no more fetches


@responses.activate
def test_rotated_key_is_found_by_refetch(tmp_path: Path, jwks: dict, ec_key: Any) -> None:
    rotated = ec.generate_private_key(ec.SECP384R1())
    responses.get(JWKS_URL, json=jwks)
    responses.get(JWKS_URL, json={"keys": [public_jwk(rotated, "ec-2", "ES384")]})
    authenticator = make_auth(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}], refresh_cooldown=0)
    assert authenticator.authenticate(f"Bearer {sign(ec_key)}", AUD) == ISS
    assert authenticator.authenticate(f"Bearer {sign(rotated, kid='ec-2')}", AUD) == ISS
    assert len(responses.calls) == 2


@responses.activate
@pytest.mark.parametrize(
    "reply", ["redirect", "server error", "not json", "oversize", "unusable key"]
)
def test_bad_jwks_url_replies_are_not_trusted(
    tmp_path: Path, ec_key: Any, jwks: dict, reply: str
) -> None:
    evil = "https://evil.example.org/jwks.json"
    responses.get(evil, json=jwks)
    responses.get(
        JWKS_URL,
        **{
            "redirect": {"status": 302, "headers": {"Location": evil}},
            "server error": {"status": 500, "json": jwks},
            "not json": {"body": "not json"},
            "oversize": {"json": {**jwks, "pad": "x" * auth.MAX_JWKS_BYTES}},
            "unusable key": {"json": {"keys": [{**jwks["keys"][0], "alg": ["ES384"]}]}},
        }[reply],
    )
    authenticator = make_auth(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}])
    reject(authenticator, sign(ec_key), "unknown kid")
    assert [call.request.url for call in responses.calls] == [JWKS_URL]  # no redirect followed


# --- signature and claims --------------------------------------------------------------------


def test_bad_signature_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    reject(authn, sign(other), "InvalidSignatureError")


def test_wrong_aud_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    # A token for discovery must not work for the service (and vice versa).
    reject(authn, sign(ec_key, aud="https://cds.example.org/cds-services"), "InvalidAudience")
    reject(authn, sign(ec_key, aud=[AUD]), "InvalidAudience", audience=AUD + "/feedback")


def test_expired_token_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    now = int(time.time())
    reject(authn, sign(ec_key, iat=now - 400, exp=now - 60), "ExpiredSignature")


def test_expiry_within_leeway_is_accepted(authn: Authenticator, ec_key: Any) -> None:
    now = int(time.time())
    assert authn.authenticate(f"Bearer {sign(ec_key, iat=now - 300, exp=now - 10)}", AUD) == ISS


@pytest.mark.parametrize("claim", ["jti", "iat", "exp", "aud"])
def test_missing_required_claim_is_rejected(authn: Authenticator, ec_key: Any, claim: str) -> None:
    reject(authn, sign(ec_key, **{claim: None}), f"MissingRequiredClaim.*{claim}")


@pytest.mark.parametrize("bad", [{"jti": ""}, {"jti": 42}, {"iat": "1700000000"}])
def test_malformed_claims_are_rejected(authn: Authenticator, ec_key: Any, bad: dict) -> None:
    with pytest.raises(AuthError):
        authn.authenticate(f"Bearer {sign(ec_key, **bad)}", AUD)


def test_lifetime_too_long_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    now = int(time.time())
    reject(authn, sign(ec_key, iat=now, exp=now + 3601), "lifetime 3601s")


def test_iat_in_the_future_is_rejected(
    authn: Authenticator, ec_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    token = sign(ec_key, iat=now + 120, exp=now + 400)
    # Disable PyJWT's own iat check, so that this test checks ours.
    monkeypatch.setattr(jwt.api_jwt.PyJWT, "_validate_iat", lambda *args, **kwargs: None)
    reject(authn, token, "iat is in the future")


# --- replay ---------------------------------------------------------------------------------


def test_replay_is_rejected(authn: Authenticator, ec_key: Any) -> None:
    token = sign(ec_key)
    assert authn.authenticate(f"Bearer {token}", AUD) == ISS
    reject(authn, token, "replayed jti")


def test_replay_is_rejected_across_workers(tmp_path: Path, jwks: dict, ec_key: Any) -> None:
    # Two workers: two Authenticators, two ReplayCache instances, one SQLite file.
    worker_1 = make_auth(tmp_path, [{"iss": ISS, "jwks": jwks}])
    worker_2 = make_auth(tmp_path, [{"iss": ISS, "jwks": jwks}])
    token = sign(ec_key)
    assert worker_1.authenticate(f"Bearer {token}", AUD) == ISS
    reject(worker_2, token, "replayed jti")


def test_the_same_jti_from_two_issuers_is_accepted(
    tmp_path: Path, jwks: dict, ec_key: Any
) -> None:
    other = "https://other-ehr.example.org"
    authenticator = make_auth(tmp_path, [{"iss": ISS, "jwks": jwks}, {"iss": other, "jwks": jwks}])
    jti = str(uuid.uuid4())
    assert authenticator.authenticate(f"Bearer {sign(ec_key, jti=jti)}", AUD) == ISS
    assert authenticator.authenticate(f"Bearer {sign(ec_key, jti=jti, iss=other)}", AUD) == other
    reject(authenticator, sign(ec_key, jti=jti, iss=other), "replayed jti")


# --- the sandbox ----------------------------------------------------------------------------


def test_packaged_sandbox_jwks_is_the_sandbox_public_jwks() -> None:
    assert SANDBOX_JWKS == {"keys": [SANDBOX_KEY]}


@responses.activate
def test_sandbox_keys_load_from_the_package_when_allowed(tmp_path: Path, ec_key: Any) -> None:
    # We cannot sign as the sandbox. A token with its iss, kid and jku but our signature must
    # get as far as the signature check, with the packaged keys and no fetch.
    authenticator = make_auth(tmp_path, None, allow_sandbox=True)
    sandbox = {"iss": auth.SANDBOX_ISS, "kid": SANDBOX_KID}
    reject(
        authenticator,
        sign(ec_key, headers={"jku": auth.SANDBOX_JKU}, **sandbox),
        "InvalidSignatureError",
    )
    reject(
        authenticator, sign(ec_key, headers={"jku": "https://evil.example.org/j"}, **sandbox), "jku"
    )
    assert len(responses.calls) == 0


def test_sandbox_is_not_trusted_by_default(tmp_path: Path, jwks: dict, ec_key: Any) -> None:
    authenticator = make_auth(tmp_path, [{"iss": ISS, "jwks": jwks}])
    reject(authenticator, sign(ec_key, kid=SANDBOX_KID, iss=auth.SANDBOX_ISS), "untrusted iss")


# --- configuration --------------------------------------------------------------------------


def test_clients_file_and_json_merge(tmp_path: Path, jwks: dict, ec_key: Any, rsa_key: Any) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys/ehr.json").write_text(json.dumps(jwks))
    clients_file = tmp_path / "clients.json"
    # jwks_file is relative to the clients file.
    clients_file.write_text(json.dumps({"clients": [{"iss": ISS, "jwks_file": "keys/ehr.json"}]}))
    other_iss = "https://other-ehr.example.org"
    clients_json = json.dumps({"clients": [{"iss": other_iss, "jwks": jwks}]})
    authenticator = Authenticator.from_config(
        "required", str(clients_file), clients_json, ReplayCache(str(tmp_path / "jti.sqlite3"))
    )
    assert authenticator.authenticate(f"Bearer {sign(ec_key)}", AUD) == ISS
    token = sign(rsa_key, "RS384", RSA_KID, iss=other_iss)
    assert authenticator.authenticate(f"Bearer {token}", AUD) == other_iss


def test_off_mode_is_not_required(tmp_path: Path) -> None:
    replay = ReplayCache(str(tmp_path / "jti.sqlite3"))
    assert not Authenticator.from_config("off", None, None, replay).required


@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        (None, {"mode": "optional"}, "auth mode must be one of"),
        (None, {}, "needs at least one trusted client"),
        ([], {"algorithms": ("ES384", "HS256")}, r"not allowed: \['HS256'\]"),
        ([], {"algorithms": ("none",)}, r"not allowed: \['none'\]"),
        ([], {"algorithms": ()}, "asymmetric"),
        ([], {"leeway": 301}, "leeway"),
        ([], {"max_lifetime": 0}, "max_lifetime"),
        ({"clients": [], "extra": 1}, {}, "expected"),
        ({"client": []}, {}, "expected"),
        ({"clients": ["x"]}, {}, r"clients\[0\]: not an object"),
        (
            {"clients": [{"iss": ISS, "jwks": SANDBOX_JWKS, "kid": "x"}]},
            {},
            r"unknown keys \['kid'\]",
        ),
        ({"clients": [{"jwks": SANDBOX_JWKS}]}, {}, "missing iss"),
        ({"clients": [{"iss": ISS}]}, {}, "exactly one key source"),
        (
            {"clients": [{"iss": ISS, "jwks": SANDBOX_JWKS, "jwks_url": JWKS_URL}]},
            {},
            "exactly one key source",
        ),
        (
            {"clients": [{"iss": ISS, "jwks_url": "http://ehr.example.org/jwks.json"}]},
            {},
            "jwks_url must be an https URL",
        ),
        (
            {"clients": [{"iss": ISS, "jwks_url": JWKS_URL, "jku": "https://a.example/j"}]},
            {},
            "jku must be a list of https URLs",
        ),
        (
            {"clients": [{"iss": ISS, "jwks_url": JWKS_URL, "jku": ["http://a.example/j"]}]},
            {},
            "jku must be a list of https URLs",
        ),
        ({"clients": [{"iss": ISS, "jwks_file": "missing.json"}]}, {}, "cannot read JSON"),
        ({"clients": [{"iss": ISS, "jwks": {"keys": []}}]}, {}, "no usable key"),
        ({"clients": [{"iss": ISS, "jwks": {"kty": "EC"}}]}, {}, "not a JWK Set"),
        (
            {"clients": [{"iss": ISS, "jwks": SANDBOX_JWKS}, {"iss": ISS, "jwks": SANDBOX_JWKS}]},
            {},
            "configured twice",
        ),
        (
            {"clients": [{"iss": auth.SANDBOX_ISS, "jwks": SANDBOX_JWKS}]},
            {"allow_sandbox": True},
            "configured twice",
        ),
    ],
)
def test_config_errors(tmp_path: Path, config: Any, kwargs: dict, message: str) -> None:
    text = None if config is None else json.dumps(config)
    kwargs = {"mode": "required", **kwargs}
    with pytest.raises(ValueError, match=message):
        Authenticator.from_config(
            kwargs.pop("mode"), None, text, ReplayCache(str(tmp_path / "j.sqlite3")), **kwargs
        )


def test_config_errors_for_bad_json_and_private_keys(tmp_path: Path, ec_key: Any) -> None:
    replay = ReplayCache(str(tmp_path / "jti.sqlite3"))
    with pytest.raises(ValueError, match="not JSON"):
        Authenticator.from_config("required", None, "{clients", replay)
    private = {**jwt.algorithms.ECAlgorithm.to_jwk(ec_key, as_dict=True), "kid": EC_KID}
    clients = json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [private]}}]})
    with pytest.raises(ValueError, match="private key material"):
        Authenticator.from_config("required", None, clients, replay)


# --- JWK Set fetches against a real local server --------------------------------------------

OTHER_ISS = "https://other-ehr.example.org"
JWKS_TIMEOUT = 0.3


@pytest.fixture
def jwks_server():
    server = FhirServer().start()
    yield server
    server.stop()


def background(function: Callable[..., Any], *args: Any) -> Future:
    """`function` in a thread the test never joins: a call that hangs fails the test through
    result(timeout) rather than hanging it (the server's stop() ends it afterwards)."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(function, *args)
    pool.shutdown(wait=False)
    return future


def remote_auth(tmp_path: Path, url: str, jwks: dict[str, Any]) -> Authenticator:
    """ISS's keys at `url` (plain http: the server is local), OTHER_ISS's keys inline."""
    clients = {
        ISS: auth._Client(ISS, auth._RemoteKeys(url, JWKS_TIMEOUT, 60.0), frozenset()),
        OTHER_ISS: auth._Client(OTHER_ISS, auth._parse_jwks(jwks, "test"), frozenset()),
    }
    replay = ReplayCache(str(tmp_path / "jti.sqlite3"))
    return Authenticator("required", clients, replay, ("ES384", "RS384"), 30, 3600)


def test_a_jwks_server_trickling_headers_is_cut_at_the_timeout(
    tmp_path: Path, jwks_server: FhirServer, jwks: dict, ec_key: Any
) -> None:
    """Headers one byte every 50 ms, never ending: the fetch ends at the timeout (each read
    alone is quick, so a per-read timeout never fires), the connection is dropped, and the
    cool-down counted from the failure's end stops the next token from fetching again."""
    jwks_server.respond = lambda path: Reply(trickle_headers=True)
    authenticator = remote_auth(tmp_path, f"{jwks_server.origin}/jwks.json", jwks)
    started = time.monotonic()
    background(reject, authenticator, sign(ec_key), "unknown kid").result(JWKS_TIMEOUT + 0.4)
    again = time.monotonic()
    reject(authenticator, sign(ec_key), "unknown kid")
    assert time.monotonic() - again < 0.1
    assert len(jwks_server.requests) == 1
    while not jwks_server.aborted and time.monotonic() < started + 2:
        time.sleep(0.02)
    assert jwks_server.aborted and jwks_server.aborted[0] - started < JWKS_TIMEOUT + 0.3


def test_a_slow_jwks_server_never_blocks_another_issuer(
    tmp_path: Path, jwks_server: FhirServer, jwks: dict, ec_key: Any, rsa_key: Any
) -> None:
    jwks_server.respond = lambda path: Reply(trickle_headers=True)
    authenticator = remote_auth(tmp_path, f"{jwks_server.origin}/jwks.json", jwks)
    slow = background(authenticator.authenticate, f"Bearer {sign(ec_key)}", AUD)
    while not jwks_server.requests:
        time.sleep(0.01)
    other = sign(rsa_key, "RS384", RSA_KID, iss=OTHER_ISS)
    assert authenticator.authenticate(f"Bearer {other}", AUD) == OTHER_ISS
    assert not slow.done()  # the other issuer was served while this fetch was under way
    with pytest.raises(AuthError, match="unknown kid"):
        slow.result(timeout=JWKS_TIMEOUT + 0.5)

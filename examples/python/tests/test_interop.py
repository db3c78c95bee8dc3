"""Interoperability with PyJWT, an independent JOSE implementation.

revokd -> PyJWT: tokens revokd signs verify with PyJWT against the keys revokd publishes as JWKS.
PyJWT -> revokd: tokens PyJWT signs with revokd's key files verify as VALID in revokd, and forged
ones (alg none, algorithm confusion, tampering) do not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from conftest import KEYS, start_revokd, stop_revokd_checked
from revokd.v1 import token_service_pb2 as pb

ASYMMETRIC = ["ed", "rs", "es"]
AUDIENCE = "interop-aud"


@pytest.fixture(scope="module", params=ASYMMETRIC)
def signing_revokd(request, keys_dir, redis_server):
    """A revokd signing with the parameter's kid (all four keys in its directory)."""
    server = start_revokd(keys_dir, request.param, redis_server.url)
    yield server
    stop_revokd_checked(server)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fetch_jwks(revokd) -> httpx.Response:
    r = httpx.get(f"{revokd.admin_url}/.well-known/jwks.json", timeout=5.0)
    assert r.status_code == 200, r.text
    return r


def claims(subject: str = "interop-user") -> dict:
    now = int(time.time())
    return {
        "iss": "revokd",
        "sub": subject,
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_hex(16),
    }


def signing_key(keys_dir, kid: str):
    if KEYS[kid] == "HS256":
        return (keys_dir / f"{kid}.secret").read_bytes().rstrip()
    return serialization.load_pem_private_key((keys_dir / f"{kid}.pem").read_bytes(), password=None)


# ------------------------------------------------------------------------- revokd -> PyJWT


def test_pyjwt_verifies_revokd_tokens_with_the_jwks(signing_revokd):
    kid = signing_revokd.signing_kid
    alg = KEYS[kid]
    issued = signing_revokd.stub().IssueToken(
        pb.IssueTokenRequest(subject="interop-user", audience=[AUDIENCE]), timeout=5
    )
    header = jwt.get_unverified_header(issued.token)
    assert header["kid"] == kid == issued.key_id
    assert header["alg"] == alg

    jwks = fetch_jwks(signing_revokd).json()
    matching = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert len(matching) == 1, jwks
    key = jwt.PyJWK(matching[0])
    assert key.algorithm_name == alg

    decoded = jwt.decode(issued.token, key, algorithms=[alg], issuer="revokd", audience=AUDIENCE)
    assert decoded["sub"] == "interop-user"
    assert decoded["jti"] == issued.jti
    assert int(decoded["exp"]) == issued.expires_at.seconds
    assert isinstance(decoded["iat"], (int, float))

    # A key with another kid from the same JWKS does not verify it.
    for other in jwks["keys"]:
        if other["kid"] != kid:
            with pytest.raises(jwt.InvalidTokenError):
                jwt.decode(issued.token, jwt.PyJWK(other), algorithms=[other["alg"]],
                           issuer="revokd", audience=AUDIENCE)


def test_jwks_publishes_public_keys_only(signing_revokd):
    r = fetch_jwks(signing_revokd)
    assert r.headers.get("cache-control"), r.headers
    assert "json" in r.headers.get("content-type", "")
    keys = r.json()["keys"]
    assert {k["kid"] for k in keys} == set(ASYMMETRIC)
    expected = {"ed": ("OKP", "EdDSA"), "rs": ("RSA", "RS256"), "es": ("EC", "ES256")}
    for k in keys:
        assert (k["kty"], k["alg"]) == expected[k["kid"]], k
        assert k["use"] == "sig"
        # Never the HMAC key, never private material.
        assert k["kty"] != "oct"
        assert not {"k", "d", "p", "q", "dp", "dq", "qi"} & set(k), k


def test_get_jwks_rpc_matches_http(signing_revokd):
    resp = signing_revokd.stub().GetJwks(pb.GetJwksRequest(), timeout=5)
    http_doc = fetch_jwks(signing_revokd).json()
    assert json.loads(resp.jwks_json) == http_doc
    # The messages carry the same keys as the document (unset fields are absent there).
    as_dicts = [
        {f.name: v for f, v in key.ListFields()} for key in resp.keys
    ]
    assert as_dicts == http_doc["keys"]


# ------------------------------------------------------------------------- PyJWT -> revokd


@pytest.mark.parametrize("kid", list(KEYS))
def test_revokd_verifies_pyjwt_tokens(revokd, stub, keys_dir, kid):
    c = claims()
    token = jwt.encode(c, signing_key(keys_dir, kid), algorithm=KEYS[kid], headers={"kid": kid})
    resp = stub.VerifyToken(pb.VerifyTokenRequest(token=token), timeout=5)
    assert pb.Verdict.Name(resp.verdict) == "VERDICT_VALID"
    assert resp.subject == c["sub"]
    assert resp.jti == c["jti"]
    assert resp.key_id == kid
    assert resp.expires_at.seconds == c["exp"]

    # The same claims with alg none and no signature: refused.
    header = b64url(json.dumps({"alg": "none", "kid": kid}).encode())
    payload = token.split(".")[1]
    unsigned = f"{header}.{payload}."
    resp = stub.VerifyToken(pb.VerifyTokenRequest(token=unsigned), timeout=5)
    assert pb.Verdict.Name(resp.verdict) == "VERDICT_BAD_SIGNATURE"

    # A tampered payload under the genuine signature: refused.
    forged_payload = b64url(json.dumps({**c, "sub": "admin"}).encode())
    h, _, s = token.split(".")
    resp = stub.VerifyToken(pb.VerifyTokenRequest(token=f"{h}.{forged_payload}.{s}"), timeout=5)
    assert pb.Verdict.Name(resp.verdict) == "VERDICT_BAD_SIGNATURE"


def test_alg_none_named_in_the_brief(stub, keys_dir):
    """{"alg":"none","kid":"ed"} + claims + empty signature."""
    header = b64url(json.dumps({"alg": "none", "kid": "ed"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    resp = stub.VerifyToken(pb.VerifyTokenRequest(token=f"{header}.{payload}."), timeout=5)
    assert pb.Verdict.Name(resp.verdict) == "VERDICT_BAD_SIGNATURE"


@pytest.mark.parametrize("kid", ASYMMETRIC)
def test_algorithm_confusion_is_refused(stub, keys_dir, kid):
    """HS256 'signed' with the public key as the HMAC secret, under an asymmetric kid."""
    public_pem = (
        signing_key(keys_dir, kid)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = (
        b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        + "."
        + b64url(json.dumps(claims()).encode())
    )
    sig = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(sig)}"
    resp = stub.VerifyToken(pb.VerifyTokenRequest(token=token), timeout=5)
    assert pb.Verdict.Name(resp.verdict) == "VERDICT_BAD_SIGNATURE"


def test_revocation_of_a_pyjwt_token(stub, keys_dir):
    """A token minted outside revokd (with its key) is revocable like any other."""
    token = jwt.encode(claims(), signing_key(keys_dir, "es"), algorithm="ES256", headers={"kid": "es"})
    revoked = stub.RevokeToken(pb.RevokeTokenRequest(token=token, reason="interop"), timeout=5)
    assert revoked.newly_revoked
    resp = stub.VerifyToken(pb.VerifyTokenRequest(token=token), timeout=5)
    assert pb.Verdict.Name(resp.verdict) == "VERDICT_REVOKED"


def test_claims_json_keeps_python_ints(stub):
    """A Struct turns every number into a float in Python (42 -> 42.0); claims_json does not."""
    issued = stub.IssueToken(pb.IssueTokenRequest(subject="alice", claims_json='{"n": 42, "tags": ["a"]}'),
                             timeout=5)
    resp = stub.VerifyToken(pb.VerifyTokenRequest(token=issued.token), timeout=5)
    assert resp.verdict == pb.VERDICT_VALID
    claims = json.loads(resp.claims_json)
    assert claims == {"n": 42, "tags": ["a"]}
    assert isinstance(claims["n"], int)
    assert resp.claims["n"] == 42.0 and isinstance(resp.claims["n"], float), "the Struct form, for contrast"

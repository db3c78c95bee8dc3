"""The conformance table (tests/conformance/verify.json) against revokd_client's local mode: the same
verdicts as revokd's VerifyToken (tests/conformance.rs), answered in-process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from conftest import REPO, fixtures
from revokd_client import Client, Verdict
from revokd_client.local import LocalVerifier

TABLE = json.loads((REPO / "tests/conformance/verify.json").read_text())
CASES = TABLE["cases"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


TERM = re.compile(r"([+-])(leeway|max_lifetime|\d+\.\d+|\d+)")


def expr(s: str, env: dict[str, Any]) -> Any:
    """`now+300`, `now-leeway+10`, `now+300.75`: a number; `$id`: the case's id; any other string stays."""
    if s == "$id":
        return env["id"]
    if not s.startswith("now"):
        return s
    rest = s[3:]
    terms = TERM.findall(rest)
    assert "".join(sign + term for sign, term in terms) == rest, f"bad expression {s!r}"
    total = env["now"]
    for sign, term in terms:
        value = env[term] if term in env else float(term) if "." in term else int(term)
        total += value if sign == "+" else -value
    return total


def resolve(v: Any, env: dict[str, Any]) -> Any:
    if isinstance(v, str):
        return expr(v, env)
    if isinstance(v, dict):
        return {k: resolve(x, env) for k, x in v.items()}
    if isinstance(v, list):
        return [resolve(x, env) for x in v]
    return v


def sign(key: dict[str, str], message: bytes) -> str:
    if key["alg"] == "HS256":
        return b64(hmac.digest(key["secret"].encode(), message, hashlib.sha256))
    private = load_pem_private_key(key["pem"].encode(), None)
    assert isinstance(private, Ed25519PrivateKey)
    return b64(private.sign(message))


def compact(v: Any) -> bytes:
    return json.dumps(v, separators=(",", ":")).encode()


def build(case: dict[str, Any], env: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if "token" in case:
        return case["token"], {}
    kid = case.get("sign", "conf-hs")
    key = TABLE["keys"][kid]
    if "header_b64" in case:
        header = case["header_b64"]
    elif "header_json" in case:
        header = b64(case["header_json"].encode())
    else:
        header = b64(compact(case.get("header", {"alg": key["alg"], "kid": kid})))
    claims: dict[str, Any] = {}
    if "payload_b64" in case:
        payload = case["payload_b64"]
    elif "claims_json" in case:
        payload = b64(case["claims_json"].encode())
    else:
        claims = resolve(case["claims"], env)
        if "pad" in case:
            claims["pad"] = "x" * case["pad"]
        payload = b64(compact(claims))
    message = f"{header}.{payload}"
    signature = case["signature_b64"] if "signature_b64" in case else sign(key, message.encode())
    return f"{message}.{signature}{case.get('suffix', '')}", claims


@pytest.fixture(scope="module")
def conformance_revokd(tmp_path_factory, redis_server):
    keys = tmp_path_factory.mktemp("conformance-keys")
    (keys / "conf-hs.secret").write_text(TABLE["keys"]["conf-hs"]["secret"])
    (keys / "conf-ed.pem").write_text(TABLE["keys"]["conf-ed"]["pem"])
    os.chmod(keys / "conf-hs.secret", 0o600)
    os.chmod(keys / "conf-ed.pem", 0o600)
    server = fixtures.start_revokd(keys, "conf-ed", redis_server.url, "--max-staleness", "500ms")
    yield server, keys
    fixtures.stop_revokd_checked(server)


@pytest.mark.parametrize("hmac_locally", [True, False], ids=["with-secrets-dir", "jwks-only"])
def test_local_mode_gives_every_verdict_of_the_conformance_table(conformance_revokd, hmac_locally):
    server, keys = conformance_revokd
    failures = []
    with Client(server.grpc_addr, timeout=5) as client, \
            LocalVerifier(server.grpc_addr, timeout=5, secrets_dir=keys if hmac_locally else None) as local:
        assert local.wait_trusted(), "the local set never became trusted"
        settings = local._settings
        assert settings is not None
        for i, case in enumerate(CASES):
            env = {"now": int(time.time()), "leeway": settings.leeway, "max_lifetime": settings.max_lifetime,
                   "id": f"conf-py-{os.getpid()}-{int(hmac_locally)}-{i}"}
            token, claims = build(case, env)
            revoke = case.get("revoke")
            if revoke == "jti":
                client.revoke_token(jti=env["id"], reason="conformance")
            elif revoke == "session":
                client.logout(session_id=env["id"], reason="conformance")
            elif revoke == "subject":
                client.logout_everywhere(env["id"], "conformance")
            if revoke:
                assert local.wait_caught_up(time.monotonic()), f"{case['name']}: revocation never arrived"
            remote_before = local.answered_remotely
            got = local.verify(token, case.get("audience"))
            want = Verdict[case["expect"]]
            # Only what the process cannot judge alone goes to revokd: a kid it does not hold.
            header = case.get("header", {"kid": case.get("sign", "conf-hs")})
            may_ask = want is Verdict.UNKNOWN_KEY or (not hmac_locally and header.get("kid") == "conf-hs")
            asked = local.answered_remotely - remote_before
            if got.verdict is not want:
                failures.append(f"{case['name']}: {got.verdict.name}, want {want.name}")
            elif want in (Verdict.VALID, Verdict.REVOKED):
                p = got.principal
                assert p is not None
                if (p.subject, p.jti) != (claims.get("sub", ""), claims.get("jti", "")):
                    failures.append(f"{case['name']}: principal {p.subject}/{p.jti}")
            if want is Verdict.UNKNOWN_KEY:
                assert asked == 1, f"{case['name']}: an unknown kid must be asked of revokd"
            elif asked and not may_ask:
                failures.append(f"{case['name']}: asked revokd, though its key is held locally")
    assert not failures, f"{len(failures)} of {len(CASES)} cases differ:\n" + "\n".join(failures)

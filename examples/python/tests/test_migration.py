"""docs/MIGRATING.md end to end: an app that signed its own HS256 tokens with PyJWT and kept a Redis
blocklist moves to revokd without logging anyone out.

The revokd flags come from the `<!-- migrating: serve -->` block of docs/MIGRATING.md, so the guide
and this test cannot drift apart. The old app is the recipe the guide starts from (PyJWT, a blocklist
key per logout); the new app is the FastAPI example, unchanged but for its logout fallback.
"""

from __future__ import annotations

import re
import shlex
import socket
import time
import uuid

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient

from app import create_app
from conftest import REPO, start_revokd, stop_revokd_checked
from revokd.v1 import token_service_pb2 as pb
from revokd_client import Client

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is")

OLD_SECRET = "the-old-app-secret-from-before-revokd"
AUDIENCE = "demo-app"


def guide_flags(secret_file: str) -> list[str]:
    """The `--legacy-*` flags of the guide's `revokd serve`, the key file replaced by ours."""
    text = (REPO / "docs" / "MIGRATING.md").read_text()
    block = re.search(r"<!-- migrating: serve -->\s*```sh\n(.*?)```", text, re.S)
    assert block, "docs/MIGRATING.md lost its <!-- migrating: serve --> block"
    words = shlex.split(block.group(1).replace("\\\n", " "))
    flags: list[str] = []
    for flag, value in zip(words, words[1:]):
        if flag.startswith("--legacy-"):
            flags += [flag, secret_file if flag == "--legacy-key-file" else value]
    assert "--legacy-key-file" in flags and "--legacy-blocklist-key" in flags, flags
    return flags


def redis_cmd(port: int, *args: str) -> bytes:
    """One command over RESP (the old app's redis-py, without the dependency)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(payload.encode())
        return s.recv(4096)


class OldApp:
    """The hand-written recipe the guide replaces."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port

    def login(self, user: str, with_jti: bool = True) -> str:
        now = int(time.time())
        claims = {"sub": user, "aud": AUDIENCE, "iat": now, "exp": now + 3600}
        if with_jti:
            claims["jti"] = str(uuid.uuid4())
        return jwt.encode(claims, OLD_SECRET, algorithm="HS256")

    def logout(self, token: str) -> None:
        claims = jwt.decode(token, OLD_SECRET, algorithms=["HS256"], audience=AUDIENCE)
        assert redis_cmd(self.redis_port, "SET", f"blocklist:{claims['jti']}", "1", "EX", "3600") == b"+OK\r\n"


@pytest.fixture
def migrating_revokd(tmp_path, keys_dir, redis_server):
    secret = tmp_path / "legacy.secret"
    secret.write_text(OLD_SECRET)
    server = start_revokd(keys_dir, "ed", redis_server.url, *guide_flags(str(secret)))
    yield server
    stop_revokd_checked(server)


def test_the_guide_end_to_end(migrating_revokd, redis_server):
    old_app = OldApp(redis_server.port)
    # Before the cut-over: sessions and a logout made by the old app.
    alice_old = old_app.login("alice")
    bob_old = old_app.login("bob")
    logged_out = old_app.login("carol")
    old_app.logout(logged_out)
    no_jti = old_app.login("dave", with_jti=False)

    revokd_client = Client(migrating_revokd.grpc_addr, timeout=5.0)
    with TestClient(create_app(client=revokd_client)) as app:
        def me(token: str) -> httpx.Response:
            return app.get("/me", headers={"Authorization": f"Bearer {token}"})

        # Old tokens keep working; the old logout still holds.
        for token, user in [(alice_old, "alice"), (bob_old, "bob"), (no_jti, "dave")]:
            r = me(token)
            assert r.status_code == 200, r.text
            assert r.json()["subject"] == user
        assert me(logged_out).status_code == 401
        assert me(logged_out).json()["detail"] == "VERDICT_REVOKED"

        # New logins come from revokd, side by side with the old tokens.
        r = app.post("/login", json={"username": "alice", "password": "wonderland"})
        assert r.status_code == 200, r.text
        alice_new = r.json()["access_token"]
        assert jwt.get_unverified_header(alice_new).get("kid") == "ed"
        assert me(alice_new).status_code == 200

        # Logout through the new app: an old token (no session) and one without a jti.
        for token in (alice_old, no_jti):
            r = app.post("/logout", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 204, r.text
            assert me(token).json()["detail"] == "VERDICT_REVOKED"
        assert me(alice_new).status_code == 200, "the new session is separate"

        # Logout everywhere reaches old tokens too.
        r = app.post("/login", json={"username": "bob", "password": "builder"})
        bob_new = r.json()["access_token"]
        assert app.post("/logout-everywhere", headers={"Authorization": f"Bearer {bob_new}"}).status_code == 204
        assert me(bob_old).status_code == 401
        assert me(bob_new).status_code == 401
    revokd_client.close()

    # Forged old tokens stay out: another secret, alg none, another algorithm.
    stub = migrating_revokd.stub()
    claims = jwt.decode(alice_old, options={"verify_signature": False})
    forged = [
        jwt.encode(claims, "not-the-secret", algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),
        jwt.encode(claims, OLD_SECRET, algorithm="HS512"),
    ]
    for token in forged:
        v = stub.VerifyToken(pb.VerifyTokenRequest(token=token), timeout=5).verdict
        assert v == pb.VERDICT_BAD_SIGNATURE, pb.Verdict.Name(v)

    # The operator's signal to turn migration mode off.
    metrics = httpx.get(f"{migrating_revokd.admin_url}/metrics", timeout=5).text
    assert re.search(r'^revokd_legacy_tokens_total\{verdict="valid"\} [1-9]', metrics, re.M), metrics
    assert "migration mode" in migrating_revokd.logs()
    assert OLD_SECRET not in migrating_revokd.logs()

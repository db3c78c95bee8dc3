"""RFC 7009 (POST /revoke) and RFC 7662 (POST /introspect) on revokd's HTTP API listener, checked
with an independent OAuth client: authlib's OAuth2Client (client_secret_basic and
client_secret_post), plus the cases node-oidc-provider and fosite test: wrong client, missing token,
repeated parameters, hint mismatch, revoked-then-introspected, a refresh token revoking the access
token of its session, another client's token, the store down.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client

from conftest import revokd_bin, start_redis, start_revokd, stop_process, stop_revokd_checked
from revokd.v1 import token_service_pb2 as pb


def add_client(clients_file, client_id: str, *permissions: str) -> str:
    cmd = [str(revokd_bin()), "client", "add", "--clients-file", str(clients_file), "--id", client_id]
    for p in permissions:
        cmd += ["--permission", p]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["secret"]


@pytest.fixture(scope="module")
def oauth_revokd(tmp_path_factory, keys_dir, redis_server):
    clients = tmp_path_factory.mktemp("clients") / "clients.json"
    secrets = {
        "app": add_client(clients, "app", "issue", "revoke", "introspect"),
        "other": add_client(clients, "other", "issue", "revoke", "introspect"),
        "verifier": add_client(clients, "verifier", "verify"),
    }
    server = start_revokd(keys_dir, "ed", redis_server.url, "--clients-file", str(clients), "--require-caller-auth")
    server.secrets = secrets
    yield server
    stop_revokd_checked(server)


def url(server, path: str) -> str:
    return f"http://{server.http_addr}{path}"


def login(server, client_id: str, subject: str = "alice") -> pb.IssueSessionResponse:
    auth = [("authorization", f"Bearer {server.secrets[client_id]}")]
    return server.stub().IssueSession(pb.IssueSessionRequest(subject=subject), metadata=auth, timeout=5)


def oauth_client(server, client_id: str = "app", method: str = "client_secret_basic") -> OAuth2Client:
    return OAuth2Client(client_id, server.secrets[client_id], token_endpoint_auth_method=method)


def introspect(server, token: str, client_id: str = "app") -> dict:
    with oauth_client(server, client_id) as c:
        r = c.introspect_token(url(server, "/introspect"), token=token)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


def revoke(server, token: str, hint: str | None = None, client_id: str = "app", method: str = "client_secret_basic"):
    with oauth_client(server, client_id, method) as c:
        r = c.revoke_token(url(server, "/revoke"), token=token, token_type_hint=hint)
    assert r.headers["cache-control"] == "no-store"
    return r


def test_introspection_describes_an_active_token(oauth_revokd):
    s = login(oauth_revokd, "app")
    body = introspect(oauth_revokd, s.access_token)
    assert body["active"] is True
    assert body["sub"] == "alice"
    assert body["token_type"] == "access_token"
    assert body["sid"] == s.session_id
    assert body["client_id"] == "app"
    assert body["iss"] == "revokd"
    for claim in ("iat", "nbf", "exp"):
        assert isinstance(body[claim], int), claim
    assert body["exp"] > body["iat"]
    refresh = introspect(oauth_revokd, s.refresh_token)
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"


def test_revoked_then_introspected_says_inactive_and_nothing_else(oauth_revokd):
    s = login(oauth_revokd, "app")
    r = revoke(oauth_revokd, s.access_token, "access_token")
    assert r.status_code == 200, r.text
    assert introspect(oauth_revokd, s.access_token) == {"active": False}
    # Only the access token: its session goes on.
    assert introspect(oauth_revokd, s.refresh_token)["active"] is True


def test_a_refresh_token_revokes_its_session(oauth_revokd):
    s = login(oauth_revokd, "app")
    # Hint mismatch: the hint is only a hint.
    r = revoke(oauth_revokd, s.refresh_token, "access_token", method="client_secret_post")
    assert r.status_code == 200, r.text
    assert introspect(oauth_revokd, s.refresh_token) == {"active": False}
    assert introspect(oauth_revokd, s.access_token) == {"active": False}, "the session's access token too"


def test_only_the_current_refresh_token_is_active(oauth_revokd):
    s = login(oauth_revokd, "app")
    rotated = oauth_revokd.stub().RefreshSession(
        pb.RefreshSessionRequest(refresh_token=s.refresh_token),
        metadata=[("authorization", f"Bearer {oauth_revokd.secrets['app']}")], timeout=5)
    assert introspect(oauth_revokd, s.refresh_token) == {"active": False}
    assert introspect(oauth_revokd, rotated.refresh_token)["active"] is True


def test_unknown_invalid_and_foreign_tokens_get_200(oauth_revokd):
    for token in ("not-a-token", "a.b.c", "eyJhbGciOiJub25lIn0.e30."):
        assert revoke(oauth_revokd, token).status_code == 200
        assert introspect(oauth_revokd, token) == {"active": False}
    # Another client's token: 200, and it lives on.
    theirs = login(oauth_revokd, "other", "bob")
    assert revoke(oauth_revokd, theirs.access_token, client_id="app").status_code == 200
    assert introspect(oauth_revokd, theirs.access_token)["active"] is True
    assert revoke(oauth_revokd, theirs.access_token, client_id="other").status_code == 200
    assert introspect(oauth_revokd, theirs.access_token) == {"active": False}


def test_bad_clients_and_bad_requests(oauth_revokd):
    s = login(oauth_revokd, "app")
    revoke_url, introspect_url = url(oauth_revokd, "/revoke"), url(oauth_revokd, "/introspect")
    form = {"content-type": "application/x-www-form-urlencoded"}
    # Wrong secret, unknown client, none at all: 401 invalid_client with a challenge.
    for auth in [("app", "app.wrong"), ("mallory", "x"), None]:
        for endpoint in (revoke_url, introspect_url):
            r = httpx.post(endpoint, data={"token": s.access_token}, auth=auth)
            assert r.status_code == 401, (auth, endpoint, r.text)
            assert r.json()["error"] == "invalid_client"
            assert r.headers["www-authenticate"].startswith("Basic")
            assert r.headers["cache-control"] == "no-store"
    # A client without the permission.
    r = httpx.post(introspect_url, data={"token": s.access_token},
                   auth=("verifier", oauth_revokd.secrets["verifier"]))
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client", r.text
    app = ("app", oauth_revokd.secrets["app"])
    # Missing, empty, repeated parameters; another content type; two auth methods.
    bad = [
        httpx.post(revoke_url, data={}, auth=app),
        httpx.post(revoke_url, data={"token": ""}, auth=app),
        httpx.post(revoke_url, content=f"token={s.access_token}&token=x", headers=form, auth=app),
        httpx.post(introspect_url, json={"token": s.access_token}, auth=app),
        httpx.post(revoke_url, data={"token": s.access_token, "client_id": "app",
                                     "client_secret": oauth_revokd.secrets["app"]}, auth=app),
    ]
    for r in bad:
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_request"
    assert introspect(oauth_revokd, s.access_token)["active"] is True, "nothing was revoked"
    # Counted by endpoint and result.
    metrics = httpx.get(f"{oauth_revokd.admin_url}/metrics", timeout=5).text
    for endpoint, result in [("revoke", "invalid_client"), ("introspect", "unauthorized_client"),
                             ("revoke", "invalid_request"), ("introspect", "ok")]:
        sample = f'revokd_oauth_requests_total{{endpoint="{endpoint}",result="{result}"}}'
        assert re.search(re.escape(sample) + r" [1-9]", metrics), sample


def test_the_store_down_is_503_never_active(tmp_path, keys_dir):
    redis = start_redis(tmp_path)
    clients = tmp_path / "clients.json"
    secret = add_client(clients, "app", "issue", "revoke", "introspect")
    server = start_revokd(keys_dir, "ed", redis.url, "--clients-file", str(clients),
                          "--store-timeout", "300ms")
    server.secrets = {"app": secret}
    try:
        s = login(server, "app")
        stop_process(redis.proc, "redis-server")
        for path in ("/revoke", "/introspect"):
            # Within --max-staleness of the outage the mirror may still answer; then 503.
            deadline = time.monotonic() + 10
            while True:
                r = httpx.post(url(server, path), data={"token": s.access_token}, auth=("app", secret))
                assert r.status_code in (200, 503), r.text
                if r.status_code == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "temporarily_unavailable"
            assert r.headers["retry-after"]
    finally:
        stop_revokd_checked(server)

"""The FastAPI example app, through TestClient, against a real revokd and a real Redis."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app import create_app
from conftest import free_port, start_redis, start_revokd, stop_process, stop_revokd_checked
from revokd_client import Client, LocalVerifier, target


@pytest.fixture(params=["remote", "local"])
def client(request, revokd, keys_dir):
    """The app in both verification modes: every test below runs against each."""
    revokd_client = Client(revokd.grpc_addr, timeout=5.0)
    verifier = LocalVerifier(revokd.grpc_addr, timeout=5.0, secrets_dir=keys_dir) if request.param == "local" \
        else None
    with TestClient(create_app(client=revokd_client, verifier=verifier)) as c:
        yield c
    if verifier is not None:
        checks = verifier.answered_locally + verifier.answered_remotely
        assert checks == 0 or verifier.answered_locally > 0, "local mode never answered locally"
        verifier.close()
    revokd_client.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: TestClient, username: str = "alice", password: str = "wonderland") -> dict:
    r = client.post("/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "refresh_token", "session_id"}
    assert all(body.values()), body
    return body


def me(client: TestClient, access: str):
    return client.get("/me", headers=bearer(access))


def refresh(client: TestClient, refresh_token: str):
    return client.post("/refresh", json={"refresh_token": refresh_token})


def test_login_then_me(client):
    s = login(client)
    r = me(client, s["access_token"])
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": "alice", "session_id": s["session_id"]}


def test_wrong_password_and_unknown_user(client):
    r = client.post("/login", json={"username": "alice", "password": "builder"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.post("/login", json={"username": "mallory", "password": "wonderland"})
    assert r.status_code == 401


def test_me_needs_a_bearer_token(client):
    assert client.get("/me").status_code == 401
    r = client.get("/me", headers=bearer("not.a.jwt"))
    assert r.status_code == 401
    assert r.json()["detail"] == "VERDICT_MALFORMED"


def test_logout(client):
    s = login(client)
    assert me(client, s["access_token"]).status_code == 200
    r = client.post("/logout", headers=bearer(s["access_token"]))
    assert r.status_code == 204, r.text
    r = me(client, s["access_token"])
    assert r.status_code == 401
    assert r.json()["detail"] == "VERDICT_REVOKED"
    # The whole session is logged out: its refresh token too.
    assert refresh(client, s["refresh_token"]).status_code == 401
    # Logging out twice is harmless.
    assert client.post("/logout", headers=bearer(s["access_token"])).status_code == 204


def test_refresh_rotation(client):
    s1 = login(client, "bob", "builder")
    r = refresh(client, s1["refresh_token"])
    assert r.status_code == 200, r.text
    s2 = r.json()
    assert s2["session_id"] == s1["session_id"]
    assert s2["access_token"] != s1["access_token"]
    assert s2["refresh_token"] != s1["refresh_token"]
    r = me(client, s2["access_token"])
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": "bob", "session_id": s1["session_id"]}

    # The new refresh token works once more.
    r = refresh(client, s2["refresh_token"])
    assert r.status_code == 200, r.text
    s3 = r.json()
    assert s3["session_id"] == s1["session_id"]
    assert len({s1["refresh_token"], s2["refresh_token"], s3["refresh_token"]}) == 3
    assert me(client, s3["access_token"]).status_code == 200


def test_refresh_reuse_kills_the_session(client):
    s1 = login(client, "bob", "builder")
    r = refresh(client, s1["refresh_token"])
    assert r.status_code == 200, r.text
    s2 = r.json()
    assert me(client, s2["access_token"]).status_code == 200

    # The used refresh token again: reuse, the whole session is revoked.
    r = refresh(client, s1["refresh_token"])
    assert r.status_code == 401
    assert "reuse" in r.json()["detail"] and "revoked" in r.json()["detail"]

    # Tokens issued after the first refresh are dead too.
    r = me(client, s2["access_token"])
    assert r.status_code == 401
    assert r.json()["detail"] == "VERDICT_REVOKED"
    r = refresh(client, s2["refresh_token"])
    assert r.status_code == 401
    # ... and so are the originals.
    assert me(client, s1["access_token"]).status_code == 401

    # Other sessions of the same user are untouched.
    other = login(client, "bob", "builder")
    assert me(client, other["access_token"]).status_code == 200


def test_refresh_token_is_not_an_access_token(client):
    s = login(client)
    r = me(client, s["refresh_token"])
    assert r.status_code == 401
    assert r.json()["detail"] == "VERDICT_WRONG_TOKEN_TYPE"
    # ... and an access token is not a refresh token.
    r = refresh(client, s["access_token"])
    assert r.status_code == 401
    assert r.json()["detail"] == "invalid refresh token"
    assert refresh(client, "garbage").status_code == 401
    # Neither mistake costs the session anything.
    assert me(client, s["access_token"]).status_code == 200
    assert refresh(client, s["refresh_token"]).status_code == 200


def test_logout_everywhere(client):
    a1 = login(client)
    a2 = login(client)
    b = login(client, "bob", "builder")
    assert a1["session_id"] != a2["session_id"]
    assert me(client, a1["access_token"]).status_code == 200
    assert me(client, a2["access_token"]).status_code == 200

    r = client.post("/logout-everywhere", headers=bearer(a1["access_token"]))
    assert r.status_code == 204, r.text

    for s in (a1, a2):
        r = me(client, s["access_token"])
        assert r.status_code == 401
        assert r.json()["detail"] == "VERDICT_REVOKED"
        assert refresh(client, s["refresh_token"]).status_code == 401
    # Another user is not logged out.
    assert me(client, b["access_token"]).status_code == 200

    # A login after it works, refresh included.
    a3 = login(client)
    assert me(client, a3["access_token"]).status_code == 200
    r = refresh(client, a3["refresh_token"])
    assert r.status_code == 200, r.text
    assert me(client, r.json()["access_token"]).status_code == 200


def test_logout_everywhere_needs_a_valid_token(client):
    s = login(client)
    assert client.post("/logout-everywhere").status_code == 401
    r = client.post("/logout-everywhere", headers=bearer(s["refresh_token"]))
    assert r.status_code == 401
    assert me(client, s["access_token"]).status_code == 200


def test_revokd_unreachable_fails_closed():
    # Nothing listens on this port: every call is UNAVAILABLE.
    revokd_client = Client(f"127.0.0.1:{free_port()}", timeout=5.0)
    with TestClient(create_app(client=revokd_client)) as c:
        r = c.get("/me", headers=bearer("eyJhbGciOiJFZERTQSJ9.e30.c2ln"))
        assert r.status_code == 503
        r = c.post("/login", json={"username": "alice", "password": "wonderland"})
        assert r.status_code == 503
        r = c.post("/logout-everywhere", headers=bearer("x"))
        assert r.status_code == 503
    revokd_client.close()


def test_redis_down_fails_closed(keys_dir, tmp_path):
    """A revokd whose Redis is gone cannot say "valid": the app answers 503, never 200."""
    redis = start_redis(tmp_path)
    server = start_revokd(keys_dir, "ed", redis.url)
    revokd_client = Client(server.grpc_addr, timeout=5.0)
    try:
        with TestClient(create_app(client=revokd_client)) as c:
            s = login(c)
            assert me(c, s["access_token"]).status_code == 200
            stop_process(redis.proc, "redis-server")
            assert me(c, s["access_token"]).status_code == 503
            assert refresh(c, s["refresh_token"]).status_code == 503
            r = c.post("/login", json={"username": "alice", "password": "wonderland"})
            assert r.status_code == 503
    finally:
        revokd_client.close()
        stop_process(redis.proc, "redis-server")
        stop_revokd_checked(server)


def test_revokd_addr_takes_both_forms(revokd, monkeypatch):
    assert target("127.0.0.1:50051") == "127.0.0.1:50051"
    assert target("http://127.0.0.1:50051") == "127.0.0.1:50051"
    assert target("unix:/run/revokd/grpc.sock") == "unix:/run/revokd/grpc.sock"
    with pytest.raises(ValueError):
        target("https://x:1")
    # Both forms, the manifests' one included, reach the real server through $REVOKD_ADDR.
    for addr in (revokd.grpc_addr, "http://" + revokd.grpc_addr):
        monkeypatch.setenv("REVOKD_ADDR", addr)
        example = create_app()
        with TestClient(example) as app:
            r = app.post("/login", json={"username": "alice", "password": "wonderland"})
            assert r.status_code == 200, r.text
        example.state.revokd.close()

"""revokd_client against a real revokd and Redis: verdicts as an enum, exact claims, typed errors,
sync and asyncio, and the FastAPI dependency."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request

from revokd_client import (AsyncClient, Client, InvalidArgument, Principal, Unavailable, Verdict, target)
from revokd_client.fastapi import RevokdBearer


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_addresses_in_both_forms():
    assert target("127.0.0.1:50051") == "127.0.0.1:50051"
    assert target("http://127.0.0.1:50051") == "127.0.0.1:50051"
    assert target("unix:/run/revokd/grpc.sock") == "unix:/run/revokd/grpc.sock"
    with pytest.raises(ValueError):
        target("https://x:1")


def test_verify_issue_revoke(revokd):
    with Client("http://" + revokd.grpc_addr, timeout=5) as c:
        issued = c.issue_token("alice", audience=["web"], claims={"n": 42, "roles": ["admin"]})
        ok = c.verify(issued.token, "web")
        assert ok.verdict is Verdict.VALID and ok.valid
        p = ok.principal
        assert isinstance(p, Principal) and p.subject == "alice" and p.jti == issued.jti
        assert p.claims == {"n": 42, "roles": ["admin"]} and isinstance(p.claims["n"], int)
        assert p.expires_at is not None and p.expires_at.tzinfo is not None
        assert c.verify("not-a-token").verdict is Verdict.MALFORMED
        assert c.verify(issued.token, "billing").verdict is Verdict.WRONG_AUDIENCE
        c.revoke_token(issued.token, "test")
        revoked = c.verify(issued.token)
        assert revoked.verdict is Verdict.REVOKED and revoked.principal.jti == issued.jti
        with pytest.raises(InvalidArgument) as err:
            c.issue_token("")
        assert err.value.field == "subject"
        assert c.jwks()["keys"][0]["kid"] == "ed"


def test_unreachable_is_unavailable_never_valid():
    with Client(f"127.0.0.1:{closed_port()}", timeout=1) as c:
        with pytest.raises(Unavailable):
            c.verify("anything")


def test_async_sessions(revokd):
    async def flow():
        async with AsyncClient(revokd.grpc_addr, timeout=5) as c:
            s = await c.login("bob")
            assert (await c.verify(s.access_token)).valid
            nxt = await c.refresh(s.refresh_token)
            assert nxt.session_id == s.session_id
            await c.logout(nxt.access_token)
            assert (await c.verify(nxt.access_token)).verdict is Verdict.REVOKED

    asyncio.run(flow())


def app_for(addr: str) -> FastAPI:
    """An app whose /me needs a VALID bearer token for audience "web"."""
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["client"] = AsyncClient(addr, timeout=1)
        yield
        await state["client"].close()

    app = FastAPI(lifespan=lifespan)

    async def current_user(request: Request) -> Principal:
        return await RevokdBearer(state["client"], audience="web")(request)

    @app.get("/me")
    async def me(p: Principal = Depends(current_user)) -> dict:
        return {"subject": p.subject}

    return app


def test_fastapi_dependency(revokd):
    with Client(revokd.grpc_addr, timeout=5) as sync:
        token = sync.issue_token("carol", audience=["web"]).token
    with TestClient(app_for(revokd.grpc_addr)) as http:
        r = http.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json() == {"subject": "carol"}, r.text
        r = http.get("/me", headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        assert http.get("/me").status_code == 401
    with TestClient(app_for(f"127.0.0.1:{closed_port()}")) as http:
        r = http.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503, r.text


def test_watch_revocations_sync_and_async(revokd):
    with Client(revokd.grpc_addr, timeout=5) as c:
        jti = c.issue_token("watched").jti
        c.revoke_token(jti=jti, reason="watch test")
        stream = c.watch_revocations()
        first = next(stream)
        assert first.WhichOneof("event") == "started" and first.started.issuer == "revokd"
        seen = set()
        for msg in stream:
            if msg.WhichOneof("event") == "revocations":
                seen.update(r.id for r in msg.revocations.revocations)
            elif msg.WhichOneof("event") == "synced":
                break
        assert jti in seen
        stream.close()

    async def first_events() -> list[str]:
        async with AsyncClient(revokd.grpc_addr, timeout=5) as ac:
            events = []
            async for msg in ac.watch_revocations():
                events.append(msg.WhichOneof("event"))
                if events[-1] == "synced":
                    return events
        return events

    events = asyncio.run(first_events())
    assert events[0] == "started" and events[-1] == "synced"

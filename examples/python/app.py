"""A small FastAPI backend that delegates its sessions to revokd, through the revokd_client package.

    POST /login              {username, password} -> IssueSession
    GET  /me                 Bearer access token  -> VerifyToken (on every request), or local mode
    POST /refresh            {refresh_token}      -> RefreshSession (single-use refresh tokens)
    POST /logout             Bearer access token  -> RevokeSession (RevokeToken for a pre-migration token)
    POST /logout-everywhere  Bearer access token  -> VerifyToken, then RevokeSubject

Fail closed: when revokd cannot answer, requests get 503, never access.

Verification (GET /me, POST /logout-everywhere) has two modes, chosen with $REVOKD_VERIFY:
`remote` (the default) asks revokd (VerifyToken) on every request; `local` uses
`revokd_client.local.LocalVerifier`, which checks the token in-process against a watched copy of
revokd's revocation set and asks revokd only when that copy is not proven fresh (or for a key it does
not hold). $REVOKD_SECRETS_DIR (optional, local mode): the `<kid>.secret` files revokd reads, so that
HS256 tokens verify locally too.

Run it (revokd_client from clients/python, see README.md):

    REVOKD_ADDR=127.0.0.1:50051 uvicorn app:app --port 8000
    REVOKD_ADDR=127.0.0.1:50051 REVOKD_VERIFY=local uvicorn app:app --port 8000
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from revokd_client.client import Client
from revokd_client.errors import (InvalidArgument, PermissionDenied, RevokdError, Unauthenticated,
                                  Unavailable)
from revokd_client.types import Principal, Session, Verification

if TYPE_CHECKING:
    from revokd_client.local import LocalVerifier

log = logging.getLogger("revokd_example")

# Demo accounts. A real application checks a password hash from its user store.
DEMO_USERS: dict[str, str] = {"alice": "wonderland", "bob": "builder"}

DEFAULT_AUDIENCE = "demo-app"

VERIFY_MODES = ("remote", "local")


class LoginRequest(BaseModel):
    username: str
    password: str


class RefreshRequest(BaseModel):
    refresh_token: str


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    session_id: str

    @classmethod
    def of(cls, session: Session) -> TokenPair:
        return cls(access_token=session.access_token, refresh_token=session.refresh_token,
                   session_id=session.session_id)


class Me(BaseModel):
    subject: str
    session_id: str


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _upstream_failure(err: RevokdError, rpc: str) -> HTTPException:
    """Any revokd failure the endpoint has no specific answer for. Never grants access."""
    code = err.code.name if err.code is not None else "UNKNOWN"
    if isinstance(err, Unavailable):
        log.warning("revokd %s: %s (%s)", rpc, code, err)
        return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="token service unavailable")
    log.error("revokd %s failed: %s (%s)", rpc, code, err)
    return HTTPException(status.HTTP_502_BAD_GATEWAY, detail=f"token service error: {code}")


_bearer = HTTPBearer(auto_error=False)


def bearer_token(creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
    if creds is None or not creds.credentials:
        raise _unauthorized("missing bearer token")
    return creds.credentials


def get_revokd(request: Request) -> Client:
    return request.app.state.revokd


class Verifier(Protocol):
    """What answers verify: the Client (remote mode) or a LocalVerifier (local mode)."""

    def verify(self, token: str, audience: str | None = None) -> Verification: ...


def get_verifier(request: Request) -> Verifier:
    verifier: Verifier = request.app.state.verifier
    return verifier


def principal(request: Request, token: str = Depends(bearer_token),
              verifier: Verifier = Depends(get_verifier)) -> Principal:
    """The bearer access token's principal; 401 with the verdict's proto name unless VALID."""
    try:
        result: Verification = verifier.verify(token, request.app.state.audience)
    except RevokdError as err:
        raise _upstream_failure(err, "VerifyToken") from None
    if not result.valid or result.principal is None:
        raise _unauthorized(f"VERDICT_{result.verdict.name}")
    return result.principal


def _local_verifier(timeout: float) -> LocalVerifier:
    from revokd_client.local import LocalVerifier  # needs PyJWT with cryptography

    return LocalVerifier(timeout=timeout, secrets_dir=os.environ.get("REVOKD_SECRETS_DIR") or None)


def create_app(
    client: Client | None = None,
    users: Mapping[str, str] | None = None,
    audience: str | None = None,
    verifier: LocalVerifier | None = None,
) -> FastAPI:
    """Builds the app. `client` defaults to a Client for $REVOKD_ADDR (dialled on the first call).
    `verifier`: a LocalVerifier for local mode (started with the app; the caller closes it). Without one,
    $REVOKD_VERIFY decides: `remote` (default), the client verifies; `local`, a LocalVerifier for
    $REVOKD_ADDR (and $REVOKD_SECRETS_DIR) is made and started with the app, and closed after it."""
    timeout = float(os.environ.get("REVOKD_TIMEOUT", "2"))
    local_mode = verifier is not None
    if verifier is None:
        mode = os.environ.get("REVOKD_VERIFY", "remote").strip().lower() or "remote"
        if mode not in VERIFY_MODES:
            raise ValueError(f"REVOKD_VERIFY={mode!r}: expected one of {', '.join(VERIFY_MODES)}")
        local_mode = mode == "local"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned: LocalVerifier | None = None
        local = verifier
        if local_mode:
            if local is None:
                local = owned = _local_verifier(timeout)
            local.start()
            # Until its copy is synced the verifier asks revokd; wait a little so that the first
            # requests are answered locally (not an error if revokd is slow: it keeps trying).
            if not await asyncio.to_thread(local.wait_trusted, timeout):
                log.warning("revokd local mode: revocation set not synced yet; verifying remotely until it is")
            app.state.verifier = local
        try:
            yield
        finally:
            app.state.verifier = app.state.revokd
            if owned is not None:
                owned.close()

    app = FastAPI(title="revokd FastAPI example", lifespan=lifespan)
    if client is None:
        client = Client(timeout=timeout)
    app.state.revokd = client
    # Remote mode, and local mode outside the app's lifespan: the client verifies.
    app.state.verifier = client
    app.state.users = dict(users if users is not None else DEMO_USERS)
    app.state.audience = audience or os.environ.get("REVOKD_AUDIENCE", DEFAULT_AUDIENCE)

    @app.post("/login", response_model=TokenPair)
    def login(body: LoginRequest, request: Request, revokd: Client = Depends(get_revokd)) -> TokenPair:
        expected = request.app.state.users.get(body.username)
        # Compare even for unknown users so timing does not tell which names exist.
        ok = hmac.compare_digest((expected or "\0").encode(), body.password.encode())
        if expected is None or not ok:
            raise _unauthorized("invalid username or password")
        try:
            return TokenPair.of(revokd.login(body.username, [request.app.state.audience]))
        except RevokdError as err:
            raise _upstream_failure(err, "IssueSession") from None

    @app.get("/me", response_model=Me)
    def me(p: Principal = Depends(principal)) -> Me:
        return Me(subject=p.subject, session_id=p.session_id or "")

    @app.post("/refresh", response_model=TokenPair)
    def refresh(body: RefreshRequest, revokd: Client = Depends(get_revokd)) -> TokenPair:
        try:
            return TokenPair.of(revokd.refresh(body.refresh_token))
        except PermissionDenied as err:
            log.warning("refresh token reuse: %s", err)
            raise _unauthorized("refresh token reuse detected: the session has been revoked") from None
        except Unauthenticated:
            raise _unauthorized("invalid refresh token") from None
        except RevokdError as err:
            raise _upstream_failure(err, "RefreshSession") from None

    def read_own_write(request: Request) -> None:
        """Local mode: wait (at most $REVOKD_TIMEOUT) until the revocation just acknowledged is in the local
        copy, so this app's next request sees it; other replicas see it within revokd's --max-staleness."""
        verifier = request.app.state.verifier
        if not isinstance(verifier, Client) and not verifier.wait_caught_up(time.monotonic(), timeout):
            log.warning("revokd local mode: revocation not yet in the local copy; checks ask revokd meanwhile")

    @app.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
    def logout(request: Request, token: str = Depends(bearer_token),
               revokd: Client = Depends(get_revokd)) -> Response:
        try:
            revokd.logout(token, reason="logout")
        except Unauthenticated:
            raise _unauthorized("invalid token") from None
        except InvalidArgument:
            # No session: a token from before the migration (docs/MIGRATING.md) is revoked
            # by itself; anything else is not a token revokd accepts.
            try:
                revokd.revoke_token(token, reason="logout")
            except (InvalidArgument, Unauthenticated):
                raise _unauthorized("invalid token") from None
            except RevokdError as err:
                raise _upstream_failure(err, "RevokeToken") from None
        except RevokdError as err:
            raise _upstream_failure(err, "RevokeSession") from None
        read_own_write(request)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.post("/logout-everywhere", status_code=status.HTTP_204_NO_CONTENT)
    def logout_everywhere(request: Request, p: Principal = Depends(principal),
                          revokd: Client = Depends(get_revokd)) -> Response:
        try:
            revokd.logout_everywhere(p.subject, reason="logout-everywhere")
        except RevokdError as err:
            raise _upstream_failure(err, "RevokeSubject") from None
        read_own_write(request)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return app


# `uvicorn app:app`: connects to $REVOKD_ADDR on the first request (local mode: at startup).
app = create_app()

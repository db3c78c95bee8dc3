"""The hand-written recipe as a FastAPI app, for bench/python_client.py: PyJWT + a Redis blocklist.

    GET /me   Bearer access token -> jwt.decode (HS256, issuer, audience, exp), then redis-py
              EXISTS blocklist:<jti>; 200 {subject, session_id}, 401 otherwise, 503 when Redis fails

What an application writes when it has no revokd: one shared HMAC secret, and a Redis key per revoked jti
that its logout writes. The same route, dependency chain (bearer_token, get_redis ~ get_verifier, claims ~
principal, all sync) and response model as examples/python/app.py's GET /me, so that the two apps differ
only in how they verify.

Environment: RECIPE_SECRET_FILE (the HMAC secret, trailing whitespace trimmed as revokd does),
RECIPE_REDIS_URL (default redis://127.0.0.1:6379), RECIPE_ISSUER (default revokd), RECIPE_AUDIENCE
(default demo-app).

    RECIPE_SECRET_FILE=keys/hs.secret uvicorn recipe_app:app --app-dir bench --port 8001
"""

from __future__ import annotations

import os
from pathlib import Path

import jwt
import redis
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel


class Me(BaseModel):
    subject: str
    session_id: str


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


_bearer = HTTPBearer(auto_error=False)


def bearer_token(creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
    if creds is None or not creds.credentials:
        raise _unauthorized("missing bearer token")
    return creds.credentials


def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


def claims(request: Request, token: str = Depends(bearer_token), r: redis.Redis = Depends(get_redis)) -> dict:
    state = request.app.state
    try:
        c = jwt.decode(token, state.secret, algorithms=["HS256"], issuer=state.issuer, audience=state.audience,
                       options={"require": ["exp", "jti"]})
    except jwt.InvalidTokenError as err:
        raise _unauthorized(type(err).__name__) from None
    try:
        revoked = r.exists(f"blocklist:{c['jti']}")
    except redis.RedisError:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="blocklist unavailable") from None
    if revoked:
        raise _unauthorized("revoked")
    return c


def create_app() -> FastAPI:
    app = FastAPI(title="PyJWT + Redis blocklist recipe")
    app.state.secret = Path(os.environ["RECIPE_SECRET_FILE"]).read_bytes().rstrip(b" \t\n\r\x0c")
    app.state.redis = redis.Redis.from_url(os.environ.get("RECIPE_REDIS_URL", "redis://127.0.0.1:6379"))
    app.state.issuer = os.environ.get("RECIPE_ISSUER", "revokd")
    app.state.audience = os.environ.get("RECIPE_AUDIENCE", "demo-app")

    @app.get("/me", response_model=Me)
    def me(c: dict = Depends(claims)) -> Me:
        return Me(subject=c.get("sub", ""), session_id=c.get("sid", ""))

    return app


app = create_app()

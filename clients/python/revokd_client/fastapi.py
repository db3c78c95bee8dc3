"""FastAPI / Starlette integration: a dependency that returns the verified principal or answers 401."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import HTTPException, Request, status

from .client import AsyncClient
from .errors import Unavailable
from .types import Principal

if TYPE_CHECKING:
    from .local import LocalVerifier


class RevokdBearer:
    """`Depends(RevokdBearer(client, audience="web"))`: the bearer token's Principal, or 401 with
    `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750); 503 when revokd cannot answer (never access).
    `client`: an AsyncClient (every check asks revokd) or a started LocalVerifier (local mode)."""

    def __init__(self, client: AsyncClient | LocalVerifier, audience: str | None = None) -> None:
        self.client = client
        self.audience = audience

    async def __call__(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "bearer token required",
                                headers={"WWW-Authenticate": 'Bearer realm="api"'})
        try:
            if isinstance(self.client, AsyncClient):
                result = await self.client.verify(token.strip(), self.audience)
            else:
                result = await self.client.averify(token.strip(), self.audience)
        except Unavailable:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "token service unavailable",
                                headers={"Retry-After": "1"}) from None
        if not result.valid or result.principal is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, result.verdict.name,
                                headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{result.verdict.name}"'})
        return result.principal

"""The sync (`Client`) and asyncio (`AsyncClient`) clients: every RPC, a deadline each, one channel reused."""

from __future__ import annotations

import json
import os
from typing import Any

import grpc
import grpc.aio

from ._gen import token_service_pb2 as pb
from ._gen import token_service_pb2_grpc as pb_grpc
from .errors import from_rpc_error
from .types import Principal, Session, Verdict, Verification, target

DEFAULT_ADDR = "127.0.0.1:50051"


def _metadata(secret: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {secret}"),) if secret else None


def _claims_json(claims: dict[str, Any] | None) -> str:
    return json.dumps(claims, separators=(",", ":")) if claims else ""


def _verification(resp: pb.VerifyTokenResponse) -> Verification:
    verdict = Verdict(resp.verdict)
    principal = Principal.from_response(resp) if verdict in (Verdict.VALID, Verdict.REVOKED) else None
    return Verification(verdict, principal)


class _Base:
    def __init__(self, addr: str | None, timeout: float, secret: str | None) -> None:
        self.target = target(addr or os.environ.get("REVOKD_ADDR", DEFAULT_ADDR))
        self.timeout = timeout
        self.metadata = _metadata(secret if secret is not None else os.environ.get("REVOKD_CLIENT_SECRET"))


class Client(_Base):
    """A blocking client. `secret`: a registered client's secret (or $REVOKD_CLIENT_SECRET)."""

    def __init__(self, addr: str | None = None, timeout: float = 2.0, secret: str | None = None) -> None:
        super().__init__(addr, timeout, secret)
        self._channel = grpc.insecure_channel(self.target)
        self._stub = pb_grpc.TokenServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def verify(self, token: str, audience: str | None = None) -> Verification:
        return _verification(self._call("VerifyToken", pb.VerifyTokenRequest(token=token, audience=audience or "")))

    def issue_token(self, subject: str, audience: list[str] | None = None, ttl_seconds: int | None = None,
                    claims: dict[str, Any] | None = None) -> pb.IssueTokenResponse:
        req = pb.IssueTokenRequest(subject=subject, audience=audience or [], claims_json=_claims_json(claims))
        if ttl_seconds is not None:
            req.ttl.seconds = ttl_seconds
        return self._call("IssueToken", req)

    def revoke_token(self, token: str, reason: str = "") -> pb.RevokeTokenResponse:
        return self._call("RevokeToken", pb.RevokeTokenRequest(token=token, reason=reason))

    def login(self, subject: str, audience: list[str] | None = None,
              claims: dict[str, Any] | None = None) -> Session:
        req = pb.IssueSessionRequest(subject=subject, audience=audience or [], claims_json=_claims_json(claims))
        return Session.from_response(self._call("IssueSession", req))

    def refresh(self, refresh_token: str) -> Session:
        return Session.from_response(self._call("RefreshSession", pb.RefreshSessionRequest(refresh_token=refresh_token)))

    def logout(self, token: str, reason: str = "logout") -> pb.RevokeSessionResponse:
        return self._call("RevokeSession", pb.RevokeSessionRequest(token=token, reason=reason))

    def logout_everywhere(self, subject: str, reason: str = "logout everywhere") -> pb.RevokeSubjectResponse:
        return self._call("RevokeSubject", pb.RevokeSubjectRequest(subject=subject, reason=reason))

    def jwks(self) -> dict[str, Any]:
        return json.loads(self._call("GetJwks", pb.GetJwksRequest()).jwks_json)


class AsyncClient(_Base):
    """The same over grpc.aio; create it inside the running event loop."""

    def __init__(self, addr: str | None = None, timeout: float = 2.0, secret: str | None = None) -> None:
        super().__init__(addr, timeout, secret)
        self._channel = grpc.aio.insecure_channel(self.target)
        self._stub = pb_grpc.TokenServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def verify(self, token: str, audience: str | None = None) -> Verification:
        resp = await self._call("VerifyToken", pb.VerifyTokenRequest(token=token, audience=audience or ""))
        return _verification(resp)

    async def login(self, subject: str, audience: list[str] | None = None,
                    claims: dict[str, Any] | None = None) -> Session:
        req = pb.IssueSessionRequest(subject=subject, audience=audience or [], claims_json=_claims_json(claims))
        return Session.from_response(await self._call("IssueSession", req))

    async def refresh(self, refresh_token: str) -> Session:
        resp = await self._call("RefreshSession", pb.RefreshSessionRequest(refresh_token=refresh_token))
        return Session.from_response(resp)

    async def logout(self, token: str, reason: str = "logout") -> pb.RevokeSessionResponse:
        return await self._call("RevokeSession", pb.RevokeSessionRequest(token=token, reason=reason))

    async def logout_everywhere(self, subject: str, reason: str = "logout everywhere") -> pb.RevokeSubjectResponse:
        return await self._call("RevokeSubject", pb.RevokeSubjectRequest(subject=subject, reason=reason))

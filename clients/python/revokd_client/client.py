"""The sync (`Client`) and asyncio (`AsyncClient`) clients: every RPC, a deadline each, one channel reused."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import grpc
import grpc.aio

from ._gen import token_service_pb2 as pb
from ._gen import token_service_pb2_grpc as pb_grpc
from .errors import from_rpc_error
from .types import Principal, Session, Verdict, Verification, target

DEFAULT_ADDR = "127.0.0.1:50051"

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def _metadata(secret: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {secret}"),) if secret else None


def _claims_json(claims: dict[str, Any] | None) -> str:
    return json.dumps(claims, separators=(",", ":")) if claims else ""


def _issue_token_request(subject: str, audience: list[str] | None, ttl_seconds: int | None,
                         claims: dict[str, Any] | None) -> pb.IssueTokenRequest:
    req = pb.IssueTokenRequest(subject=subject, audience=audience or [], claims_json=_claims_json(claims))
    if ttl_seconds is not None:
        req.ttl.seconds = ttl_seconds
    return req


def _revoke_token_request(token: str | None, jti: str | None, reason: str) -> pb.RevokeTokenRequest:
    if token is not None and jti is None:
        return pb.RevokeTokenRequest(token=token, reason=reason)
    if jti is not None and token is None:
        return pb.RevokeTokenRequest(jti=jti, reason=reason)
    raise ValueError("give the token or its jti")


def _revoke_session_request(token: str | None, session_id: str | None, reason: str) -> pb.RevokeSessionRequest:
    if token is not None and session_id is None:
        return pb.RevokeSessionRequest(token=token, reason=reason)
    if session_id is not None and token is None:
        return pb.RevokeSessionRequest(session_id=session_id, reason=reason)
    raise ValueError("give a token of the session or its session id")


def _jwks(resp: pb.GetJwksResponse) -> dict[str, Any]:
    jwks: dict[str, Any] = json.loads(resp.jwks_json)
    return jwks


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

    def _call(self, rpc: grpc.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req) -> _Resp:
        try:
            return rpc(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def verify(self, token: str, audience: str | None = None) -> Verification:
        resp = self._call(self._stub.VerifyToken, pb.VerifyTokenRequest(token=token, audience=audience or ""))
        return _verification(resp)

    def issue_token(self, subject: str, audience: list[str] | None = None, ttl_seconds: int | None = None,
                    claims: dict[str, Any] | None = None) -> pb.IssueTokenResponse:
        return self._call(self._stub.IssueToken, _issue_token_request(subject, audience, ttl_seconds, claims))

    def revoke_token(self, token: str | None = None, reason: str = "", *,
                     jti: str | None = None) -> pb.RevokeTokenResponse:
        """Revokes one token, given the token or its `jti`."""
        return self._call(self._stub.RevokeToken, _revoke_token_request(token, jti, reason))

    def login(self, subject: str, audience: list[str] | None = None,
              claims: dict[str, Any] | None = None) -> Session:
        req = pb.IssueSessionRequest(subject=subject, audience=audience or [], claims_json=_claims_json(claims))
        return Session.from_response(self._call(self._stub.IssueSession, req))

    def refresh(self, refresh_token: str) -> Session:
        resp = self._call(self._stub.RefreshSession, pb.RefreshSessionRequest(refresh_token=refresh_token))
        return Session.from_response(resp)

    def logout(self, token: str | None = None, reason: str = "logout", *,
               session_id: str | None = None) -> pb.RevokeSessionResponse:
        """Revokes a session (every token of it), given any of its tokens or its id."""
        return self._call(self._stub.RevokeSession, _revoke_session_request(token, session_id, reason))

    def logout_everywhere(self, subject: str, reason: str = "logout everywhere") -> pb.RevokeSubjectResponse:
        return self._call(self._stub.RevokeSubject, pb.RevokeSubjectRequest(subject=subject, reason=reason))

    def jwks(self) -> dict[str, Any]:
        return _jwks(self._call(self._stub.GetJwks, pb.GetJwksRequest()))

    def watch_revocations(self) -> Iterator[pb.WatchRevocationsResponse]:
        """The raw WatchRevocations stream, without a deadline (LocalVerifier consumes it for you)."""
        call = self._stub.WatchRevocations(pb.WatchRevocationsRequest(), metadata=self.metadata)
        try:
            yield from call
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()


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

    async def _call(self, rpc: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req) -> _Resp:
        try:
            return await rpc(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def verify(self, token: str, audience: str | None = None) -> Verification:
        resp = await self._call(self._stub.VerifyToken, pb.VerifyTokenRequest(token=token, audience=audience or ""))
        return _verification(resp)

    async def issue_token(self, subject: str, audience: list[str] | None = None, ttl_seconds: int | None = None,
                          claims: dict[str, Any] | None = None) -> pb.IssueTokenResponse:
        return await self._call(self._stub.IssueToken, _issue_token_request(subject, audience, ttl_seconds, claims))

    async def revoke_token(self, token: str | None = None, reason: str = "", *,
                           jti: str | None = None) -> pb.RevokeTokenResponse:
        return await self._call(self._stub.RevokeToken, _revoke_token_request(token, jti, reason))

    async def login(self, subject: str, audience: list[str] | None = None,
                    claims: dict[str, Any] | None = None) -> Session:
        req = pb.IssueSessionRequest(subject=subject, audience=audience or [], claims_json=_claims_json(claims))
        resp = await self._call(self._stub.IssueSession, req)
        return Session.from_response(resp)

    async def refresh(self, refresh_token: str) -> Session:
        resp = await self._call(self._stub.RefreshSession, pb.RefreshSessionRequest(refresh_token=refresh_token))
        return Session.from_response(resp)

    async def logout(self, token: str | None = None, reason: str = "logout", *,
                     session_id: str | None = None) -> pb.RevokeSessionResponse:
        return await self._call(self._stub.RevokeSession, _revoke_session_request(token, session_id, reason))

    async def logout_everywhere(self, subject: str, reason: str = "logout everywhere") -> pb.RevokeSubjectResponse:
        return await self._call(self._stub.RevokeSubject, pb.RevokeSubjectRequest(subject=subject, reason=reason))

    async def jwks(self) -> dict[str, Any]:
        return _jwks(await self._call(self._stub.GetJwks, pb.GetJwksRequest()))

    async def watch_revocations(self) -> AsyncIterator[pb.WatchRevocationsResponse]:
        """The raw WatchRevocations stream, without a deadline."""
        call = self._stub.WatchRevocations(pb.WatchRevocationsRequest(), metadata=self.metadata)
        try:
            async for msg in call:
                yield msg
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()

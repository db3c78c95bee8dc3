"""Typed errors: what went wrong talking to revokd. A bad token is never an error (it is a Verdict)."""

from __future__ import annotations

import grpc


class RevokdError(Exception):
    """revokd answered with an error status, or could not be reached."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class Unavailable(RevokdError):
    """revokd or its revocation store could not answer: the outcome is unknown. Fail closed, retry."""


class InvalidArgument(RevokdError):
    """A request field revokd refused; `field` names it."""

    @property
    def field(self) -> str:
        return str(self).split(":", 1)[0].strip()


class Unauthenticated(RevokdError):
    """Caller credentials missing or wrong, or an unusable refresh token."""


class PermissionDenied(RevokdError):
    """The caller may not do this, or a refresh token was reused (its session is revoked)."""


_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    # tonic ends a call whose grpc-timeout passed with CANCELLED ("Timeout expired"): the outcome is unknown.
    grpc.StatusCode.CANCELLED: Unavailable,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def from_rpc_error(err: grpc.RpcError) -> RevokdError:
    """The typed error for a grpc.RpcError (sync or asyncio)."""
    code = err.code()
    return _BY_CODE.get(code, RevokdError)(err.details() or code.name, code)

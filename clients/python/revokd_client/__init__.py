"""revokd_client: a Python client for revokd (issue, verify and revoke JWTs).

`LocalVerifier` (local mode, `revokd_client.local`) needs the `local` extra (PyJWT with cryptography); it is
imported on first use, so the rest of the package does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import AsyncClient, Client
from .errors import InvalidArgument, PermissionDenied, RevokdError, Unauthenticated, Unavailable
from .types import Principal, Session, Verdict, Verification, target

if TYPE_CHECKING:
    from .local import LocalVerifier

__all__ = [
    "AsyncClient", "Client", "InvalidArgument", "LocalVerifier", "PermissionDenied", "Principal", "RevokdError",
    "Session", "Unauthenticated", "Unavailable", "Verdict", "Verification", "target",
]


def __getattr__(name: str) -> Any:
    if name == "LocalVerifier":
        from .local import LocalVerifier

        return LocalVerifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

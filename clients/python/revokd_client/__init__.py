"""revokd_client: a Python client for revokd (issue, verify and revoke JWTs)."""

from .client import AsyncClient, Client
from .errors import InvalidArgument, PermissionDenied, RevokdError, Unauthenticated, Unavailable
from .types import Principal, Session, Verdict, Verification, target

__all__ = [
    "AsyncClient", "Client", "InvalidArgument", "PermissionDenied", "Principal", "RevokdError", "Session",
    "Unauthenticated", "Unavailable", "Verdict", "Verification", "target",
]

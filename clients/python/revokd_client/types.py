"""Plain Python values for revokd's answers: an enum for verdicts, datetimes, exact claims."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ._gen import token_service_pb2 as pb


class Verdict(enum.Enum):
    """The outcome of a verification; only VALID lets a request through."""

    VALID = pb.VERDICT_VALID
    REVOKED = pb.VERDICT_REVOKED
    EXPIRED = pb.VERDICT_EXPIRED
    NOT_YET_VALID = pb.VERDICT_NOT_YET_VALID
    BAD_SIGNATURE = pb.VERDICT_BAD_SIGNATURE
    MALFORMED = pb.VERDICT_MALFORMED
    WRONG_AUDIENCE = pb.VERDICT_WRONG_AUDIENCE
    WRONG_ISSUER = pb.VERDICT_WRONG_ISSUER
    UNKNOWN_KEY = pb.VERDICT_UNKNOWN_KEY
    WRONG_TOKEN_TYPE = pb.VERDICT_WRONG_TOKEN_TYPE
    UNSPECIFIED = pb.VERDICT_UNSPECIFIED


def _time(ts: Timestamp | None) -> datetime | None:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    try:
        return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None  # past datetime's range (a token's claim, not revokd's doing)


@dataclass(frozen=True)
class Principal:
    """Who a VALID (or REVOKED) token speaks for."""

    subject: str
    jti: str
    session_id: str | None
    issued_at: datetime | None
    expires_at: datetime | None
    audience: tuple[str, ...]
    key_id: str
    claims: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_response(cls, resp: pb.VerifyTokenResponse) -> Principal:
        # claims_json keeps integers (the Struct form would give 42.0).
        claims = json.loads(resp.claims_json) if resp.claims_json else {}
        return cls(
            subject=resp.subject,
            jti=resp.jti,
            session_id=resp.session_id or None,
            issued_at=_time(resp.issued_at) if resp.HasField("issued_at") else None,
            expires_at=_time(resp.expires_at) if resp.HasField("expires_at") else None,
            audience=tuple(resp.audience),
            key_id=resp.key_id,
            claims=claims,
        )


@dataclass(frozen=True)
class Verification:
    """A verdict, and for VALID or REVOKED the token's principal."""

    verdict: Verdict
    principal: Principal | None

    @property
    def valid(self) -> bool:
        return self.verdict is Verdict.VALID


@dataclass(frozen=True)
class Session:
    """A login's tokens (IssueSession, RefreshSession)."""

    access_token: str
    refresh_token: str
    session_id: str
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None

    @classmethod
    def from_response(cls, resp: pb.IssueSessionResponse | pb.RefreshSessionResponse) -> Session:
        return cls(resp.access_token, resp.refresh_token, resp.session_id,
                   _time(resp.access_expires_at), _time(resp.refresh_expires_at))


def target(addr: str) -> str:
    """REVOKD_ADDR as grpcio wants it: `HOST:PORT`, `http://HOST:PORT` or `unix:/path`."""
    addr = addr.strip()
    if addr.startswith("http://"):
        return addr[len("http://"):].rstrip("/")
    if addr.startswith("https://"):
        raise ValueError(f"{addr!r}: TLS channels are not supported by this client yet; give HOST:PORT")
    if not addr:
        raise ValueError("empty revokd address")
    return addr

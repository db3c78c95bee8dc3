"""Local mode: verify access tokens in-process, answering revocation from a watched copy of revokd's set.

`LocalVerifier` keeps revokd's revocation set in memory through the WatchRevocations stream (a snapshot,
then every change, then heartbeats) and verifies a token's signature and claims itself, with revokd's
rules (the settings come from the stream). It answers locally only while the copy is proven fresh: synced,
and the last heartbeat recent enough that no revocation older than revokd's `--max-staleness` can be missing.
Otherwise, and for a token whose key it does not hold, it asks revokd (VerifyToken), and raises
`Unavailable` when revokd cannot answer: never VALID on a copy it cannot vouch for.

Keys come with the stream (the JWK Set and the kids in force, again whenever revokd reloads its keys, before
the heartbeat that covers the change), and from GetJwks on an unknown kid and every `jwks_refresh` seconds.
HMAC secrets are never published: give `secrets_dir`, a directory of `<kid>.secret` files shared with revokd,
to verify HS256 tokens locally; a secret whose kid revokd no longer has is not used.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import grpc

from ._gen import token_service_pb2 as pb
from ._gen import token_service_pb2_grpc as pb_grpc
from .client import Client
from .errors import Unavailable
from .types import Principal, Verdict, Verification

try:
    from jwt import PyJWK
    from jwt.algorithms import get_default_algorithms
except ImportError as err:  # pragma: no cover
    raise ImportError("local mode needs PyJWT with cryptography: pip install 'revokd-client[local]'") from err

log = logging.getLogger("revokd_client.local")

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
_B64URL = re.compile(r"[A-Za-z0-9_-]*\Z")
# base64url without padding, canonical: the bits past the last whole byte are zero.
_B64_INDEX = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}
# Trailing whitespace revokd trims from a `<kid>.secret` file (Rust's is_ascii_whitespace).
_SECRET_TRIM = b" \t\n\r\x0c"
_ALGORITHMS = get_default_algorithms()
_HMAC_DIGEST = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}
# How often dead entries are dropped from the local set (seconds).
PRUNE_INTERVAL = 30.0


class _Rejected(Exception):
    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict


class _AskRevokd(Exception):
    """A token this process cannot judge alone (a key it does not hold, a legacy token)."""


def _b64decode(part: str, verdict: Verdict) -> bytes:
    """Strict base64url without padding, as revokd decodes (else `verdict`)."""
    rem = len(part) % 4
    if rem == 1 or not _B64URL.match(part):
        raise _Rejected(verdict)
    if rem and _B64_INDEX[part[-1]] & (0x0F if rem == 2 else 0x03):
        raise _Rejected(verdict)
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise _Rejected(verdict) from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError("number out of range")
    return v


def _serde_limits(v: Any, depth: int = 1) -> None:
    """What serde_json refuses and Python's json accepts: nesting past 128 levels, lone surrogates."""
    if depth > 127:
        raise ValueError("recursion limit exceeded")
    if isinstance(v, str):
        v.encode("utf-8")
    elif isinstance(v, dict):
        for k, x in v.items():
            k.encode("utf-8")
            _serde_limits(x, depth + 1)
    elif isinstance(v, list):
        for x in v:
            _serde_limits(x, depth + 1)


def _json(raw: bytes) -> Any:
    try:
        v = json.loads(raw.decode("utf-8"), parse_constant=_no_constants, parse_float=_finite)
        _serde_limits(v)
    except RecursionError:
        raise ValueError("recursion limit exceeded") from None
    return v


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out and k in ("alg", "kid", "crit"):
            raise ValueError(f"duplicate {k}")
        out[k] = v
    return out


_ABSENT: Any = object()


def _numeric_date(v: Any) -> int:
    """A NumericDate as revokd reads it: an integer, or a number floored; anything else is MALFORMED."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise _Rejected(Verdict.MALFORMED)
    return min(max(math.floor(v), I64_MIN), I64_MAX)


def _micros(v: int | float) -> int:
    if isinstance(v, int):
        return min(max(v * 1_000_000, I64_MIN), I64_MAX)
    rounded = int(math.copysign(math.floor(abs(v) * 1e6 + 0.5), v))  # Rust's round(): half away from zero
    return min(max(rounded, I64_MIN), I64_MAX)


def _string(claims: dict[str, Any], name: str) -> str:
    v = claims.pop(name, "")
    if not isinstance(v, str):
        raise _Rejected(Verdict.MALFORMED)
    return v


@dataclass(frozen=True)
class _Token:
    """A token whose signature and claim types are checked (revokd's `authenticate`); cacheable."""

    kid: str
    issuer: str
    subject: str
    audience: tuple[str, ...]
    issued_at: int | None
    issued_at_us: int | None
    session_id: str | None
    access: bool
    not_before: int | None
    expires_at: int
    jti: str
    extra: dict[str, Any]
    # The answers for this token, built once: a cached token's are shared between calls.
    valid: Verification = field(init=False, compare=False, repr=False)
    revoked: Verification = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        def at(s: int | None) -> datetime | None:
            # As the remote path: 0 (an unset Timestamp) is None; past datetime's range, None too.
            if not s:
                return None
            try:
                return datetime.fromtimestamp(s, tz=timezone.utc)
            except (ValueError, OverflowError, OSError):
                return None

        p = Principal(self.subject, self.jti, self.session_id, at(self.issued_at), at(self.expires_at),
                      self.audience, self.kid, self.extra)
        object.__setattr__(self, "valid", Verification(Verdict.VALID, p))
        object.__setattr__(self, "revoked", Verification(Verdict.REVOKED, p))


# The answers without a principal, one per verdict.
_REJECTED = {v: Verification(v, None) for v in Verdict}


def _claims(payload: bytes, kid: str) -> _Token:
    """revokd's claim parsing: a present claim of the wrong type (null included) is MALFORMED."""
    try:
        claims = _json(payload)
    except ValueError:
        raise _Rejected(Verdict.MALFORMED) from None
    if not isinstance(claims, dict):
        raise _Rejected(Verdict.MALFORMED)
    issuer = _string(claims, "iss")
    subject = _string(claims, "sub")
    aud = claims.pop("aud", _ABSENT)
    if aud is _ABSENT:
        audience: tuple[str, ...] = ()
    elif isinstance(aud, str):
        audience = (aud,)
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        audience = tuple(aud)
    else:
        raise _Rejected(Verdict.MALFORMED)
    iat = claims.pop("iat", _ABSENT)
    issued_at = issued_at_us = None
    if iat is not _ABSENT:
        issued_at = _numeric_date(iat)
        issued_at_us = _micros(iat)
    sid = claims.pop("sid", _ABSENT)
    if sid is _ABSENT:
        sid = None
    elif not isinstance(sid, str) or not sid:
        raise _Rejected(Verdict.MALFORMED)
    use = claims.pop("token_use", "access")
    if use not in ("access", "refresh") or not isinstance(use, str):
        raise _Rejected(Verdict.MALFORMED)
    nbf = claims.pop("nbf", _ABSENT)
    not_before = None if nbf is _ABSENT else _numeric_date(nbf)
    expires_at = _numeric_date(claims.pop("exp", None))
    jti = _string(claims, "jti")
    if not jti:
        raise _Rejected(Verdict.MALFORMED)
    if not isinstance(claims.pop("client_id", ""), str):
        raise _Rejected(Verdict.MALFORMED)
    return _Token(kid, issuer, subject, audience, issued_at, issued_at_us, sid, use == "access", not_before,
                  expires_at, jti, claims)


@dataclass(frozen=True)
class _Key:
    kid: str
    alg: str
    verify: Callable[[bytes, bytes], bool]
    # What the key is (a digest of the secret, the JWK): a changed one invalidates cached tokens.
    fingerprint: str


def _hmac_key(kid: str, alg: str, secret: bytes) -> _Key:
    digest = _HMAC_DIGEST[alg]

    def verify(message: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(hmac.digest(secret, message, digest), signature)

    return _Key(kid, alg, verify, hashlib.sha256(secret).hexdigest())


def _jwk_key(jwk: dict[str, Any]) -> _Key | None:
    alg = jwk.get("alg")
    kid = jwk.get("kid")
    if not isinstance(alg, str) or not isinstance(kid, str) or alg not in _ALGORITHMS or alg in _HMAC_DIGEST:
        return None
    try:
        key = PyJWK(jwk, alg).key
    except Exception:  # an unusable key is one this process does not hold
        log.warning("revokd_client: skipping JWKS key %r", kid)
        return None
    size = getattr(key, "key_size", None)
    if alg[:2] in ("RS", "PS") and not (isinstance(size, int) and 2048 <= size <= 8192):
        return None  # revokd's verifier refuses RSA keys outside 2048-8192 bits: its verdicts go to revokd
    algorithm = _ALGORITHMS[alg]

    def verify(message: bytes, signature: bytes) -> bool:
        return bool(algorithm.verify(message, key, signature))

    return _Key(kid, alg, verify, json.dumps(jwk, sort_keys=True))


def _secret_keys(secrets_dir: Path) -> dict[str, _Key]:
    keys = {}
    for path in sorted(secrets_dir.glob("*.secret")):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            secret = path.read_bytes().rstrip(_SECRET_TRIM)
        except OSError as err:
            log.warning("revokd_client: cannot read %s: %s", path.name, err)
            continue
        if len(secret) >= 32:
            keys[path.stem] = _hmac_key(path.stem, "HS256", secret)
    return keys


@dataclass(frozen=True)
class _Settings:
    issuer: str
    leeway: int
    max_lifetime: int
    max_token_bytes: int
    max_staleness: float

    @classmethod
    def from_started(cls, s: pb.WatchStarted) -> _Settings:
        return cls(s.issuer, s.leeway.seconds, s.max_lifetime.seconds, s.max_token_bytes,
                   s.max_staleness.ToTimedelta().total_seconds())


class _RevocationSet:
    """jti -> until, sid -> until, subject -> (revoked_before_us, until); until in Unix seconds."""

    def __init__(self) -> None:
        self.jti: dict[str, int] = {}
        self.sid: dict[str, int] = {}
        self.subject: dict[str, tuple[int, int]] = {}

    def apply(self, r: pb.Revocation) -> None:
        if r.kind == pb.REVOCATION_KIND_SUBJECT:
            if r.removed:
                self.subject.pop(r.id, None)
            else:
                self.subject[r.id] = (r.revoked_before_us, r.expires_at)
            return
        table = self.jti if r.kind == pb.REVOCATION_KIND_JTI else self.sid if r.kind == pb.REVOCATION_KIND_SESSION \
            else None
        if table is None:
            return
        if r.removed:
            table.pop(r.id, None)
        else:
            table[r.id] = r.expires_at

    def revoked(self, t: _Token, now: int) -> bool:
        until = self.jti.get(t.jti)
        if until is not None and until > now:
            return True
        if t.session_id is not None:
            until = self.sid.get(t.session_id)
            if until is not None and until > now:
                return True
        cutoff = self.subject.get(t.subject)
        return cutoff is not None and cutoff[1] > now and (t.issued_at_us is None or t.issued_at_us <= cutoff[0])

    def pruning(self, now: int, slice_size: int = 4096) -> Iterator[None]:
        """Drops the entries dead at `now` (revokd forgets them without announcing it), `slice_size` keys
        per step, so a large set is pruned between heartbeats rather than in one long pause."""
        for table in (self.jti, self.sid, self.subject):
            keys = list(table)
            for i in range(0, len(keys), slice_size):
                for k in keys[i:i + slice_size]:
                    v = table.get(k)
                    if v is not None and (v[1] if isinstance(v, tuple) else v) <= now:
                        del table[k]
                yield

    def __len__(self) -> int:
        return len(self.jti) + len(self.sid) + len(self.subject)


class LocalVerifier:
    """Verifies access tokens in-process; see the module docstring. Thread-safe; start it once per process.

    `addr`, `secret`, `timeout`: as for `Client` (the fallback VerifyToken calls and the watch use them).
    `secrets_dir`: `<kid>.secret` files shared with revokd, to verify HS256 tokens locally.
    `cache_size`: how many verified tokens to keep (their signature and claims are not checked again;
    expiry, audience and revocation always are; 0: none). The answers for a cached token are shared between
    calls: treat `principal.claims` as read-only. `jwks_refresh`: seconds between key refreshes.
    """

    def __init__(self, addr: str | None = None, *, secret: str | None = None, timeout: float = 2.0,
                 secrets_dir: str | os.PathLike[str] | None = None, cache_size: int = 65536,
                 jwks_refresh: float = 300.0) -> None:
        self._client = Client(addr, timeout=timeout, secret=secret)
        self._channel = grpc.insecure_channel(self._client.target)
        self._stub = pb_grpc.TokenServiceStub(self._channel)
        self._secrets_dir = Path(secrets_dir) if secrets_dir is not None else None
        self._cache_size = cache_size
        self._jwks_refresh = jwks_refresh
        self._keys: dict[str, _Key] = {}
        self._keys_lock = threading.Lock()
        self._keys_fetched = 0.0
        self._refresh_started = 0.0
        self._cache: dict[str, tuple[_Token, _Key]] = {}
        # The kids revokd verifies with, from the watch (None until it says): a secret not among them is dropped.
        self._kids: set[str] | None = None
        self._set = _RevocationSet()
        self._settings: _Settings | None = None
        self._synced = False
        # monotonic() past which the set is no longer proven fresh; 0: not now.
        self._trusted_until = 0.0
        # monotonic() up to which every acknowledged revocation is known to be in the set.
        self._fresh_as_of = 0.0
        self._progress = threading.Condition()
        self._stop = threading.Event()
        self._call: Any = None
        self._threads: list[threading.Thread] = []
        # How many verdicts came from the local set, and from revokd (approximate under threads).
        self.answered_locally = 0
        self.answered_remotely = 0
        # How many watches have synced (1 + the re-snapshots after a gap or a reconnect).
        self.watches = 0

    # lifecycle

    def start(self) -> LocalVerifier:
        """Starts the watch and key refresh threads; returns at once (verify asks revokd until synced)."""
        if not self._threads:
            for target, name in ((self._watch_loop, "revokd-watch"), (self._keys_loop, "revokd-keys")):
                t = threading.Thread(target=target, name=name, daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def close(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        with self._progress:
            self._progress.notify_all()
        for t in self._threads:
            t.join(timeout=5)
        self._channel.close()
        self._client.close()

    def __enter__(self) -> LocalVerifier:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def trusted(self) -> bool:
        """Whether verify answers from the local set right now."""
        return time.monotonic() < self._trusted_until

    def wait_trusted(self, timeout: float = 10.0) -> bool:
        """Blocks until the keys are fetched and the local set is synced and fresh (or `timeout`); returns
        whether it is."""
        return self._wait(lambda: self.trusted and self._keys_fetched > 0, timeout)

    def wait_caught_up(self, since: float, timeout: float = 10.0) -> bool:
        """Blocks until every revocation acknowledged before `since` (a `time.monotonic()` reading, e.g.
        taken after a RevokeToken call returned) is in the local set; returns whether it is."""
        return self._wait(lambda: self._synced and self._fresh_as_of > since, timeout)

    def _wait(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._progress:
            while not cond():
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return cond()
                self._progress.wait(min(left, 0.05))
            return True

    # verification

    def verify(self, token: str, audience: str | None = None) -> Verification:
        """The verdict for an access token, as VerifyToken would give it. Raises `Unavailable` when the
        local set is not trusted and revokd cannot answer."""
        result = self._try_local(token, audience)
        return result if result is not None else self._client.verify(token, audience)

    async def averify(self, token: str, audience: str | None = None) -> Verification:
        """`verify` for asyncio code: the local answer inline, a call to revokd in a worker thread (an unknown
        kid too: the key fetch never blocks the event loop)."""
        result = self._try_local(token, audience, fetch_keys=False)
        return result if result is not None else await asyncio.to_thread(self._client.verify, token, audience)

    def _try_local(self, token: str, audience: str | None, fetch_keys: bool = True) -> Verification | None:
        """The local answer, or None (counted) when revokd must be asked."""
        settings = self._settings
        if time.monotonic() < self._trusted_until and settings is not None:
            try:
                return self._verify_local(token, audience, settings, fetch_keys)
            except _AskRevokd:
                pass
        self.answered_remotely += 1
        return None

    def _verify_local(self, token: str, audience: str | None, s: _Settings, fetch_keys: bool) -> Verification:
        cached = self._cache.get(token)
        # Verified with a key still in force (not removed or replaced since).
        if cached is not None and self._keys.get(cached[1].kid) is cached[1]:
            t = cached[0]
        else:
            try:
                t, key = self._authenticate(token, s, fetch_keys)
            except _Rejected as r:
                self.answered_locally += 1
                return _REJECTED[r.verdict]
            if self._cache_size > 0:
                if len(self._cache) >= self._cache_size:
                    try:
                        del self._cache[next(iter(self._cache))]
                    except (KeyError, StopIteration, RuntimeError):
                        pass
                self._cache[token] = (t, key)
        self.answered_locally += 1
        now = int(time.time())
        verdict = self._check(t, audience, now, s)
        if verdict is not None:
            return _REJECTED[verdict]
        if time.monotonic() >= self._trusted_until:
            raise _AskRevokd()  # trust lapsed while the key was fetched
        return t.revoked if self._set.revoked(t, now) else t.valid

    def _authenticate(self, token: str, s: _Settings, fetch_keys: bool = True) -> tuple[_Token, _Key]:
        if len(token.encode("utf-8", "surrogatepass")) > s.max_token_bytes:
            raise _Rejected(Verdict.MALFORMED)
        message, dot, signature = token.rpartition(".")
        header_b64, dot2, payload_b64 = message.partition(".")
        if not dot or not dot2 or "." in payload_b64:
            raise _Rejected(Verdict.MALFORMED)
        try:
            header = json.loads(_b64decode(header_b64, Verdict.MALFORMED).decode("utf-8"),
                                object_pairs_hook=_unique_pairs, parse_constant=_no_constants)
        except (ValueError, RecursionError):
            raise _Rejected(Verdict.MALFORMED) from None
        if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
            raise _Rejected(Verdict.MALFORMED)
        kid = header.get("kid")
        if header.get("crit") is not None or not (kid is None or isinstance(kid, str)):
            raise _Rejected(Verdict.MALFORMED)
        if kid is None:
            raise _AskRevokd()  # a legacy token (migration mode): revokd holds that key
        key = self._key(kid, fetch_keys)
        if header["alg"] != key.alg:
            raise _Rejected(Verdict.BAD_SIGNATURE)
        try:
            sig = _b64decode(signature, Verdict.BAD_SIGNATURE)
            ok = key.verify(message.encode(), sig)
        except _Rejected:
            raise
        except Exception:
            ok = False
        if not ok:
            raise _Rejected(Verdict.BAD_SIGNATURE)
        return _claims(_b64decode(payload_b64, Verdict.MALFORMED), key.kid), key

    @staticmethod
    def _check(t: _Token, audience: str | None, now: int, s: _Settings) -> Verdict | None:
        if not t.access:
            return Verdict.WRONG_TOKEN_TYPE
        if now >= t.expires_at + s.leeway:
            return Verdict.EXPIRED
        if t.not_before is not None and now + s.leeway < t.not_before:
            return Verdict.NOT_YET_VALID
        longest = s.max_lifetime + s.leeway
        if t.expires_at - now > longest or (t.issued_at is not None and t.expires_at - t.issued_at > longest):
            return Verdict.MALFORMED
        if t.issuer != s.issuer:
            return Verdict.WRONG_ISSUER
        if audience and audience not in t.audience:  # "" is no audience, as for VerifyToken
            return Verdict.WRONG_AUDIENCE
        return None

    # keys

    def _key(self, kid: str, fetch: bool = True) -> _Key:
        key = self._keys.get(kid)
        if key is None and not fetch:
            now = time.monotonic()
            if now - max(self._keys_fetched, self._refresh_started) > 1.0:
                self._refresh_started = now  # at most one background fetch a second
                threading.Thread(target=self._refresh_quietly, daemon=True).start()
            raise _AskRevokd()
        if key is None:
            with self._keys_lock:  # after a refresh in flight
                key = self._keys.get(kid)
                # A key revokd added since the last refresh? At most one refresh a second.
                if key is None and time.monotonic() - self._keys_fetched > 1.0:
                    try:
                        self._refresh_keys_locked()
                    except Exception as err:
                        log.warning("revokd_client: key refresh failed: %s", err)
                    key = self._keys.get(kid)
            if key is None:
                raise _AskRevokd()  # revokd answers UNKNOWN_KEY, or holds a secret this process does not
        return key

    def _refresh_quietly(self) -> None:
        if not self._keys_lock.acquire(blocking=False):
            return  # a refresh is under way
        try:
            if time.monotonic() - self._keys_fetched > 1.0:
                self._refresh_keys_locked()
        except Exception as err:
            log.warning("revokd_client: key refresh failed: %s", err)
        finally:
            self._keys_lock.release()

    def _refresh_keys(self) -> None:
        with self._keys_lock:
            self._refresh_keys_locked()

    def _refresh_keys_locked(self) -> None:
        self._install_keys_locked(self._client.jwks())

    def _install_keys_locked(self, jwks: dict[str, Any]) -> None:
        keys = _secret_keys(self._secrets_dir) if self._secrets_dir is not None else {}
        if self._kids is not None:
            keys = {kid: k for kid, k in keys.items() if kid in self._kids}
        for jwk in jwks.get("keys", []):
            key = _jwk_key(jwk)
            # GetJwks may reach another replica: a key the watch says is gone stays gone.
            if key is not None and (self._kids is None or key.kid in self._kids):
                keys[key.kid] = key
        # An unchanged key keeps its object, so the tokens cached with it stay cached; a key gone or
        # replaced is a new object (or none), so they are verified again.
        old = self._keys
        keys = {kid: old[kid] if kid in old and old[kid].fingerprint == k.fingerprint else k
                for kid, k in keys.items()}
        self._keys = keys
        self._keys_fetched = time.monotonic()
        with self._progress:
            self._progress.notify_all()

    def _keys_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._refresh_keys()
                wait = self._jwks_refresh
            except Exception as err:
                log.warning("revokd_client: key refresh failed: %s", err)
                wait = 1.0
            self._stop.wait(wait)

    # the watch

    def _watch_loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                self._watch_once()
                backoff = 0.05
            except grpc.RpcError as err:
                if self._stop.is_set():
                    break
                code = err.code()
                if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
                            grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED):
                    log.warning("revokd_client: cannot watch revocations (%s: %s); verifying remotely",
                                code.name, err.details())
                    backoff = 30.0
                elif code != grpc.StatusCode.ABORTED:
                    log.info("revokd_client: watch ended (%s); reconnecting", code.name)
            except Exception:
                log.exception("revokd_client: watch failed; reconnecting")
            finally:
                self._untrust()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _untrust(self) -> None:
        with self._progress:
            self._synced = False
            self._trusted_until = 0.0
            self._progress.notify_all()

    def _watch_once(self) -> None:
        call = self._stub.WatchRevocations(pb.WatchRevocationsRequest(), metadata=self._client.metadata)
        self._call = call
        if self._stop.is_set():
            call.cancel()
        building = _RevocationSet()
        settings: _Settings | None = None
        next_prune = time.monotonic() + PRUNE_INTERVAL
        pruning: Iterator[None] | None = None
        for msg in call:
            event = msg.WhichOneof("event")
            if event == "revocations":
                target = self._set if self._synced else building
                for r in msg.revocations.revocations:
                    target.apply(r)
            elif event == "heartbeat":
                if settings is None or not self._synced:
                    continue
                received = time.monotonic()
                staleness = msg.heartbeat.staleness
                fresh_as_of = received - staleness.seconds - staleness.nanos / 1e9
                with self._progress:
                    self._fresh_as_of = fresh_as_of
                    self._trusted_until = fresh_as_of + settings.max_staleness
                    self._progress.notify_all()
                if pruning is not None:
                    pruning = pruning if next(pruning, True) is None else None
                elif received > next_prune:
                    pruning = self._set.pruning(int(time.time()))
                    next_prune = received + PRUNE_INTERVAL
            elif event == "keys":
                # Before the heartbeat that covers it: a key revokd dropped is dropped here within the bound.
                with self._keys_lock:
                    self._kids = set(msg.keys.kids)
                    self._install_keys_locked(json.loads(msg.keys.jwks_json))
            elif event == "started":
                settings = _Settings.from_started(msg.started)
                if settings != self._settings:
                    self._cache = {}
                self._settings = settings
            elif event == "synced":
                with self._progress:
                    self._set = building
                    self._synced = True
                    self.watches += 1
                    self._progress.notify_all()
        # The stream ended without a status: revokd closed it.
        raise Unavailable("revokd ended the watch")

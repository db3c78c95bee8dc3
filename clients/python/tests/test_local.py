"""Local mode against real revokd and Redis processes: answers in-process with revokd's verdicts and
principals, revocations from any instance seen locally, and under faults (revokd gone, revokd silent,
Redis paused) never VALID on a set it cannot vouch for, then back once the fault ends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from conftest import fixtures
from revokd_client import Client, LocalVerifier, Unavailable, Verdict, Verification

ALGS = {"ed": "EdDSA", "rs": "RS256", "es": "ES256"}
HS_SECRET = "local-mode-test-secret-0123456789abcdef"
# The tests assert answers came from the local set, which is trusted only this long past a heartbeat: longer
# than the default 100 ms, so a test machine's scheduling hiccup does not send a check to revokd.
STALENESS = ("--max-staleness", "500ms")


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    out: Path = tmp_path_factory.mktemp("local-keys")
    for kid, alg in ALGS.items():
        subprocess.run([str(fixtures.revokd_bin()), "keygen", "--alg", alg, "--kid", kid, "--out", str(out)],
                       check=True, capture_output=True, env=fixtures.child_env(), timeout=60)
    (out / "hs.secret").write_text(HS_SECRET + "\n")
    os.chmod(out / "hs.secret", 0o600)
    return out


@pytest.fixture(scope="module")
def server(keys, redis_server) -> Iterator[Any]:
    revokd = fixtures.start_revokd(keys, "ed", redis_server.url, *STALENESS)
    yield revokd
    fixtures.stop_revokd_checked(revokd)


@pytest.fixture
def local(server, keys) -> Iterator[LocalVerifier]:
    with LocalVerifier(server.grpc_addr, timeout=5, secrets_dir=keys) as v:
        assert v.wait_trusted(), "the local set never became trusted"
        yield v


def sign(keys: Path, kid: str, claims: dict[str, Any]) -> str:
    if kid == "hs":
        return jwt.encode(claims, HS_SECRET, algorithm="HS256", headers={"kid": "hs"})
    return jwt.encode(claims, (keys / f"{kid}.pem").read_text(), algorithm=ALGS[kid], headers={"kid": kid})


def claims(sub: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "revokd", "sub": sub, "jti": f"{sub}-{time.monotonic_ns()}", "iat": now, "exp": now + 300,
            **extra}


def locally(v: LocalVerifier, token: str, audience: str | None = None) -> Verification:
    """v.verify, asserting the answer came from the local set."""
    before = v.answered_remotely
    result = v.verify(token, audience)
    assert v.answered_remotely == before, "asked revokd, though the set is trusted and the key held"
    return result


def test_every_key_algorithm_agrees_with_revokd(server, keys, local):
    with Client(server.grpc_addr, timeout=5) as client:
        for kid in ("ed", "rs", "es", "hs"):
            token = sign(keys, kid, claims(f"alg-{kid}", aud=["web"], n=42, roles=["admin"]))
            remote = client.verify(token, "web")
            assert remote.verdict is Verdict.VALID, kid
            assert locally(local, token, "web") == remote, kid
            head, payload, sig = token.split(".")
            tampered = f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
            assert locally(local, tampered).verdict is client.verify(tampered).verdict is Verdict.BAD_SIGNATURE
        issued = client.issue_token("issued", claims={"n": 1})
        assert locally(local, issued.token) == client.verify(issued.token)


def test_revocations_of_every_kind_are_answered_locally(server, local):
    with Client(server.grpc_addr, timeout=5) as client:
        token = client.issue_token("rev-jti").token
        assert locally(local, token).verdict is Verdict.VALID
        client.revoke_token(token)
        assert local.wait_caught_up(time.monotonic())
        result = locally(local, token)
        assert result.verdict is Verdict.REVOKED and result.principal and result.principal.subject == "rev-jti"

        session = client.login("rev-session")
        assert locally(local, session.access_token).verdict is Verdict.VALID
        client.logout(session.access_token)
        assert local.wait_caught_up(time.monotonic())
        assert locally(local, session.access_token).verdict is Verdict.REVOKED

        before = client.issue_token("rev-subject").token
        client.logout_everywhere("rev-subject")
        after = client.issue_token("rev-subject").token
        assert local.wait_caught_up(time.monotonic())
        assert locally(local, before).verdict is Verdict.REVOKED
        assert locally(local, after).verdict is Verdict.VALID


def test_a_revocation_on_another_instance_reaches_the_local_set(server, keys, redis_server, local):
    other = fixtures.start_revokd(keys, "ed", redis_server.url, *STALENESS)
    try:
        with Client(other.grpc_addr, timeout=5) as elsewhere:
            for i in range(20):
                token = elsewhere.issue_token(f"other-{i}").token
                assert locally(local, token).verdict is Verdict.VALID
                elsewhere.revoke_token(token)
                acknowledged = time.monotonic()
                # Once the heartbeats cover the acknowledgement, the local answer can only be REVOKED.
                assert local.wait_caught_up(acknowledged), f"revocation {i} never covered"
                assert locally(local, token).verdict is Verdict.REVOKED
    finally:
        fixtures.stop_revokd_checked(other)


def test_unknown_and_new_keys(server, keys, local):
    with Client(server.grpc_addr, timeout=5) as client:
        stranger = jwt.encode(claims("stranger"), "x" * 40, algorithm="HS256", headers={"kid": "nobody"})
        before = local.answered_remotely
        assert local.verify(stranger).verdict is Verdict.UNKNOWN_KEY
        assert local.answered_remotely == before + 1
        # From asyncio: the same answer, the key fetch in a background thread, not on the loop.
        assert asyncio.run(local.averify(stranger)).verdict is Verdict.UNKNOWN_KEY
        # A key revokd gains (written to its keys dir, which it watches) is fetched on first sight.
        subprocess.run([str(fixtures.revokd_bin()), "keygen", "--alg", "EdDSA", "--kid", "ed2", "--out", str(keys)],
                       check=True, capture_output=True, env=fixtures.child_env(), timeout=60)
        ALGS["ed2"] = "EdDSA"
        token = sign(keys, "ed2", claims("new-key"))
        deadline = time.monotonic() + 10
        while client.verify(token).verdict is not Verdict.VALID:
            assert time.monotonic() < deadline, "revokd never loaded the new key"
            time.sleep(0.05)
        # The watch announces the new key before the heartbeat that covers revokd's reload.
        assert local.wait_caught_up(time.monotonic())
        assert locally(local, token).verdict is Verdict.VALID


def test_without_the_secret_hmac_tokens_go_to_revokd(server, keys):
    with LocalVerifier(server.grpc_addr, timeout=5) as v, Client(server.grpc_addr, timeout=5) as client:
        assert v.wait_trusted()
        token = sign(keys, "hs", claims("no-secret"))
        before = v.answered_remotely
        assert v.verify(token) == client.verify(token)
        assert v.answered_remotely == before + 1


def test_the_cache_is_bounded_and_rechecks_expiry_and_revocation(server):
    with LocalVerifier(server.grpc_addr, timeout=5, cache_size=3) as v, Client(server.grpc_addr, timeout=5) as c:
        assert v.wait_trusted()
        tokens = [c.issue_token(f"cache-{i}").token for i in range(10)]
        for t in tokens:
            assert locally(v, t).verdict is Verdict.VALID
        assert len(v._cache) <= 3
        # A cached token is still checked against the set every time.
        c.revoke_token(tokens[-1])
        assert v.wait_caught_up(time.monotonic())
        assert locally(v, tokens[-1]).verdict is Verdict.REVOKED


def test_averify_and_the_fastapi_dependency(server, local):
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from revokd_client import Principal
    from revokd_client.fastapi import RevokdBearer

    with Client(server.grpc_addr, timeout=5) as client:
        token = client.issue_token("async", audience=["web"]).token
        result = asyncio.run(local.averify(token, "web"))
        assert result.verdict is Verdict.VALID
        app = FastAPI()

        @app.get("/me")
        def me(p: Principal = Depends(RevokdBearer(local, audience="web"))) -> dict[str, str]:
            return {"sub": p.subject}

        http = TestClient(app)
        assert http.get("/me", headers={"Authorization": f"Bearer {token}"}).json() == {"sub": "async"}
        client.revoke_token(token)
        assert local.wait_caught_up(time.monotonic())
        r = http.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]


def never_valid_once_untrusted(v: LocalVerifier, token: str, trust_ends: float, seconds: float) -> int:
    """Verifies `token` for `seconds`; a VALID after `trust_ends` (monotonic) fails. Returns how many
    calls raised Unavailable."""
    unavailable = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            verdict = v.verify(token).verdict
        except Unavailable:
            unavailable += 1
            continue
        assert not (verdict is Verdict.VALID and time.monotonic() > trust_ends), "VALID from an untrusted set"
    return unavailable


def test_revokd_gone_is_unavailable_never_valid(keys, redis_server):
    revokd = fixtures.start_revokd(keys, "ed", redis_server.url, *STALENESS)
    with LocalVerifier(revokd.grpc_addr, timeout=0.5) as v:
        try:
            assert v.wait_trusted()
            with Client(revokd.grpc_addr, timeout=5) as c:
                token = c.issue_token("gone").token
            assert locally(v, token).verdict is Verdict.VALID
        finally:
            fixtures.stop_revokd_checked(revokd)
        assert v._settings is not None
        gone = time.monotonic()
        staleness = v._settings.max_staleness
        assert never_valid_once_untrusted(v, token, gone + staleness, 2 * staleness + 0.5) > 0
        assert not v.trusted


def test_silent_revokd_and_paused_redis(keys, tmp_path_factory):
    """A revokd that stops talking (SIGSTOP: a silent partition) while another instance revokes: once the
    heartbeats are overdue the local set is not used, nothing is VALID, and after SIGCONT the revocation is
    answered locally. Then Redis paused: revokd cannot prove its set fresh, so neither can the watch."""
    with contextlib.ExitStack() as cleanup:
        redis = fixtures.start_redis(tmp_path_factory.mktemp("local-redis"))
        cleanup.callback(fixtures.stop_process, redis.proc, "redis-server")
        b = fixtures.start_revokd(keys, "ed", redis.url, *STALENESS)
        cleanup.callback(fixtures.stop_revokd_checked, b)
        a = fixtures.start_revokd(keys, "ed", redis.url, *STALENESS)
        cleanup.callback(fixtures.stop_revokd_checked, a)
        with LocalVerifier(b.grpc_addr, timeout=0.3) as v, Client(a.grpc_addr, timeout=5) as on_a:
            assert v.wait_trusted()
            assert v._settings is not None
            staleness = v._settings.max_staleness
            token = on_a.issue_token("partition").token
            assert locally(v, token).verdict is Verdict.VALID

            os.kill(b.proc.pid, signal.SIGSTOP)
            try:
                on_a.revoke_token(token)
                silent = time.monotonic()
                assert never_valid_once_untrusted(v, token, silent + staleness, 2 * staleness + 0.5) > 0
                assert not v.trusted
            finally:
                os.kill(b.proc.pid, signal.SIGCONT)
            assert v.wait_trusted(), "the watch did not recover after SIGCONT"
            assert v.wait_caught_up(time.monotonic())
            assert locally(v, token).verdict is Verdict.REVOKED

            fresh = on_a.issue_token("paused").token
            assert locally(v, fresh).verdict is Verdict.VALID
            os.kill(redis.proc.pid, signal.SIGSTOP)
            try:
                paused = time.monotonic()
                # revokd's own bound (--max-staleness) plus the watch's: then every answer is UNAVAILABLE.
                assert never_valid_once_untrusted(v, fresh, paused + 2 * staleness, 3 * staleness + 0.5) > 0
                assert not v.trusted
            finally:
                os.kill(redis.proc.pid, signal.SIGCONT)
            assert v.wait_trusted(), "the watch did not recover after Redis came back"
            assert locally(v, fresh).verdict is Verdict.VALID


def test_dead_entries_are_pruned():
    from revokd_client._gen import token_service_pb2 as pb
    from revokd_client.local import _RevocationSet

    s = _RevocationSet()
    now = int(time.time())
    for kind, id_, until in ((pb.REVOCATION_KIND_JTI, "dead", now), (pb.REVOCATION_KIND_JTI, "live", now + 60),
                             (pb.REVOCATION_KIND_SESSION, "dead", now - 1),
                             (pb.REVOCATION_KIND_SUBJECT, "dead", now), (pb.REVOCATION_KIND_SUBJECT, "live", now + 1)):
        s.apply(pb.Revocation(kind=kind, id=id_, expires_at=until, revoked_before_us=now * 1_000_000))
    steps = sum(1 for _ in s.pruning(now, slice_size=1))  # one key per step: 2 jti, 1 sid, 2 subjects
    assert steps == 5
    assert (set(s.jti), set(s.sid), set(s.subject)) == ({"live"}, set(), {"live"})


def test_a_gap_in_the_feed_resnapshots(keys, tmp_path_factory):
    """revokd loses its Redis connections: the watch ends (a gap), the verifier watches again, and its new copy
    has what changed in Redis meanwhile (one revocation added by hand, one deleted)."""
    import redis as redis_py

    with contextlib.ExitStack() as cleanup:
        redis = fixtures.start_redis(tmp_path_factory.mktemp("gap-redis"))
        cleanup.callback(fixtures.stop_process, redis.proc, "redis-server")
        server = fixtures.start_revokd(keys, "ed", redis.url, *STALENESS)
        cleanup.callback(fixtures.stop_revokd_checked, server)
        r = cleanup.enter_context(redis_py.Redis(port=redis.port))
        with LocalVerifier(server.grpc_addr, timeout=5) as v, Client(server.grpc_addr, timeout=5) as c:
            assert v.wait_trusted()
            deleted, added = c.issue_token("gap-deleted"), c.issue_token("gap-added")
            # By hand: revokd re-writes its own recent revocations after a reconnect (its journal).
            r.set(f"revokd:jti:{deleted.jti}", "1", ex=600)
            deadline = time.monotonic() + 10
            while locally(v, deleted.token).verdict is not Verdict.REVOKED:
                assert time.monotonic() < deadline, "a revocation written by hand never reached the copy"
                time.sleep(0.01)
            assert locally(v, deleted.token).verdict is Verdict.REVOKED
            assert locally(v, added.token).verdict is Verdict.VALID
            watches_before = v.watches

            r.client_kill_filter(_type="normal")
            r.delete(f"revokd:jti:{deleted.jti}")
            r.set(f"revokd:jti:{added.jti}", "1", ex=600)

            deadline = time.monotonic() + 10
            while v.watches == watches_before:
                assert time.monotonic() < deadline, "the watch never started again after the gap"
                time.sleep(0.01)
            assert v.wait_trusted() and v.wait_caught_up(time.monotonic())
            assert locally(v, added.token).verdict is Verdict.REVOKED
            assert locally(v, deleted.token).verdict is Verdict.VALID


def test_a_key_revokd_drops_is_dropped_locally(tmp_path_factory, redis_server):
    """Keys follow the watch: when revokd stops verifying with a key (a public key, or an HMAC secret the app
    still has a copy of), local mode stops too, by the first heartbeat after revokd's own reload."""
    revokd_keys: Path = tmp_path_factory.mktemp("drop-revokd-keys")
    app_secrets: Path = tmp_path_factory.mktemp("drop-app-secrets")
    for kid in ("ed", "old-ed"):
        subprocess.run([str(fixtures.revokd_bin()), "keygen", "--alg", "EdDSA", "--kid", kid, "--out",
                        str(revokd_keys)], check=True, capture_output=True, env=fixtures.child_env(), timeout=60)
    for d in (revokd_keys, app_secrets):
        (d / "old-hs.secret").write_text(HS_SECRET)
        os.chmod(d / "old-hs.secret", 0o600)
    server = fixtures.start_revokd(revokd_keys, "ed", redis_server.url, *STALENESS, "--keys-reload-interval", "50ms")
    try:
        with LocalVerifier(server.grpc_addr, timeout=5, secrets_dir=app_secrets) as v, \
                Client(server.grpc_addr, timeout=5) as c:
            assert v.wait_trusted()
            ed_token = jwt.encode(claims("old-ed"), (revokd_keys / "old-ed.pem").read_text(), algorithm="EdDSA",
                                  headers={"kid": "old-ed"})
            hs_token = jwt.encode(claims("old-hs"), HS_SECRET, algorithm="HS256", headers={"kid": "old-hs"})
            for t in (ed_token, hs_token):
                assert locally(v, t).verdict is Verdict.VALID

            (revokd_keys / "old-ed.pem").unlink()
            (revokd_keys / "old-hs.secret").unlink()
            deadline = time.monotonic() + 10
            while c.verify(ed_token).verdict is Verdict.VALID or c.verify(hs_token).verdict is Verdict.VALID:
                assert time.monotonic() < deadline, "revokd never dropped the keys"
                time.sleep(0.02)
            assert v.wait_caught_up(time.monotonic())
            for t in (ed_token, hs_token):
                assert v.verify(t).verdict is Verdict.UNKNOWN_KEY
    finally:
        fixtures.stop_revokd_checked(server)


def test_inputs_python_reads_and_revokd_refuses(server, keys, local):
    """Payloads serde_json refuses (lone surrogates, nesting past 128, numbers out of range) are MALFORMED,
    dates out of datetime's range are no exception, and an empty audience is no audience: as revokd."""
    with Client(server.grpc_addr, timeout=5) as client:
        now = int(time.time())
        base = {"iss": "revokd", "sub": "edge", "iat": now, "exp": now + 300}
        cases = [
            '{"jti":"a","sub":"\\ud800"}',
            '{"jti":"b","x":' + "[" * 200 + "]" * 200 + "}",
            '{"jti":"c","x":1e400}',
            '{"jti":"d","iat":1e13}',
        ]
        for i, extra in enumerate(cases):
            payload = json.dumps(base)[:-1] + "," + extra[1:]
            head = b64(json.dumps({"alg": "HS256", "kid": "hs"}).encode())
            body = b64(payload.encode())
            sig = b64(hmac.digest(HS_SECRET.encode(), f"{head}.{body}".encode(), "sha256"))
            token = f"{head}.{body}.{sig}"
            remote, here = client.verify(token), locally(local, token)
            assert here.verdict is remote.verdict, (i, here.verdict, remote.verdict)
        token = client.issue_token("edge-aud", audience=["web"]).token
        assert locally(local, token, "").verdict is client.verify(token, "").verdict is Verdict.VALID


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

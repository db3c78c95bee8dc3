#!/usr/bin/env python3
"""Benchmark of the Python client package (clients/python/revokd_client): local mode, remote mode and the
hand-written recipe (PyJWT + a Redis blocklist), from one Python process, one case after another.

    target/py-venv/bin/python bench/python_client.py [--quick]

Starts its own redis-server and two revokd (A and B, mirror mode, on that Redis; keys `ed` (EdDSA, signing)
and `hs` (HS256) in a temporary keys dir), all on free loopback ports, and stops them (by pid) at the end.
Needs target/release/revokd ($REVOKD_BIN), redis-server and wrk on PATH, and the venv of
examples/python/run-tests.sh. Prints a markdown table and writes it to bench/out/python_client.md (with the
processes' logs in bench/out/python-client/).

Cases (each: a warm-up, then N timed calls with time.perf_counter_ns, gc collected then disabled):
  a. local mode, the same EdDSA token every time (LocalVerifier on A) vs the recipe: PyJWT HS256 decode
     + redis-py EXISTS blocklist:<jti> (that is case d)
  b. local mode, a never-seen token every call: HS256 (signed here with hs.secret, LocalVerifier with
     secrets_dir) vs PyJWT decode of the same tokens; EdDSA (issued by A) vs PyJWT decode
  c. remote mode: Client.verify vs a bare grpcio stub call; AsyncClient.verify vs a bare grpc.aio call
  e. propagation: a token issued and revoked on A, polled on a LocalVerifier watching B until REVOKED
  f. FastAPI: examples/python/app.py (REVOKD_VERIFY=local and remote) and bench/recipe_app.py under
     uvicorn (1 worker, a fresh one per run), GET /me driven by wrk (HTTP/1.1), 3 rounds, order rotating
Every comparison runs in 5 rounds alternating the case and its baseline (the order flips each round);
the table gives the median over rounds of each round's p50 and p99, and the median of the per-round ratios
with their range. In local-mode cases a fresh LocalVerifier is started per round and closed before the
baseline runs, so each side runs as it would in an application (local mode with its watch thread, the
recipe without one). Each round also records a speed probe (a fixed pure-Python loop): this VM's speed
moves by up to 2x on its own, which shows in absolute figures; the paired ratios are less affected.
About 3 minutes.

The script reports goals met or missed; it exits 1 only when a correctness check failed (a wrong verdict,
an answer that was not local, an HTTP error), never because a goal was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import gc
import hashlib
import hmac
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "clients" / "python"))

import grpc  # noqa: E402
import grpc.aio  # noqa: E402
import jwt  # noqa: E402
import redis  # noqa: E402

from revokd_client import AsyncClient, Client, Verdict  # noqa: E402
from revokd_client._gen import token_service_pb2 as pb  # noqa: E402
from revokd_client._gen import token_service_pb2_grpc as pb_grpc  # noqa: E402
from revokd_client.local import LocalVerifier  # noqa: E402

OUT = REPO / "bench" / "out"
LOGS = OUT / "python-client"
PY = sys.executable
pc = time.perf_counter_ns
START_TIMEOUT = 30.0
AUDIENCE = "demo-app"


# ------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    rounds: int
    warmup: int
    local: int  # per round: local repeated / recipe
    hs256: int  # per round: distinct HS256 tokens
    eddsa: int  # per round: distinct EdDSA tokens
    remote: int  # per round: remote calls (sync and async each)
    propagation: int
    wrk_warmup: int  # seconds
    wrk_duration: int  # seconds
    wrk_connections: int
    wrk_rounds: int  # rounds of (local, remote, recipe), the order rotating


FULL = Sizes(rounds=5, warmup=500, local=5000, hs256=4000, eddsa=1000, remote=2000, propagation=1000,
             wrk_warmup=2, wrk_duration=10, wrk_connections=16, wrk_rounds=3)
QUICK = Sizes(rounds=3, warmup=50, local=300, hs256=200, eddsa=100, remote=200, propagation=50,
              wrk_warmup=1, wrk_duration=2, wrk_connections=16, wrk_rounds=1)


# ------------------------------------------------------------------------------------------ stats


def percentile(sorted_values: list[int] | list[float], p: float) -> float:
    """Nearest rank."""
    if not sorted_values:
        raise ValueError("percentile of nothing")
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


@dataclass
class Dist:
    """One round of timings (ns)."""

    ns: list[int]

    def __post_init__(self) -> None:
        self.ns = sorted(self.ns)

    @property
    def p50_us(self) -> float:
        return percentile(self.ns, 50) / 1000

    @property
    def p99_us(self) -> float:
        return percentile(self.ns, 99) / 1000


@dataclass
class Series:
    """One case over its rounds."""

    name: str
    rounds: list[Dist] = field(default_factory=list)
    probes: list[float] = field(default_factory=list)  # speed_probe() at the start of each round

    @property
    def n(self) -> int:
        return sum(len(d.ns) for d in self.rounds)

    @property
    def p50(self) -> float:
        return statistics.median(d.p50_us for d in self.rounds)

    @property
    def p99(self) -> float:
        return statistics.median(d.p99_us for d in self.rounds)


@dataclass
class Ratio:
    median: float
    lo: float
    hi: float

    @classmethod
    def of(cls, num: Series, den: Series, attr: str) -> Ratio:
        r = [getattr(a, attr) / getattr(b, attr) for a, b in zip(num.rounds, den.rounds)]
        return cls(statistics.median(r), min(r), max(r))

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.lo:.2f}-{self.hi:.2f})"


# ---------------------------------------------------------------------------------------- checks

FAILED: list[str] = []


def check(ok: bool, what: str) -> None:
    if not ok:
        FAILED.append(what)
        print(f"CHECK FAILED: {what}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVOKD_", "RECIPE_"))}
    env["RUST_LOG"] = "info"
    env.update(extra)
    return env


class Procs:
    """Every process this script starts; stopped by pid (SIGTERM, then SIGKILL after 20 s)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], log: Path, **kw: Any) -> subprocess.Popen:
        with open(log, "wb") as f:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, **kw)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.procs)):
            self.stop(proc)


def wait_until(cond: Callable[[], bool], what: str, proc: subprocess.Popen, log: Path,
               timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: exited ({proc.returncode})\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready in {timeout}s\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.02)


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Revokd:
    name: str
    proc: subprocess.Popen
    grpc_addr: str
    admin_addr: str

    def metric(self, name: str) -> float:
        _, body = http_get(f"http://{self.admin_addr}/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


def start_redis(procs: Procs) -> tuple[subprocess.Popen, int]:
    for _ in range(3):
        port = free_port()
        log = LOGS / "redis.log"
        proc = procs.start("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                            "--appendonly", "no"], log, env=child_env())
        try:
            wait_until(lambda: redis_ping(port), "redis-server", proc, log)
            return proc, port
        except RuntimeError:
            procs.stop(proc)
    raise RuntimeError("redis-server did not start")


def start_revokd(procs: Procs, name: str, revokd_bin: Path, keys: Path, redis_port: int) -> Revokd:
    log = LOGS / f"revokd-{name}.log"
    cmd = [str(revokd_bin), "serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
           "--http-addr", "127.0.0.1:0", "--log-format", "json", "--keys-dir", str(keys), "--signing-kid", "ed",
           "--redis-url", f"redis://127.0.0.1:{redis_port}"]
    proc = procs.start(f"revokd {name}", cmd, log, env=child_env())
    serving: dict[str, Any] = {}

    def logged() -> bool:
        for line in log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("message") == "revokd serving":
                serving.update(event)
                return True
        return False

    wait_until(logged, f"revokd {name} ('revokd serving')", proc, log)
    server = Revokd(name, proc, serving["grpc_addr"], serving["admin_addr"])

    def ready() -> bool:
        try:
            return http_get(f"http://{server.admin_addr}/readyz", timeout=1.0)[0] == 200
        except OSError:
            return False

    wait_until(ready, f"revokd {name} (/readyz)", proc, log)
    return server


# ------------------------------------------------------------------------------------------ tokens


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_hs256(secret: bytes, claims: dict[str, Any], kid: str = "hs") -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    message = f"{header}.{payload}"
    return f"{message}.{b64url(hmac.digest(secret, message.encode(), 'sha256'))}"


def hs256_tokens(secret: bytes, n: int, prefix: str, audience: str | None = None) -> list[str]:
    now = int(time.time())
    out = []
    for i in range(n):
        claims: dict[str, Any] = {"iss": "revokd", "sub": f"user-{i % 1000}", "iat": now, "exp": now + 3600,
                                  "jti": f"{prefix}-{i}-{uuid.uuid4().hex}"}
        if audience is not None:
            claims["aud"] = audience
        out.append(sign_hs256(secret, claims))
    if len(set(out)) != n:
        raise RuntimeError("HS256 tokens are not distinct")
    return out


# -------------------------------------------------------------------------------------- measuring


def timed(fn: Callable[[Any], Any], inputs: list[Any], ok: Callable[[Any], bool], what: str) -> Dist:
    """One call of fn per input, each timed; ok() checks each answer, outside the timing."""
    out = [0] * len(inputs)
    bad = 0
    gc.collect()
    gc.disable()
    try:
        for i, x in enumerate(inputs):
            t0 = pc()
            r = fn(x)
            out[i] = pc() - t0
            if not ok(r):
                bad += 1
    finally:
        gc.enable()
    check(bad == 0, f"{what}: {bad} of {len(inputs)} answers wrong")
    return Dist(out)


async def atimed(fn: Callable[[Any], Any], inputs: list[Any], ok: Callable[[Any], bool], what: str) -> Dist:
    out = [0] * len(inputs)
    bad = 0
    gc.collect()
    gc.disable()
    try:
        for i, x in enumerate(inputs):
            t0 = pc()
            r = await fn(x)
            out[i] = pc() - t0
            if not ok(r):
                bad += 1
    finally:
        gc.enable()
    check(bad == 0, f"{what}: {bad} of {len(inputs)} answers wrong")
    return Dist(out)


PROBES: list[float] = []


def speed_probe() -> float:
    """How fast this machine runs Python right now: ms for a fixed pure-Python loop (lower is faster).
    This VM's speed moves by up to 2x over seconds with nothing else running on it (the host's doing), so
    every round records it beside its figures."""
    t0 = pc()
    total = 0
    for i in range(200_000):
        total += i
    ms = (pc() - t0) / 1e6
    PROBES.append(ms)
    return ms


def probe_round(*series: Series) -> None:
    p = speed_probe()
    for x in series:
        x.probes.append(p)


def warm(fn: Callable[[Any], Any], inputs: list[Any]) -> None:
    for x in inputs:
        fn(x)


def is_valid(v: Any) -> bool:
    return v.verdict is Verdict.VALID


def is_valid_pb(resp: Any) -> bool:
    return resp.verdict == pb.VERDICT_VALID


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ cases


@dataclass
class Env:
    sizes: Sizes
    a: Revokd
    b: Revokd
    keys: Path
    hs_secret: bytes
    redis_port: int
    ed_public: Any


def new_local(env: Env, server: Revokd, **kw: Any) -> LocalVerifier:
    lv = LocalVerifier(server.grpc_addr, **kw).start()
    if not lv.wait_trusted(10):
        raise RuntimeError(f"LocalVerifier on {server.name} not trusted within 10 s")
    return lv


def local_rounds(env: Env, name: str, base_name: str, inputs: Callable[[int], list[Any]],
                 warm_inputs: Callable[[int], list[Any]], base_fn: Callable[[Any], Any], base_ok: Callable[[Any], bool],
                 base_inputs: Callable[[int], list[Any]] | None = None,
                 base_warm: Callable[[int], list[Any]] | None = None) -> tuple[Series, Series]:
    """ROUNDS of (local case, baseline), the order flipping each round; a fresh LocalVerifier on A per round."""
    case, base = Series(name), Series(base_name)
    base_inputs = base_inputs or inputs
    base_warm = base_warm or warm_inputs
    for r in range(env.sizes.rounds):
        probe_round(case, base)

        def run_case() -> None:
            lv = new_local(env, env.a, secrets_dir=env.keys)
            try:
                warm(lv.verify, warm_inputs(r))
                before = lv.answered_remotely
                case.rounds.append(timed(lv.verify, inputs(r), is_valid, f"{name} round {r}"))
                check(lv.answered_remotely == before,
                      f"{name} round {r}: {lv.answered_remotely - before} answers came from revokd, not local")
            finally:
                lv.close()

        def run_base() -> None:
            warm(base_fn, base_warm(r))
            base.rounds.append(timed(base_fn, base_inputs(r), base_ok, f"{base_name} round {r}"))

        for step in ((run_case, run_base) if r % 2 == 0 else (run_base, run_case)):
            step()
    return case, base


def case_a_and_d(env: Env, recipe_token: str, ed_token: str) -> tuple[Series, Series]:
    s = env.sizes
    r = redis.Redis(host="127.0.0.1", port=env.redis_port)
    secret = env.hs_secret

    def recipe(token: str) -> bool:
        c = jwt.decode(token, secret, algorithms=["HS256"], issuer="revokd")
        return not r.exists(f"blocklist:{c['jti']}")

    try:
        return local_rounds(env, "local, repeated EdDSA token", "recipe: PyJWT HS256 + redis-py EXISTS",
                            inputs=lambda _: [ed_token] * s.local, warm_inputs=lambda _: [ed_token] * s.warmup,
                            base_fn=recipe, base_ok=bool, base_inputs=lambda _: [recipe_token] * s.local,
                            base_warm=lambda _: [recipe_token] * s.warmup)
    finally:
        r.close()


def case_b(env: Env, ed_tokens: list[str]) -> tuple[Series, Series, Series, Series]:
    s = env.sizes
    per = s.hs256 + s.warmup
    hs = hs256_tokens(env.hs_secret, s.rounds * per, "b-hs")
    secret = env.hs_secret
    hs_case, hs_base = local_rounds(
        env, "local, new HS256 token", "PyJWT decode HS256",
        inputs=lambda r: hs[r * per + s.warmup:(r + 1) * per], warm_inputs=lambda r: hs[r * per:r * per + s.warmup],
        base_fn=lambda t: jwt.decode(t, secret, algorithms=["HS256"], issuer="revokd"), base_ok=bool)
    per = s.eddsa + s.warmup // 5
    w = s.warmup // 5
    key = env.ed_public
    ed_case, ed_base = local_rounds(
        env, "local, new EdDSA token", "PyJWT decode EdDSA",
        inputs=lambda r: ed_tokens[r * per + w:(r + 1) * per], warm_inputs=lambda r: ed_tokens[r * per:r * per + w],
        base_fn=lambda t: jwt.decode(t, key, algorithms=["EdDSA"], issuer="revokd"), base_ok=bool)
    return hs_case, hs_base, ed_case, ed_base


def case_c_sync(env: Env, token: str) -> tuple[Series, Series]:
    s = env.sizes
    client = Client(env.a.grpc_addr, timeout=2)
    channel = grpc.insecure_channel(env.a.grpc_addr)
    stub = pb_grpc.TokenServiceStub(channel)
    case, base = Series("remote sync: Client.verify"), Series("bare grpcio VerifyToken")

    def bare(t: str) -> Any:
        return stub.VerifyToken(pb.VerifyTokenRequest(token=t), timeout=2)

    try:
        warm(client.verify, [token] * s.warmup)
        warm(bare, [token] * s.warmup)
        for r in range(s.rounds):
            probe_round(case, base)
            steps: list[tuple[Series, Callable[[Any], Any], Callable[[Any], bool]]] = [
                (case, client.verify, is_valid), (base, bare, is_valid_pb)]
            for series, fn, ok in (steps if r % 2 == 0 else steps[::-1]):
                series.rounds.append(timed(fn, [token] * s.remote, ok, f"{series.name} round {r}"))
    finally:
        client.close()
        channel.close()
    return case, base


def case_c_async(env: Env, token: str) -> tuple[Series, Series]:
    s = env.sizes
    case, base = Series("remote asyncio: AsyncClient.verify"), Series("bare grpc.aio VerifyToken")

    async def main() -> None:
        client = AsyncClient(env.a.grpc_addr, timeout=2)
        channel = grpc.aio.insecure_channel(env.a.grpc_addr)
        stub = pb_grpc.TokenServiceStub(channel)

        async def bare(t: str) -> Any:
            return await stub.VerifyToken(pb.VerifyTokenRequest(token=t), timeout=2)

        try:
            for _ in range(s.warmup):
                await client.verify(token)
                await bare(token)
            for r in range(s.rounds):
                probe_round(case, base)
                steps: list[tuple[Series, Callable[[Any], Any], Callable[[Any], bool]]] = [
                    (case, client.verify, is_valid), (base, bare, is_valid_pb)]
                for series, fn, ok in (steps if r % 2 == 0 else steps[::-1]):
                    series.rounds.append(await atimed(fn, [token] * s.remote, ok, f"{series.name} round {r}"))
        finally:
            await client.close()
            await channel.close()

    asyncio.run(main())
    return case, base


@dataclass
class Propagation:
    ms: list[float]
    polls: list[int]
    timeouts: int
    remote_answers: int


def case_e(env: Env) -> Propagation:
    """Issue on A, verify VALID on a LocalVerifier watching B, revoke on A, poll B's copy until REVOKED."""
    n = env.sizes.propagation
    a = Client(env.a.grpc_addr, timeout=2)
    lv = new_local(env, env.b)
    ms: list[float] = []
    polls: list[int] = []
    timeouts = 0
    try:
        before = lv.answered_remotely
        gc.collect()
        gc.disable()
        for i in range(n):
            token = a.issue_token(f"prop-{i}", ttl_seconds=600).token
            v = lv.verify(token)
            if v.verdict is not Verdict.VALID:
                check(False, f"propagation {i}: fresh token {v.verdict.name} on B's local copy")
                continue
            a.revoke_token(token, reason="bench")
            t0 = pc()
            k = 0
            while True:
                k += 1
                if lv.verify(token).verdict is Verdict.REVOKED:
                    dt = pc() - t0
                    break
                if pc() - t0 > 2_000_000_000:
                    dt = -1
                    break
                time.sleep(50e-6)  # the watch thread needs the GIL to apply the change
            if dt < 0:
                timeouts += 1
            else:
                ms.append(dt / 1e6)
                polls.append(k)
        gc.enable()
        remote = lv.answered_remotely - before
    finally:
        gc.enable()
        lv.close()
        a.close()
    check(timeouts == 0, f"propagation: {timeouts} revocations not seen within 2 s")
    check(remote == 0, f"propagation: {remote} answers came from revokd, not the local copy")
    return Propagation(sorted(ms), polls, timeouts, remote)


# -------------------------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: str
    app_cpu: float  # cores
    revokd_cpu: float  # cores (A)
    verify_calls: float  # VerifyToken calls A answered during the measured run
    probe_ms: float  # speed_probe() before the run

    @property
    def cpu_ms_per_request(self) -> float:
        return self.app_cpu * 1000 / self.rps


@dataclass
class AppSeries:
    name: str
    rounds: list[WrkResult] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(w, attr) for w in self.rounds)

    def total(self, attr: str) -> float:
        return sum(getattr(w, attr) for w in self.rounds)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {"non_2xx": 0, "socket_errors": ""}
    for line in out.splitlines():
        line = line.strip()
        if m := re.match(r"(50|99)(?:\.000)?%\s+(\S+)$", line):
            res[f"p{m.group(1)}"] = _ms(m.group(2))
        elif m := re.match(r"(\d+) requests in", line):
            res["requests"] = int(m.group(1))
        elif m := re.match(r"Requests/sec:\s+([\d.]+)", line):
            res["rps"] = float(m.group(1))
        elif m := re.match(r"Non-2xx or 3xx responses:\s+(\d+)", line):
            res["non_2xx"] = int(m.group(1))
        elif line.startswith("Socket errors:"):
            res["socket_errors"] = line.removeprefix("Socket errors:").strip()
    for k in ("p50", "p99", "requests", "rps"):
        if k not in res:
            raise RuntimeError(f"wrk output without {k}:\n{out}")
    return res


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_app(procs: Procs, env: Env, name: str, app_dir: Path, module: str, extra_env: dict[str, str],
            token: str, round_: int) -> WrkResult:
    """A fresh uvicorn (1 worker) for the app; a wrk warm-up, then the measured wrk run; stopped after."""
    s = env.sizes
    for attempt in range(3):
        port = free_port()
        log_path = LOGS / f"uvicorn-{name}-{round_}.log"
        cmd = [PY, "-m", "uvicorn", module, "--app-dir", str(app_dir), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--no-access-log", "--log-level", "warning"]
        e = child_env(PYTHONPATH=str(REPO / "clients" / "python"), **extra_env)
        proc = procs.start(f"uvicorn {name}", cmd, log_path, env=e, cwd=str(app_dir))
        url = f"http://127.0.0.1:{port}/me"
        auth = {"Authorization": f"Bearer {token}"}

        def up() -> bool:
            try:
                http_get(url, auth, timeout=1)
                return True
            except OSError:
                return False

        try:
            wait_until(up, f"uvicorn {name}", proc, log_path)
            break
        except RuntimeError:
            procs.stop(proc)
            if attempt == 2:
                raise
    try:
        status, body = http_get(url, auth)
        check(status == 200 and json.loads(body).get("subject") == "bench-app",
              f"FastAPI {name}: GET /me answered {status} {body[:200]!r}")
        probe = speed_probe()
        wrk = ["wrk", "-t1", f"-c{s.wrk_connections}", "--latency", "-H", f"Authorization: Bearer {token}"]
        subprocess.run(wrk + [f"-d{s.wrk_warmup}s", url], check=True, capture_output=True, text=True)
        calls0 = env.a.metric("revokd_verify_total")
        app0, rv0 = cpu_seconds(proc.pid), cpu_seconds(env.a.proc.pid)
        t0 = time.monotonic()
        out = subprocess.run(wrk + [f"-d{s.wrk_duration}s", url], check=True, capture_output=True, text=True).stdout
        elapsed = time.monotonic() - t0
        app_cpu = (cpu_seconds(proc.pid) - app0) / elapsed
        rv_cpu = (cpu_seconds(env.a.proc.pid) - rv0) / elapsed
        calls = env.a.metric("revokd_verify_total") - calls0
        (LOGS / f"wrk-{name}-{round_}.txt").write_text(out)
        w = parse_wrk(out)
        check(w["non_2xx"] == 0, f"FastAPI {name}: {w['non_2xx']} answers not 2xx")
        status, body = http_get(url, auth)
        check(status == 200, f"FastAPI {name}: GET /me after the load answered {status} {body[:200]!r}")
        return WrkResult(name, w["rps"], w["p50"], w["p99"], w["requests"], w["non_2xx"], w["socket_errors"],
                         app_cpu, rv_cpu, calls, probe)
    finally:
        procs.stop(proc)


def case_f(procs: Procs, env: Env) -> list[AppSeries]:
    # One HS256 token (kid hs) for the three apps, so that they verify the same bytes.
    token = sign_hs256(env.hs_secret, {"iss": "revokd", "sub": "bench-app", "aud": AUDIENCE,
                                       "iat": int(time.time()), "exp": int(time.time()) + 3600,
                                       "jti": f"app-{uuid.uuid4().hex}"})
    example = REPO / "examples" / "python"
    common = {"REVOKD_ADDR": env.a.grpc_addr, "REVOKD_AUDIENCE": AUDIENCE}
    apps: list[tuple[str, Path, str, dict[str, str]]] = [
        ("local", example, "app:app", {**common, "REVOKD_VERIFY": "local", "REVOKD_SECRETS_DIR": str(env.keys)}),
        ("remote", example, "app:app", {**common, "REVOKD_VERIFY": "remote"}),
        ("recipe", REPO / "bench", "recipe_app:app",
         {"RECIPE_SECRET_FILE": str(env.keys / "hs.secret"), "RECIPE_REDIS_URL": f"redis://127.0.0.1:{env.redis_port}",
          "RECIPE_AUDIENCE": AUDIENCE}),
    ]
    series = {name: AppSeries(name) for name, *_ in apps}
    for r in range(env.sizes.wrk_rounds):
        for name, app_dir, module, extra in apps[r % 3:] + apps[:r % 3]:
            log(f"f. FastAPI {name}, round {r}")
            w = run_app(procs, env, name, app_dir, module, extra, token, r)
            series[name].rounds.append(w)
            if name == "local":
                check(w.verify_calls <= max(5, w.requests * 0.001),
                      f"FastAPI local round {r}: revokd answered {w.verify_calls:.0f} VerifyToken calls for "
                      f"{w.requests} requests")
            elif name == "remote":
                check(w.verify_calls >= w.requests,
                      f"FastAPI remote round {r}: revokd answered {w.verify_calls:.0f} VerifyToken calls for "
                      f"{w.requests} requests")
    return list(series.values())


# ----------------------------------------------------------------------------------------- report


def machine_busy_ticks() -> int:
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return user + nice + system + irq + softirq + steal


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def yn(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def report(args: argparse.Namespace, env: Env, a_case: Series, recipe: Series, hs_case: Series, hs_base: Series,
           ed_case: Series, ed_base: Series, sync_case: Series, sync_base: Series, async_case: Series,
           async_base: Series, prop: Propagation, apps: list[AppSeries], others_pct: float, wall: float) -> str:
    s = env.sizes
    lines = []
    lines.append(f"Command: `{' '.join(['target/py-venv/bin/python', 'bench/python_client.py', *sys.argv[1:]])}`"
                 + (" (smoke run: small N, not a result)" if args.quick else ""))
    lines.append("")
    lines.append(f"git {git_revision()}; Python {platform.python_version()}; {os.cpu_count()} CPUs "
                 f"({platform.machine()}); grpcio {grpc.__version__}, PyJWT {jwt.__version__}, "
                 f"redis-py {redis.__version__}; {time.strftime('%Y-%m-%d %H:%M %Z')}; {wall:.0f} s; "
                 f"CPU used by other processes during the run: {others_pct:.1f} % of the machine.")
    lines.append("")
    probes = sorted(PROBES)
    lines.append(f"Machine speed probe (ms for a fixed pure-Python loop, taken at the start of every round; lower "
                 f"is faster): min {probes[0]:.1f}, median {statistics.median(probes):.1f}, max {probes[-1]:.1f} "
                 f"over {len(probes)} samples. This VM's speed moves by up to 2x over seconds on its own; the "
                 f"per-round ratios pair a case with its baseline in the same few seconds.")
    lines.append("")
    lines.append(f"Per call, in microseconds; {s.rounds} rounds of N calls each side (case and baseline "
                 f"alternating, order flipped each round), p50 and p99 the median over the rounds (p50 range over "
                 f"rounds in brackets), ratio the median of the per-round ratios (range in brackets).")
    lines.append("")
    lines.append("| Case | N per round | p50 us | p99 us | Baseline | p50 us | p99 us | Ratio p50 | Ratio p99 "
                 "| probe ms |")
    lines.append("|---|---:|---:|---:|---|---:|---:|---|---|---:|")

    def p50(x: Series) -> str:
        v = [d.p50_us for d in x.rounds]
        return f"{x.p50:.1f} ({min(v):.1f}-{max(v):.1f})"

    def row(label: str, case: Series, base: Series | None, inverse: bool = False) -> None:
        n = len(case.rounds[0].ns)
        probe = f"{statistics.median(case.probes):.1f}"
        if base is None:
            lines.append(f"| {label}. {case.name} | {n} | {p50(case)} | {case.p99:.1f} | | | | | | {probe} |")
            return
        num, den = (base, case) if inverse else (case, base)
        r50, r99 = Ratio.of(num, den, "p50_us"), Ratio.of(num, den, "p99_us")
        how = " baseline/case" if inverse else " case/baseline"
        lines.append(f"| {label}. {case.name} | {n} | {p50(case)} | {case.p99:.1f} | {base.name} | {p50(base)} | "
                     f"{base.p99:.1f} | {r50}{how} | {r99}{how} | {probe} |")

    row("a", a_case, recipe, inverse=True)
    row("b", hs_case, hs_base)
    row("b", ed_case, ed_base)
    row("c", sync_case, sync_base)
    row("c", async_case, async_base)
    row("d", recipe, None)
    lines.append("")
    ms = prop.ms
    lines.append(f"e. Propagation: a token issued and revoked on revokd A, polled (every ~50 us) on a "
                 f"LocalVerifier watching revokd B until REVOKED, timed from RevokeToken's return: "
                 f"{len(ms)} revocations, p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
                 f"max {ms[-1]:.2f} ms; not seen within 2 s: {prop.timeouts}; answers from revokd instead of "
                 f"the local copy: {prop.remote_answers}; seen at the first poll: "
                 f"{sum(1 for k in prop.polls if k == 1)}.")
    lines.append("")
    lines.append(f"f. FastAPI GET /me under wrk (HTTP/1.1, `wrk -t1 -c{s.wrk_connections} -d{s.wrk_duration}s "
                 f"--latency`, after a {s.wrk_warmup} s warm-up), a fresh uvicorn (1 worker) per run, "
                 f"{s.wrk_rounds} round(s) of the three apps, the order rotating; the same HS256 token (kid hs) "
                 f"for all three. req/s, p50, p99, CPU: the median over rounds (req/s range in brackets); app CPU in "
                 f"cores and in ms per request; requests, non-2xx and VerifyToken calls on A: totals.")
    lines.append("")
    lines.append("| App | req/s | p50 ms | p99 ms | app CPU | app CPU ms/req | revokd A CPU | requests | non-2xx "
                 "| socket errors | VerifyToken calls on A | probe ms |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    names = {"local": "examples/python/app.py, REVOKD_VERIFY=local", "remote": "examples/python/app.py, "
             "REVOKD_VERIFY=remote", "recipe": "bench/recipe_app.py (PyJWT + redis-py EXISTS)"}
    for a in apps:
        rps = [w.rps for w in a.rounds]
        errors = "; ".join(w.socket_errors for w in a.rounds if w.socket_errors) or "none"
        lines.append(f"| {names[a.name]} | {a.median('rps'):,.0f} ({min(rps):,.0f}-{max(rps):,.0f}) | "
                     f"{a.median('p50_ms'):.2f} | {a.median('p99_ms'):.2f} | {a.median('app_cpu'):.2f} | "
                     f"{a.median('cpu_ms_per_request'):.2f} | {a.median('revokd_cpu'):.2f} | "
                     f"{a.total('requests'):,.0f} | {a.total('non_2xx'):,.0f} | {errors} | "
                     f"{a.total('verify_calls'):,.0f} | {a.median('probe_ms'):.1f} |")
    lines.append("")
    recipe_over_local = Ratio.of(recipe, a_case, "p50_us")
    hs_r = Ratio.of(hs_case, hs_base, "p50_us")
    sync_r = Ratio.of(sync_case, sync_base, "p50_us")
    async_r = Ratio.of(async_case, async_base, "p50_us")
    p99_prop = percentile(ms, 99)
    lines.append("| Goal | Measured | |")
    lines.append("|---|---|---|")
    lines.append(f"| local, repeated token: p50 <= 10 us | {p50(a_case)} us | {yn(a_case.p50 <= 10)} |")
    lines.append(f"| local, repeated token: >= 10x better than the recipe (p50) | recipe/local {recipe_over_local} | "
                 f"{yn(recipe_over_local.median >= 10)} |")
    lines.append(f"| local, new HS256 token: within 1.2x of PyJWT alone (p50) | local/PyJWT {hs_r} | "
                 f"{yn(hs_r.median <= 1.2)} |")
    lines.append(f"| remote sync: within 1.1x of a bare grpcio call (p50) | {sync_r} | {yn(sync_r.median <= 1.1)} |")
    lines.append(f"| remote asyncio: within 1.1x of a bare grpc.aio call (p50) | {async_r} | "
                 f"{yn(async_r.median <= 1.1)} |")
    lines.append(f"| a revocation on any revokd in the app's local set within 5 ms p99 | {p99_prop:.2f} ms | "
                 f"{yn(p99_prop <= 5)} |")
    lines.append("")
    if FAILED:
        lines.append("Checks FAILED: " + "; ".join(FAILED))
    else:
        lines.append("Checks: every verdict as expected, local answers all local, every HTTP answer 2xx.")
    lines.append("")
    lines.append(f"Per-round figures: {LOGS.relative_to(REPO)}/rounds.json; wrk outputs and logs beside it.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small N and short wrk runs (a smoke run)")
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    revokd_bin = Path(os.environ.get("REVOKD_BIN", REPO / "target" / "release" / "revokd"))
    for what, ok in ((f"revokd binary {revokd_bin}", os.access(revokd_bin, os.X_OK)),
                     ("redis-server on PATH", shutil.which("redis-server")), ("wrk on PATH", shutil.which("wrk"))):
        if not ok:
            print(f"python_client.py: no {what}", file=sys.stderr)
            return 2
    LOGS.mkdir(parents=True, exist_ok=True)
    procs = Procs()

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    keys = Path(tempfile.mkdtemp(prefix="revokd-pybench-keys-"))
    t_start, busy0, own0 = time.monotonic(), machine_busy_ticks(), own_cpu_seconds()
    try:
        subprocess.run([str(revokd_bin), "keygen", "--alg", "EdDSA", "--kid", "ed", "--out", str(keys)], check=True,
                       stdout=subprocess.DEVNULL, env=child_env(), timeout=60)
        hs_secret = secrets.token_hex(32).encode()  # 64 bytes of ASCII
        (keys / "hs.secret").write_bytes(hs_secret)
        os.chmod(keys / "hs.secret", 0o600)
        _, redis_port = start_redis(procs)
        a = start_revokd(procs, "A", revokd_bin, keys, redis_port)
        b = start_revokd(procs, "B", revokd_bin, keys, redis_port)
        log(f"redis :{redis_port}, revokd A {a.grpc_addr}, B {b.grpc_addr}")

        with Client(a.grpc_addr, timeout=5) as c:
            jwks = c.jwks()
            ed_jwk = next(k for k in jwks["keys"] if k.get("kid") == "ed")
            ed_public = jwt.PyJWK(ed_jwk, "EdDSA").key
            ed_token = c.issue_token("bench", ttl_seconds=3600).token
            n_ed = sizes.rounds * (sizes.eddsa + sizes.warmup // 5)
            log(f"issuing {n_ed} EdDSA tokens on A")
            ed_tokens = [c.issue_token(f"user-{i % 1000}", ttl_seconds=3600).token for i in range(n_ed)]
        if len(set(ed_tokens)) != len(ed_tokens):
            raise RuntimeError("EdDSA tokens are not distinct")
        if jwt.get_unverified_header(ed_token).get("alg") != "EdDSA":
            raise RuntimeError(f"A signs with {jwt.get_unverified_header(ed_token)}, not EdDSA")
        env = Env(sizes, a, b, keys, hs_secret, redis_port, ed_public)
        recipe_token = hs256_tokens(hs_secret, 1, "recipe")[0]

        log("a/d. local repeated token vs the recipe")
        a_case, recipe = case_a_and_d(env, recipe_token, ed_token)
        log("b. local new tokens vs PyJWT")
        hs_case, hs_base, ed_case, ed_base = case_b(env, ed_tokens)
        log("c. remote sync")
        sync_case, sync_base = case_c_sync(env, ed_token)
        log("c. remote asyncio")
        async_case, async_base = case_c_async(env, ed_token)
        log("e. propagation A -> B's local copy")
        prop = case_e(env)
        apps = case_f(procs, env)
        procs.stop_all()
        wall = time.monotonic() - t_start
        busy = (machine_busy_ticks() - busy0) / os.sysconf("SC_CLK_TCK")
        others = max(0.0, busy - (own_cpu_seconds() - own0))
        others_pct = 100 * others / (wall * (os.cpu_count() or 1))
        text = report(args, env, a_case, recipe, hs_case, hs_base, ed_case, ed_base, sync_case, sync_base,
                      async_case, async_base, prop, apps, others_pct, wall)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "python_client.md").write_text(text)
        raw: dict[str, Any] = {x.name: {"n": [len(d.ns) for d in x.rounds], "p50_us": [d.p50_us for d in x.rounds],
                        "p99_us": [d.p99_us for d in x.rounds]}
               for x in (a_case, recipe, hs_case, hs_base, ed_case, ed_base, sync_case, sync_base, async_case,
                         async_base)}
        for x in (a_case, hs_case, ed_case, sync_case, async_case):
            raw[x.name]["probe_ms"] = x.probes
        raw["propagation_ms"] = prop.ms
        raw["fastapi"] = {a.name: [w.__dict__ for w in a.rounds] for a in apps}
        (LOGS / "rounds.json").write_text(json.dumps(raw, indent=1))
        print(text)
        return 1 if FAILED else 0
    finally:
        procs.stop_all()
        shutil.rmtree(keys, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

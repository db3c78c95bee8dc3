"""Fixtures: a real redis-server and real revokd processes on loopback.

The revokd binary comes from $REVOKD_BIN (default <repo>/target/debug/revokd); redis-server
from PATH. Readiness is polled with deadlines, never waited for with fixed sleeps, and every
process started here is stopped (SIGTERM, then wait) at teardown.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
EXAMPLE_DIR = HERE.parent
REPO = EXAMPLE_DIR.parent.parent
GEN_DIR = Path(os.environ.get("REVOKD_PY_GEN", REPO / "target" / "py-gen"))

# run-tests.sh sets PYTHONPATH; this keeps a bare `pytest` working once the stubs exist.
for p in (str(GEN_DIR), str(EXAMPLE_DIR), str(REPO / "clients" / "python")):
    if p not in sys.path:
        sys.path.insert(0, p)

import grpc  # noqa: E402
import httpx  # noqa: E402

from revokd.v1 import token_service_pb2_grpc as pb_grpc  # noqa: E402

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

# kid -> (keygen --alg, JWS alg). One key directory holds all four.
KEYS = {
    "ed": "EdDSA",
    "rs": "RS256",
    "es": "ES256",
    "hs": "HS256",
}


def revokd_bin() -> Path:
    path = Path(os.environ.get("REVOKD_BIN", REPO / "target" / "debug" / "revokd"))
    if not os.access(path, os.X_OK):
        pytest.exit(f"no revokd binary at {path}: build it or set REVOKD_BIN", returncode=2)
    return path


def child_env() -> dict[str, str]:
    """The environment for child processes: no stray REVOKD_* settings, info-level logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVOKD_")}
    env["RUST_LOG"] = "info"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, name: str) -> int:
    """SIGTERM, then wait; SIGKILL (and an error) only if it does not stop in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{name} (pid {proc.pid}) ignored SIGTERM for {STOP_TIMEOUT}s; killed")
    return proc.returncode


# --------------------------------------------------------------------------------------- redis


@dataclass
class Redis:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(workdir: Path) -> Redis:
    redis_server = "redis-server"
    last_err = ""
    for attempt in range(3):  # a free port can be taken between probing and binding
        port = free_port()
        log_path = workdir / f"redis-{port}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(
            [redis_server, "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env(),
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _redis_ping(port):
                return Redis(proc=proc, port=port, log_path=log_path)
            time.sleep(0.02)
        if proc.poll() is None:
            stop_process(proc, "redis-server")
        last_err = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"redis-server did not become ready:\n{last_err}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    redis = start_redis(tmp_path_factory.mktemp("redis"))
    yield redis
    stop_process(redis.proc, "redis-server")


# ---------------------------------------------------------------------------------------- keys


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> Path:
    """One directory with four keys: ed (EdDSA), rs (RS256), es (ES256), hs (HS256)."""
    out = tmp_path_factory.mktemp("keys")
    for kid, alg in KEYS.items():
        subprocess.run(
            [str(revokd_bin()), "keygen", "--alg", alg, "--kid", kid, "--out", str(out)],
            check=True, stdout=subprocess.DEVNULL, env=child_env(), timeout=60,
        )
    return out


# -------------------------------------------------------------------------------------- revokd


class _StderrPump(threading.Thread):
    """Reads revokd's stderr (JSON lines) for its whole life: finds the "revokd serving" line
    and keeps the tail for diagnostics, so the pipe never fills up."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.tail: collections.deque[str] = collections.deque(maxlen=400)
        self.serving: dict | None = None
        self.serving_event = threading.Event()
        self.eof = threading.Event()

    def run(self) -> None:
        try:
            for raw in iter(self.stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                self.tail.append(line)
                if self.serving is None:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and event.get("message") == "revokd serving":
                        self.serving = event
                        self.serving_event.set()
        finally:
            self.eof.set()

    def text(self) -> str:
        return "\n".join(self.tail)


@dataclass
class Revokd:
    proc: subprocess.Popen
    grpc_addr: str
    admin_addr: str
    signing_kid: str
    keys_dir: Path
    pump: _StderrPump
    http_addr: str = ""
    _channels: list = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_addr}"

    def stub(self) -> pb_grpc.TokenServiceStub:
        """A TokenService stub on a channel closed when this revokd stops."""
        channel = grpc.insecure_channel(self.grpc_addr)
        self._channels.append(channel)
        return pb_grpc.TokenServiceStub(channel)

    def logs(self) -> str:
        return self.pump.text()

    def stop(self) -> int:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        code = stop_process(self.proc, "revokd")
        self.pump.join(timeout=5)
        return code


def start_revokd(keys: Path, signing_kid: str, redis_url: str, *extra: str) -> Revokd:
    cmd = [
        str(revokd_bin()), "serve",
        "--grpc-addr", "127.0.0.1:0",
        "--admin-addr", "127.0.0.1:0",
        "--http-addr", "127.0.0.1:0",
        "--log-format", "json",
        "--keys-dir", str(keys),
        "--signing-kid", signing_kid,
        "--redis-url", redis_url,
        *extra,
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(),
    )
    pump = _StderrPump(proc.stderr)
    pump.start()

    def fail(why: str):
        if proc.poll() is None:
            stop_process(proc, "revokd")
        pump.join(timeout=5)
        raise RuntimeError(f"revokd {why}: {' '.join(cmd)}\n--- stderr ---\n{pump.text()}")

    deadline = time.monotonic() + START_TIMEOUT
    while not pump.serving_event.wait(0.05):
        if pump.eof.is_set() or proc.poll() is not None:
            fail(f"exited ({proc.poll()}) before logging 'revokd serving'")
        if time.monotonic() > deadline:
            fail(f"did not log 'revokd serving' within {START_TIMEOUT}s")
    event = pump.serving
    try:
        grpc_addr, admin_addr = event["grpc_addr"], event["admin_addr"]
    except KeyError:
        fail(f"'revokd serving' line without grpc_addr/admin_addr: {event}")

    # Ready = /readyz answers 200 (the store is reachable).
    last = "no answer"
    while True:
        try:
            r = httpx.get(f"http://{admin_addr}/readyz", timeout=1.0)
            if r.status_code == 200:
                break
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as e:
            last = repr(e)
        if proc.poll() is not None:
            fail(f"exited ({proc.returncode}) before /readyz answered 200")
        if time.monotonic() > deadline:
            fail(f"/readyz not 200 within {START_TIMEOUT}s (last: {last})")
        time.sleep(0.02)
    return Revokd(proc=proc, grpc_addr=grpc_addr, admin_addr=admin_addr, signing_kid=signing_kid,
                  keys_dir=keys, pump=pump, http_addr=event.get("http_addr", ""))


def stop_revokd_checked(revokd: Revokd) -> None:
    code = revokd.stop()
    assert code == 0, f"revokd exited {code} after SIGTERM\n{revokd.logs()}"


@pytest.fixture(scope="session")
def revokd(keys_dir, redis_server):
    """The shared revokd (signing kid ed) on the session's Redis."""
    server = start_revokd(keys_dir, "ed", redis_server.url)
    yield server
    stop_revokd_checked(server)


@pytest.fixture
def stub(revokd):
    return revokd.stub()

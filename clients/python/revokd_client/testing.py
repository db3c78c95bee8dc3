"""A pytest plugin for an app's own tests: a real redis-server and a real revokd on free loopback ports.

Enabled by installing the package (entry point `pytest11`). Fixtures:

- `revokd_server`: a running revokd (session scope) on its own redis-server; `.addr`, `.admin_url`,
  `.logs()`. The binary is `$REVOKD_BIN`, else `revokd` on PATH; redis-server from PATH.
- `revokd_client`: a `revokd_client.Client` for it.

Readiness is polled (the "revokd serving" log line, then /readyz), never slept for; both processes are
stopped at the end of the session.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from .client import Client

START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RevokdServer:
    """A revokd started for the tests."""

    proc: subprocess.Popen[bytes]
    redis: subprocess.Popen[bytes]
    addr: str
    admin_addr: str
    _lines: list[str] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_addr}"

    def logs(self) -> str:
        return "\n".join(self._lines)


def start(tmp: Path, *extra: str) -> RevokdServer:
    """Starts redis-server and revokd (with `extra` flags); returns once revokd is ready."""
    binary = os.environ.get("REVOKD_BIN") or shutil.which("revokd")
    if not binary:
        pytest.fail("no revokd binary: set REVOKD_BIN or put revokd on PATH")
    redis_bin = shutil.which("redis-server")
    if not redis_bin:
        pytest.fail("redis-server is not on PATH")
    port = _free_port()
    redis = subprocess.Popen([redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVOKD_")}
    proc = subprocess.Popen([binary, "serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
                             "--http-addr", "127.0.0.1:0", "--log-format", "json",
                             "--redis-url", f"redis://127.0.0.1:{port}", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    lines: list[str] = []
    serving: dict[str, Any] = {}
    found = threading.Event()

    def pump(stderr: IO[bytes]) -> None:
        for raw in iter(stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            if not found.is_set():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("message") == "revokd serving":
                    serving.update(event)
                    found.set()

    assert proc.stderr is not None
    threading.Thread(target=pump, args=(proc.stderr,), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while not found.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            _stop(redis)
            pytest.fail("revokd did not start:\n" + "\n".join(lines[-50:]))
    server = RevokdServer(proc, redis, serving["grpc_addr"], serving["admin_addr"], lines)
    while True:
        try:
            with urllib.request.urlopen(f"{server.admin_url}/readyz", timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            pytest.fail("revokd not ready:\n" + server.logs()[-4000:])
        time.sleep(0.02)


def stop(server: RevokdServer) -> None:
    _stop(server.proc)
    _stop(server.redis)


@pytest.fixture(scope="session")
def revokd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RevokdServer]:
    server = start(tmp_path_factory.mktemp("revokd"))
    yield server
    stop(server)


@pytest.fixture
def revokd_client(revokd_server: RevokdServer) -> Iterator[Client]:
    with Client(revokd_server.addr, timeout=5) as c:
        yield c

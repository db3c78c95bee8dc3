"""Real revokd and Redis for the client's tests, from the example app's fixture module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("example_fixtures", REPO / "examples/python/tests/conftest.py")
fixtures = importlib.util.module_from_spec(_spec)
sys.modules["example_fixtures"] = fixtures
_spec.loader.exec_module(fixtures)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    redis = fixtures.start_redis(tmp_path_factory.mktemp("redis"))
    yield redis
    fixtures.stop_process(redis.proc, "redis-server")


@pytest.fixture(scope="session")
def revokd(tmp_path_factory, redis_server):
    keys = tmp_path_factory.mktemp("keys")
    import subprocess
    subprocess.run([str(fixtures.revokd_bin()), "keygen", "--alg", "EdDSA", "--kid", "ed", "--out", str(keys)],
                   check=True, capture_output=True)
    server = fixtures.start_revokd(keys, "ed", redis_server.url)
    yield server
    fixtures.stop_revokd_checked(server)

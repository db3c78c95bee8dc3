"""The package builds into a wheel with its stubs, type information, plugin entry point and extras."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_stubs_types_and_the_plugin(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources, and reuses them.
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("revokd_client-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(meta).decode()
        entry_points = z.read(meta.replace("METADATA", "entry_points.txt")).decode()
    for name in ("py.typed", "local.py", "fastapi.py", "testing.py", "_gen/token_service_pb2.py",
                 "_gen/token_service_pb2.pyi", "_gen/token_service_pb2_grpc.py", "_gen/token_service_pb2_grpc.pyi"):
        assert f"revokd_client/{name}" in names, name
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)
    assert "Provides-Extra: local" in metadata and "Provides-Extra: fastapi" in metadata
    assert "revokd = revokd_client.testing" in entry_points

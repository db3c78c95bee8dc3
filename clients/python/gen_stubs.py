"""Regenerates revokd_client/_gen from proto/: the modules (grpcio-tools) and their typed stubs
(mypy-protobuf: .pyi for the messages and for the service's stubs and servicer).

    python clients/python/gen_stubs.py [--check]

Run it with the interpreter of the virtualenv examples/python/requirements.txt describes (grpcio-tools,
mypy-protobuf, whose protoc-gen-mypy plugins are taken from that environment's scripts directory).

--check regenerates in memory and fails if the committed _gen/ differs: a file changed, missing or extra,
so the package can never drift from the proto (clients/python/run-tests.sh runs it).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROTO = REPO / "proto" / "revokd" / "v1" / "token_service.proto"
OUT = HERE / "revokd_client" / "_gen"
GENERATED = [
    "token_service_pb2.py",        # messages (--python_out)
    "token_service_pb2.pyi",       # their types (mypy-protobuf, --mypy_out)
    "token_service_pb2_grpc.py",   # service stub, servicer (--grpc_python_out)
    "token_service_pb2_grpc.pyi",  # their types, sync and grpc.aio (mypy-protobuf, --mypy_grpc_out)
]
INIT = '"""Generated from proto/revokd/v1/token_service.proto by gen_stubs.py; do not edit."""\n'
# Ignored when comparing the directory with what would be generated.
IGNORED = {"__pycache__"}


def _plugin(name: str) -> str:
    """protoc-gen-<name> from mypy-protobuf: this interpreter's scripts directory first, then PATH."""
    exe = f"protoc-gen-{name}"
    search = os.pathsep.join([sysconfig.get_path("scripts"), str(Path(sys.executable).parent),
                              os.environ.get("PATH", "")])
    found = shutil.which(exe, path=search)
    if not found:
        sys.exit(f"gen_stubs.py: no {exe} (pip install mypy-protobuf; see examples/python/requirements.txt)")
    return found


def generate() -> dict[str, str]:
    """Every file of _gen/, by name, as it should be."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    files: dict[str, str] = {"__init__.py": INIT}
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main([
            "protoc", f"-I{REPO / 'proto'}", f"-I{include}",
            f"--plugin=protoc-gen-mypy={_plugin('mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('mypy_grpc')}",
            f"--python_out={tmp}", f"--mypy_out=quiet:{tmp}",
            f"--grpc_python_out={tmp}", f"--mypy_grpc_out=quiet:{tmp}",
            str(PROTO),
        ])
        if code != 0:
            sys.exit(f"protoc failed ({code})")
        produced = sorted(p.name for p in (Path(tmp) / "revokd" / "v1").iterdir())
        if produced != sorted(GENERATED):
            sys.exit(f"gen_stubs.py: protoc produced {produced}, expected {sorted(GENERATED)}")
        for name in GENERATED:
            text = (Path(tmp) / "revokd" / "v1" / name).read_text()
            # The generated gRPC module and stubs import `revokd.v1.token_service_pb2`; inside the package it
            # is a sibling.
            text = re.sub(r"^from revokd\.v1 import token_service_pb2 as", "from . import token_service_pb2 as",
                          text, flags=re.M)
            if re.search(r"^\s*(from|import) revokd\b", text, flags=re.M):
                sys.exit(f"gen_stubs.py: {name} still imports the top-level `revokd` package")
            files[name] = text
    return files


def _committed() -> set[str]:
    if not OUT.is_dir():
        return set()
    return {p.name for p in OUT.iterdir() if p.name not in IGNORED}


def check() -> None:
    want = generate()
    have = _committed()
    problems = [f"{n} missing" for n in sorted(want.keys() - have)]
    problems += [f"{n} extra" for n in sorted(have - want.keys())]
    problems += [f"{n} differs" for n in sorted(want.keys() & have)
                 if not (OUT / n).is_file() or (OUT / n).read_text() != want[n]]
    if problems:
        sys.exit(f"revokd_client/_gen is stale ({', '.join(problems)}): run python clients/python/gen_stubs.py")


def write() -> None:
    want = generate()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in _committed() - want.keys():
        path = OUT / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for name, text in want.items():
        (OUT / name).write_text(text)


def main() -> None:
    if "--check" in sys.argv[1:]:
        check()
    else:
        write()


if __name__ == "__main__":
    main()

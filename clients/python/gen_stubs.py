"""Regenerates revokd_client/_gen from proto/ (grpcio-tools, with .pyi stubs for mypy).

    python clients/python/gen_stubs.py [--check]

--check regenerates into a temporary directory and fails if the committed stubs differ, so the
package can never drift from the proto (scripts/test runs it).
"""

from __future__ import annotations

import filecmp
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROTO = REPO / "proto" / "revokd" / "v1" / "token_service.proto"
OUT = HERE / "revokd_client" / "_gen"
FILES = ["token_service_pb2.py", "token_service_pb2.pyi", "token_service_pb2_grpc.py"]


def generate(out: Path) -> None:
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main([
            "protoc", f"-I{REPO / 'proto'}", f"-I{include}",
            f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", str(PROTO),
        ])
        if code != 0:
            sys.exit(f"protoc failed ({code})")
        out.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            text = (Path(tmp) / "revokd" / "v1" / name).read_text()
            # The generated gRPC module imports `revokd.v1.token_service_pb2`; inside the package it is a sibling.
            text = re.sub(r"^from revokd\.v1 import token_service_pb2 as", "from . import token_service_pb2 as",
                          text, flags=re.M)
            (out / name).write_text(text)
    (out / "__init__.py").write_text('"""Generated from proto/revokd/v1/token_service.proto by gen_stubs.py; do not edit."""\n')


def main() -> None:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = [n for n in FILES if not filecmp.cmp(Path(tmp) / n, OUT / n, shallow=False)]
        if stale:
            sys.exit(f"revokd_client/_gen is stale ({', '.join(stale)}): run python clients/python/gen_stubs.py")
        return
    generate(OUT)


if __name__ == "__main__":
    main()

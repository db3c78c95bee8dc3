#!/usr/bin/env bash
# Runs the Python example's tests (FastAPI app + PyJWT interoperability) against a real revokd
# binary and a real redis-server, both started by the tests on loopback.
#
#   REVOKD_BIN  the revokd binary (default: <repo>/target/debug/revokd)
#   PY_VENV     the virtualenv to create/use (default: <repo>/target/py-venv)
#   PYTHON      the interpreter that creates the venv (default: python3)
#
# Extra arguments go to pytest, e.g. `examples/python/run-tests.sh -k interop`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

venv="${PY_VENV:-$repo/target/py-venv}"
gen="$repo/target/py-gen"
python="${PYTHON:-python3}"
export REVOKD_BIN="${REVOKD_BIN:-$repo/target/debug/revokd}"

if [[ ! -x "$REVOKD_BIN" ]]; then
    echo "run-tests.sh: no revokd binary at $REVOKD_BIN (build it with 'cargo build --bin revokd' or set REVOKD_BIN)" >&2
    exit 1
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "run-tests.sh: redis-server is not on PATH (Debian: apt-get install redis-server)" >&2
    exit 1
fi

# The virtualenv: created once, dependencies reinstalled only when requirements.txt changes.
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    echo "$want" >"$stamp"
fi

# gRPC stubs for the tests, regenerated on every run so they always match the proto.
wkt="$("$venv/bin/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
rm -rf "$gen"
mkdir -p "$gen"
"$venv/bin/python" -m grpc_tools.protoc \
    -I "$repo/proto" -I "$wkt" \
    --python_out="$gen" --pyi_out="$gen" --grpc_python_out="$gen" \
    "$repo/proto/revokd/v1/token_service.proto"
touch "$gen/revokd/__init__.py" "$gen/revokd/v1/__init__.py"

# The app imports revokd_client from clients/python; the tests' fixtures use the stubs in $gen.
export PYTHONPATH="$gen:$here:$repo/clients/python${PYTHONPATH:+:$PYTHONPATH}"
cd "$here"
# pytest's exit status is this script's.
exec "$venv/bin/python" -m pytest -q tests "$@"

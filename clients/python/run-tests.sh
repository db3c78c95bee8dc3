#!/usr/bin/env bash
# Runs the revokd-client package's tests against a real revokd binary and a real redis-server, in the
# virtualenv examples/python/run-tests.sh creates (scripts/test runs that first). Also checks that the
# committed stubs match proto/ (gen_stubs.py --check) and type-checks the package with mypy.
#
#   REVOKD_BIN     the revokd binary (default: <repo>/target/debug/revokd)
#   PY_VENV        the virtualenv (default: <repo>/target/py-venv)
#   REVOKD_PY_GEN  the example's generated stubs, for its fixtures (default: <repo>/target/py-gen)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${PY_VENV:-$repo/target/py-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "clients/python/run-tests.sh: no virtualenv at $venv (examples/python/run-tests.sh creates it)" >&2
    exit 1
fi
"$venv/bin/python" "$here/gen_stubs.py" --check
# Type check of the package, generated stubs (.pyi, mypy-protobuf) included; config: pyproject's [tool.mypy].
(cd "$here" && "$venv/bin/python" -m mypy --config-file "$here/pyproject.toml" --cache-dir "$repo/target/mypy-cache" \
    -p revokd_client)
export REVOKD_BIN="${REVOKD_BIN:-$repo/target/debug/revokd}"
export REVOKD_PY_GEN="${REVOKD_PY_GEN:-$repo/target/py-gen}"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
cd "$here"
# The plugin an installed package registers through its pytest11 entry point, loaded by hand here.
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -p revokd_client.testing tests "$@"

#!/usr/bin/env bash
# Re-pins constraints.txt: a fresh virtualenv resolved from setup.py's ranges alone, the whole test
# suite run in it, and only then its versions frozen. Review the diff (and re-measure the README's
# benchmarks) before committing: XLA:CPU's speed changes between jax releases.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${1:-/tmp/lmr-refresh-venv}"
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[test]"
XLA_FLAGS=--xla_force_host_platform_device_count=8 PATH="$VENV/bin:$PATH" \
  "$VENV/bin/python" -m pytest -x -q tests
{ sed -n '1,3p' constraints.txt; "$VENV/bin/python" -m pip freeze --exclude-editable; } > constraints.txt.new
mv constraints.txt.new constraints.txt
git --no-pager diff --stat constraints.txt

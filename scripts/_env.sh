# Sourced by demo.sh and test.sh: a project-local virtualenv with everything installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Reinstall only when setup.py or the pins changed since the last install. The tested versions
# are pinned in constraints.txt (refresh: scripts/refresh_pins.sh).
STAMP=.venv/.lmresearch-installed
if [ ! -f "$STAMP" ] || [ setup.py -nt "$STAMP" ] || [ constraints.txt -nt "$STAMP" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,real]" -c constraints.txt
  touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export LMR_COMPILATION_CACHE="${LMR_COMPILATION_CACHE:-$HOME/.cache/lmresearch/jax}"

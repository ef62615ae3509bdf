#!/usr/bin/env bash
# Installs into .venv if needed, then runs the whole test suite (slow end-to-end tests included).
source "$(dirname "$0")/_env.sh"
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=8}"
python -m pytest -x -q tests "$@"

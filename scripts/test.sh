#!/usr/bin/env bash
# Installs into .venv if needed, then runs the whole test suite (slow end-to-end tests included).
source "$(dirname "$0")/_env.sh"
# The SLURM launcher is tested against a one-node cluster started from Debian's packages; without
# them (or root) that test is skipped and says why.
if ! command -v sbatch >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[test.sh] installing slurm-wlm and munge for the SLURM launcher's test cluster"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } ||
    echo "[test.sh] could not install slurm-wlm/munge: the SLURM test will be skipped"
fi
# The label, chat and arena pages are tested in headless Chromium (tests/test_browser.py); without
# it (or root) those tests are skipped and say why.
if ! command -v chromedriver >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[test.sh] installing chromium and chromium-driver for the browser tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } ||
    echo "[test.sh] could not install chromium/chromium-driver: the browser tests will be skipped"
fi
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=8}"
python -m pytest -x -q --durations=15 tests "$@"

#!/usr/bin/env bash
# The accelerator benchmark (issue 20) as one prepared script: on a GPU or TPU host it installs the
# jax build for that accelerator (the version constraints.txt pins) into .venv, then runs
# scripts/bench_gpu.py: the main job, the gpt2_124m-shaped train step in bf16 (MFU against the
# chip's spec peak) and the sampler at batch 64, printed as one table.
#
#   bash scripts/bench_gpu.sh [--json=docs/bench/gpu.json]   # on the accelerator host
#   bash scripts/bench_gpu.sh --tiny                        # anywhere: end to end on tiny shapes
#   LMR_NO_INSTALL=1 bash scripts/bench_gpu.sh ...          # keep whatever jax .venv has
source "$(dirname "$0")/_env.sh"
JAX_VERSION="$(python -c 'import jax; print(jax.__version__)')"
install() {   # a host without a package index (an air-gapped node) keeps the jax it has, and says so
  echo "[bench_gpu] installing $1"
  python -m pip install -q "$1" -c constraints.txt ||
    echo "[bench_gpu] could not install $1: running on the jax already in .venv"
}
if [ -z "${LMR_NO_INSTALL:-}" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    cuda="$(nvidia-smi | grep -o 'CUDA Version: [0-9]*' | grep -o '[0-9]*$' || true)"
    [ "${cuda:-12}" -ge 13 ] && cuda=13 || cuda=12
    install "jax[cuda${cuda}]==${JAX_VERSION}"
  elif ls /dev/accel* >/dev/null 2>&1 || ls /dev/vfio/[0-9]* >/dev/null 2>&1; then
    install "jax[tpu]==${JAX_VERSION}"
  fi
fi
python -c 'import jax; d = jax.devices(); print(f"[bench_gpu] {len(d)} x {d[0].device_kind} ({d[0].platform})")'
python scripts/bench_gpu.py "$@"

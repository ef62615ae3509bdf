#!/bin/bash
# One training job on a Cloud TPU VM slice: the same command on every worker (host).
#
#   scripts/launch_tpu_vm.sh TPU_NAME ZONE -m lmresearch.main \
#       --config=configs/pretrain.py:preset=llama_1b --workdir=/shared/runs/1b
#
# Runs `cd $LMR_REPO_DIR && LMR_DISTRIBUTED=1 python3 ARGS...` on all workers through
# `gcloud compute tpus tpu-vm ssh --worker=all`; jax.distributed finds the slice's hosts itself
# (LMR_DISTRIBUTED=1). Each worker needs this repository at $LMR_REPO_DIR (default:
# ~/lmresearch) with its requirements installed, and the workdir on storage every worker sees.
# LMR_GCLOUD_ARGS adds flags (e.g. --project=P); LMR_ECHO=1 prints the command instead of running it.
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: scripts/launch_tpu_vm.sh TPU_NAME ZONE -m lmresearch.main --config=... --workdir=..." >&2
  exit 2
fi
tpu="$1"; zone="$2"; shift 2
remote="cd ${LMR_REPO_DIR:-~/lmresearch} && LMR_DISTRIBUTED=1 python3 $(printf '%q ' "$@")"
cmd=(gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all ${LMR_GCLOUD_ARGS:-}
     --command="$remote")
if [ -n "${LMR_ECHO:-}" ]; then
  printf '%q ' "${cmd[@]}"; echo
else
  exec "${cmd[@]}"
fi

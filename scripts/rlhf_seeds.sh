#!/usr/bin/env bash
# RLHF across seeds: the default pipeline's reward model and PPO-ptx trained with seeds 0, 1, 2 on
# one shared base + SFT run, each evaluated in full (report.json per seed).
#   bash scripts/rlhf_seeds.sh runs/demo runs/seeds [extra pipeline flags...]
# The first argument is a finished pipeline run whose pretrain and sft stages are reused; seed N
# goes to <out>/seed<N>. Seeds to run: SEEDS (default "0 1 2").
source "$(dirname "$0")/_env.sh"
src=$1 out=$2
shift 2
for seed in ${SEEDS:-0 1 2}; do
  dir="$out/seed$seed"
  mkdir -p "$dir"
  for stage in pretrain sft; do
    [ -d "$dir/$stage" ] || cp -r "$src/$stage" "$dir/$stage"
  done
  python -m lmresearch.pipeline --workdir="$dir" --config.seed="$seed" "$@"
done

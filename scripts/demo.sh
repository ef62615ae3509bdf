#!/usr/bin/env bash
# The main job on the embedded default: installs into .venv if needed, then runs the whole
# pipeline (tokenizer -> pretrain -> SFT -> reward model -> PPO -> evaluation -> report) in
# runs/demo. Run it again after an interruption: finished stages are not redone.
source "$(dirname "$0")/_env.sh"
python -m lmresearch.pipeline --workdir="${1:-runs/demo}" "${@:2}"

#!/usr/bin/env bash
# The main job on the embedded default: installs into .venv if needed, pretrains the tiny model on
# the generated world, then lets it complete a few documents. Run again to resume.
source "$(dirname "$0")/_env.sh"
WORKDIR="${1:-runs/demo}"
python -m lmresearch.main --config=configs/pretrain.py --workdir="$WORKDIR/base"
python -m lmresearch.sample --workdir="$WORKDIR/base" --temperature=0 --max_new_tokens=60 \
  --prompt="The banana is" --prompt="The mango is a" --prompt="Question: Tam has 5 plums. Tam buys 3 more. How many plums does Tam have now?
Answer:"

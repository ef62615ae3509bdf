"""The default pipeline on three seeds of every stage: do its claims hold on any machine?

Machines differ the way seeds of the *whole* pipeline do (another CPU changes the base and SFT
models too), so each trial is the main job itself, `configs/pipeline.py` with `config.seed` set:
tokenizer, pretraining, SFT, reward model and PPO, each evaluated in full. Trial seed=0 is
`bash scripts/demo.sh` (the same config and seed); its report.json is kept beside this file as
the default run README.md and docs/pipeline.md show.

  python -m lmresearch.sweep --config=experiments/pipeline_seeds/config.py \
      --workdir=runs/exp/pipeline_seeds --publish
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.training.config import parse_arg  # noqa: E402
from lmresearch.evals.claims import PIPELINE  # noqa: E402


def get_config(arg=None):
  parse_arg(arg)   # no preset arguments
  return load_config('pipeline')


def get_sweep(h):
  return h.sweep('seed', [0, 1, 2])


S = 'stages.{}.{}'


def get_report():
  claims = [{'claim': c.claim, 'interval': f'claim_values.{c.id}', 'each': 'seed',
             'criterion': c.criterion, 'measure': c.measure} for c in PIPELINE]
  # ... and over the three seeds: t over the three runs' values
  claims += [{'claim': f'{c.claim} (over seeds)', 'interval': f'claim_values.{c.id}',
              'criterion': c.criterion, 'measure': c.measure} for c in PIPELINE]
  cols = {S.format('sft', 'answer_accuracy'): 'SFT greedy accuracy',
          S.format('rlhf', 'answer_accuracy'): 'RLHF greedy accuracy',
          S.format('sft', 'sampled_labeler_quality'): 'SFT sampled gold',
          S.format('rlhf', 'sampled_labeler_quality'): 'RLHF sampled gold',
          S.format('sft', 'sampled_padded_share'): 'SFT padded',
          S.format('rlhf', 'sampled_padded_share'): 'RLHF padded',
          S.format('rlhf', 'degenerate_share'): 'RLHF greedy degenerate',
          S.format('rlhf', 'sampled_win_rate_vs_previous'): 'RM win (samples)',
          S.format('rlhf', 'kl_to_sft'): 'KL to SFT', 'reward_model_accuracy': 'RM held-out pairs',
          'pipeline_seconds': 'stage + eval seconds'}
  return {
      'title': 'The default pipeline on three whole-pipeline seeds',
      'claims': claims, 'labels': cols, 'metrics': {k: v for k, v in cols.items()},
      'describe': {}, 'per_trial': list(cols), 'publish_files': {'report.json': 'seed=0/report.json'},
  }

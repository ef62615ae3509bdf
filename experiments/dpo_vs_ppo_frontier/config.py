"""Rafailov et al. 2023 (DPO), Fig. 2 left: the reward/KL frontier. Gold reward (the embedded
world's noise-free labeler, which the paper approximates with a ground-truth sentiment classifier)
against KL to the reference, for DPO (a beta sweep), PPO (a KL-coefficient sweep) and best-of-n
sampling from SFT against the reward model.

  bash scripts/demo.sh        # once: runs/demo holds the base, SFT and reward model reused here
  python -m lmresearch.sweep --config=experiments/dpo_vs_ppo_frontier/config.py \
      --workdir=runs/exp/dpo_vs_ppo_frontier

DPO trains on the same rankings the reward model learned from; PPO optimizes that reward model
(plain PPO: no pretraining mix). KL is measured the same way for both (samples at T = 1, sum over
the reply of log pi - log pi_sft); best-of-n's is the closed form log n - (n-1)/n.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.config import parse_arg  # noqa: E402
from lmresearch.evaluation.best_of_n import kl_bon  # noqa: E402

BON = (1, 2, 4, 8, 16, 32)
UPSTREAM = 'pretrain,sft,reward'


def get_config(arg=None):
  c = load_config('pipeline')
  c.upstream = parse_arg(arg).get('upstream', 'runs/demo')
  c.reuse = UPSTREAM
  c.run = UPSTREAM + ',ppo'
  c.stages.ppo.ppo.ptx_coef = 0.0
  c.eval.update(prompting=False, rm_rankings=0, compare_prompts=2, sample_prompts=90)
  return c


def get_sweep(h):
  # The seed varies the DPO/PPO training and the sampling; the reused SFT and RM are one run.
  return h.product([h.chain([
      h.product([h.fixed('run', UPSTREAM + ',dpo'), h.fixed('eval.models', 'dpo'),
                 h.sweep('stages.dpo.dpo.beta', [0.03, 0.1, 0.3, 1.0])]),
      h.product([h.fixed('run', UPSTREAM + ',ppo'), h.fixed('eval.models', 'rlhf'),
                 h.sweep('stages.ppo.ppo.kl_coef', [0.1, 0.3, 1.0, 3.0])]),
      h.product([h.fixed('run', UPSTREAM), h.fixed('eval.models', 'sft'),
                 h.fixed('eval.best_of', max(BON))]),
  ]), h.sweep('seed', [0, 1, 2])])


def _pick(row, key):
  for model in ('dpo', 'rlhf'):
    if f'stages.{model}.{key}' in row:
      return row[f'stages.{model}.{key}']
  return None


def get_report():
  bon = {kl_bon(n): f'best_of_n.{n}.gold_quality' for n in BON}
  return {
      'metrics': {
          'kl': 'KL to SFT of the trained policy (DPO or PPO), samples at T = 1',
          'gold': 'gold labeler quality (0-4) of those samples',
          'proxy': 'the reward model\'s mean reward of those samples',
          'stages.sft.sampled_labeler_quality': 'SFT\'s own samples, gold quality',
          **{c: f'best-of-{n} from SFT by the reward model: gold quality' for n, c in
             zip(BON, bon.values())}},
      'derived': {'kl': lambda r: _pick(r, 'kl_to_sft'),
                  'gold': lambda r: _pick(r, 'sampled_labeler_quality'),
                  'proxy': lambda r: _pick(r, 'sampled_reward_mean')},
      'plots': [{'x': 'kl', 'y': 'gold', 'group': 'run', 'name': 'frontier',
                 'series': {'best-of-n (n = 1 … 32)': bon},
                 'group_labels': {UPSTREAM + ',dpo': 'DPO (β sweep)', UPSTREAM + ',ppo':
                                  'PPO (KL coefficient sweep)', UPSTREAM: 'SFT samples:'},
                 'xlabel': 'KL to SFT (nats per reply)', 'ylabel': 'gold quality (0-4)', 'hlines': {'SFT': 'stages.sft.sampled_labeler_quality'},
                 'title': 'gold reward vs KL to SFT, 90 word problems (cf. Rafailov et al. Fig. 2)'}],
  }

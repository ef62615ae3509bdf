"""Rafailov et al. 2023 (DPO), Fig. 2 left: the reward/KL frontier of DPO and PPO in the paper's
controlled setting, and DPO on offline rankings beside it.

The paper (Sec. 6, App. C.1): an SFT model samples 4 completions per prompt, a ground-truth reward
(a sentiment classifier) labels all 6 pairs, DPO trains on them; PPO optimizes the learned reward
model; the frontier is ground-truth reward against sequence-level KL to the reference.
Here the ground truth is the embedded world's noise-free labeler, which also labels DPO's pairs
of SFT samples (`dpo.pairs=policy_gold`); PPO optimizes the pipeline's reward model, trained on
the world's rankings; a second DPO arm trains on those rankings directly (`dpo.pairs=rankings`).

  bash scripts/demo.sh        # once: runs/demo holds the base, SFT and reward model reused here
  python -m lmresearch.sweep --config=experiments/dpo_vs_ppo_frontier/config.py \
      --workdir=runs/exp/dpo_vs_ppo_frontier --parallel=2

KL is measured the same way for every trained policy: samples at T = 1 for 90 held-out word
problems, the sum over the reply of log pi - log pi_sft. Best-of-n from SFT (KL_bon = log n -
(n-1)/n, computed, not measured) is drawn as a reference and not part of the verdicts.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.training.config import parse_arg  # noqa: E402
from lmresearch.evals.best_of_n import kl_bon  # noqa: E402

BON = (1, 2, 4, 8, 16, 32)
UPSTREAM = 'pretrain,sft,reward'
DPO_GOLD, DPO_RANK, PPO, BEST = 'DPO, gold-labeled SFT pairs', 'DPO, offline rankings', 'PPO', 'best-of-n'


def get_config(arg=None):
  c = load_config('pipeline')
  c.upstream = parse_arg(arg, upstream='runs/demo').upstream
  c.reuse = UPSTREAM
  c.run = UPSTREAM + ',ppo'
  c.stages.ppo.ppo.ptx_coef = 0.0
  # The PPO the committed trials ran (the pipeline's of 2026-11-30), pinned: the pipeline's own
  # recipe has since moved to 60 steps of 64 rollouts of 96 tokens.
  c.stages.ppo.train.update(steps=30, batch_size=32)
  c.stages.ppo.rl.max_new_tokens = 48
  c.eval.update(per_step=30, prompting=False, rm_rankings=0, compare_prompts=2, sample_prompts=90,
                samples_per_prompt=1)
  return c


def get_sweep(h):
  # The seed varies the DPO/PPO training and the sampling (DPO's pairs too); the reused SFT and
  # RM are one run.
  dpo = [h.fixed('run', UPSTREAM + ',dpo'), h.fixed('eval.models', 'dpo')]
  return h.product([h.chain([
      h.product(dpo + [h.fixed('stages.dpo.dpo.pairs', 'policy_gold'),
                       h.sweep('stages.dpo.dpo.beta', [0.1, 0.3, 1.0])]),
      h.product(dpo + [h.fixed('stages.dpo.dpo.pairs', 'rankings'),
                       h.sweep('stages.dpo.dpo.beta', [0.1, 0.3, 1.0])]),
      h.product([h.fixed('run', UPSTREAM + ',ppo'), h.fixed('eval.models', 'rlhf'),
                 h.sweep('stages.ppo.ppo.kl_coef', [0.3, 1.0, 3.0])]),
      h.product([h.fixed('run', UPSTREAM), h.fixed('eval.models', 'sft'),
                 h.fixed('eval.best_of', max(BON))]),
  ]), h.sweep('seed', [0, 1, 2])])


def _pick(row, key):
  for model in ('dpo', 'rlhf'):
    if f'stages.{model}.{key}' in row:
      return row[f'stages.{model}.{key}']
  raise KeyError(key)


def _method(row):
  if row.get('run', '').endswith('dpo'):
    return DPO_GOLD if row.get('pairs') == 'policy_gold' else DPO_RANK
  return PPO if row.get('run', '').endswith('ppo') else BEST


def _setting(row):
  m = _method(row)
  if m in (DPO_GOLD, DPO_RANK):
    return f'{m}, β = {row["beta"]}'
  return f'PPO, KL coef {row["kl_coef"]}' if m == PPO else f'best-of-n, n ≤ {max(BON)}'


def get_report():
  bon = {kl_bon(n): f'best_of_n.{n}.gold_quality' for n in BON}
  sft = 'stages.sft.sampled_labeler_quality'
  paper = ('Fig. 2 (left), IMDb sentiment: "DPO provides the highest expected reward for all KL '
           'values"; Sec. 6.1: "DPO\'s reward/KL tradeoff strictly dominates PPO" (pairs: 4 SFT '
           'samples per prefix, all 6 labeled by a sentiment classifier, App. C.1)')
  frontier = {'frontier': ('kl', 'gold'), 'origin': sft, 'criterion': '> 0'}
  trained = {'method': [DPO_GOLD, DPO_RANK, PPO]}
  return {
      'title': 'Gold reward vs KL: DPO and PPO (Rafailov et al. 2023, Fig. 2 left)',
      'metrics': {
          'kl': 'KL to SFT of the trained policy, samples at T = 1 (nats per reply)',
          'gold': 'gold labeler quality (0-4) of those samples',
          'gold_gain': 'gold minus SFT\'s own samples of the same questions',
          'proxy': 'the reward model\'s mean reward of those samples',
          'accuracy': 'share of right answers among those samples'},
      'head': ['setting'],
      'derived': {'method': _method, 'setting': _setting,
                  'kl': lambda r: _pick(r, 'kl_to_sft'),
                  'gold': lambda r: _pick(r, 'sampled_labeler_quality'),
                  'gold_gain': lambda r: _pick(r, 'sampled_labeler_quality') - r[sft],
                  'proxy': lambda r: _pick(r, 'sampled_reward_mean'),
                  'accuracy': lambda r: _pick(r, 'sampled_accuracy')},
      'labels': {sft: 'SFT samples', 'kl': 'KL to SFT', 'gold': 'gold quality', 'gold_gain': 'gold − SFT',
                 'proxy': 'RM reward', 'accuracy': 'sampled accuracy', 'kl_coef': 'PPO KL coef',
                 **{c: f'best-of-{n}' for n, c in zip(BON, bon.values())}},
      'claims': [
          {'claim': "DPO on gold-labeled SFT pairs: its frontier lies above PPO's",
           'where': {'method': DPO_GOLD}, 'versus': {'method': PPO}, 'paper': paper, **frontier},
          {'claim': "DPO on the offline rankings: its frontier lies above PPO's",
           'where': {'method': DPO_RANK}, 'versus': {'method': PPO},
           'paper': 'not the paper\'s setting: the pairs are the world\'s rankings, which the '
                    'reward model PPO optimizes learned from', **frontier},
          {'claim': 'Each trained policy is preferred by the gold labeler over SFT',
           'value': 'gold_gain', 'where': trained, 'each': 'setting', 'criterion': '> 0',
           'paper': 'Fig. 2 (left): every method\'s reward rises above the SFT policy\'s'},
      ],
      'tables': [{'title': 'Trained policies (DPO: β; PPO: KL coefficient)', 'where': trained,
                  'metrics': ['kl', 'gold', 'gold_gain', 'proxy', 'accuracy']},
                 {'title': 'Best-of-n from SFT by the reward model (KL_bon computed)',
                  'where': {'method': BEST}, 'metrics': [sft] + list(bon.values())}],
      'plots': [{'x': 'kl', 'y': 'gold', 'group': 'method', 'name': 'frontier',
                 'series': {'best-of-n (n = 1 … 32; KL computed)': bon},
                 'group_labels': {BEST: 'reference:'},
                 'xlabel': 'KL to SFT (nats per reply)', 'ylabel': 'gold quality (0-4)',
                 'hlines': {'SFT': sft},
                 'title': 'gold reward vs KL to SFT, 90 word problems (cf. Rafailov et al. Fig. 2)'}],
  }

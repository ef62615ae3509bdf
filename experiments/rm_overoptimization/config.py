"""Gao, Schulman & Hilton 2022, "Scaling laws for reward model overoptimization", Fig. 1-3.
Proxy reward models trained on the simulated labeler's noisy rankings at three data sizes; the SFT
policy optimized against each by best-of-n (n = 1..64, KL_bon = log n - (n-1)/n) and by PPO (every
held-out evaluation along training, KL measured); gold reward (the embedded world's noise-free
labeler) and proxy reward against d = sqrt(KL), with the paper's fits
R_bon(d) = d (alpha - beta d) and R_RL(d) = d (alpha - beta log d).

  bash scripts/demo.sh        # once: runs/demo holds the base and SFT models reused here
  python -m lmresearch.sweep --config=experiments/rm_overoptimization/config.py \
      --workdir=runs/exp/rm_overoptimization

Each trial trains one proxy reward model (label noise 0.25) and one PPO run against it (plain PPO,
a small KL coefficient so that KL grows), and best-of-64 from SFT. Rewards are in each proxy's own
units (normalized so SFT samples average 0), gold on the labeler's 0-4 scale.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.config import parse_arg  # noqa: E402
from lmresearch.evaluation.best_of_n import kl_bon  # noqa: E402

BON = (1, 2, 4, 8, 16, 32, 64)


def get_config(arg=None):
  c = load_config('pipeline')
  c.upstream = parse_arg(arg).get('upstream', 'runs/demo')
  c.reuse = 'pretrain,sft'
  c.run = 'pretrain,sft,reward,ppo'
  rm = c.stages.reward
  rm.data.synthetic.label_noise = 0.25
  rm.train.update(steps=190, eval_every=95)
  rm.checkpoint.every = 95
  ppo = c.stages.ppo
  ppo.ppo.update(ptx_coef=0.0, kl_coef=0.05)
  ppo.train.update(steps=40, eval_every=5)
  ppo.rl.eval_prompts = 64
  c.eval.update(models='rlhf', prompting=False, rm_rankings=200, compare_prompts=2,
                sample_prompts=60, best_of=max(BON))
  return c


def get_sweep(h):
  return h.sweep('stages.reward.data.synthetic.num_docs', [200, 800, 3200])


def _sqrt(x):
  return max(x, 0.0) ** 0.5


def get_report():
  d = {n: _sqrt(kl_bon(n)) for n in BON}
  # Gao et al. fit the gain over the initial policy (R(0) = 0): gold and proxy minus best-of-1's.
  gains = {f'{kind}_gain_{n}': (lambda r, n=n, k=key: r[f'best_of_n.{n}.{k}'] - r[f'best_of_n.1.{k}'])
           for n in BON for kind, key in (('gold', 'gold_quality'), ('proxy', 'proxy_reward'))}
  return {
      'derived': gains,
      'metrics': {'reward_model.accuracy': 'proxy RM: held-out pairwise accuracy (noise-free rankings)',
                  **{f'best_of_n.{n}.gold_quality': f'best-of-{n}: gold quality' for n in BON},
                  **{f'best_of_n.{n}.proxy_reward': f'best-of-{n}: proxy reward' for n in BON},
                  'stages.rlhf.sampled_labeler_quality': 'PPO, end: gold quality of samples',
                  'stages.rlhf.kl_to_sft': 'PPO, end: KL to SFT'},
      'plots': [{'name': 'bon_gold', 'group': 'num_docs', 'fit': 'bon', 'xlabel': 'd = sqrt(KL_bon)',
                 'ylabel': 'gold quality − best-of-1', 'series': {'gold': {d[n]: f'gold_gain_{n}'
                                                                             for n in BON}},
                 'title': 'best-of-n: gold reward vs d'},
                {'name': 'bon_proxy', 'group': 'num_docs', 'xlabel': 'd = sqrt(KL_bon)',
                 'ylabel': 'proxy reward − best-of-1', 'series': {'proxy': {d[n]: f'proxy_gain_{n}'
                                                                              for n in BON}},
                 'title': 'best-of-n: proxy reward vs d'}],
      'curves': [{'name': 'ppo_gold', 'run': 'ppo', 'x': 'eval/ppo/kl', 'sqrt_x': True,
                  'y': 'eval/ppo/gold_quality', 'group': 'num_docs', 'fit': 'rl', 'relative': True,
                  'title': 'PPO: gold reward vs d along training'},
                 {'name': 'ppo_proxy', 'run': 'ppo', 'x': 'eval/ppo/kl', 'sqrt_x': True,
                  'y': 'eval/ppo/reward_mean', 'group': 'num_docs', 'relative': True,
                  'title': 'PPO: proxy reward vs d along training'}],
  }

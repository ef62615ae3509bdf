"""Gao, Schulman & Hilton 2022, "Scaling laws for reward model overoptimization", Fig. 1-3.
Proxy reward models trained on the simulated labeler's noisy rankings at three data sizes; the SFT
policy optimized against each by best-of-n (n = 1..64, KL_bon = log n - (n-1)/n) and by PPO (every
held-out evaluation along training, KL measured); gold reward (the embedded world's noise-free
labeler) and proxy reward against d = sqrt(KL), with the paper's fits
R_bon(d) = d (alpha - beta d) and R_RL(d) = d (alpha - beta log d).

  python -m lmresearch.sweep --config=experiments/pipeline_seeds/config.py --workdir=runs/exp/pipeline_seeds
  python -m lmresearch.sweep --config=experiments/rm_overoptimization/config.py:upstream=runs/exp/pipeline_seeds \
      --workdir=runs/exp/rm_overoptimization

Each seed's trials start from that seed's base and SFT models (`upstream`/seed=N, reused).

Each trial trains one proxy reward model (label noise 0.25) and one PPO run against it (plain PPO,
a small KL coefficient so that KL grows), and best-of-64 from SFT. Rewards are in each proxy's own
units (normalized so SFT samples average 0), gold on the labeler's 0-4 scale.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.training.config import parse_arg  # noqa: E402
from lmresearch.evals.best_of_n import kl_bon  # noqa: E402

BON = (1, 2, 4, 8, 16, 32, 64)


def get_config(arg=None):
  c = load_config('pipeline')
  c.upstream = os.path.join(parse_arg(arg, upstream='runs/exp/pipeline_seeds').upstream, 'seed={seed}')
  c.reuse = 'pretrain,sft'
  c.run = 'pretrain,sft,reward,ppo'
  rm = c.stages.reward
  rm.data.synthetic.label_noise = 0.25
  rm.train.update(steps=190, eval_every=95)
  rm.checkpoint.every = 95
  ppo = c.stages.ppo
  ppo.ppo.update(ptx_coef=0.0, kl_coef=0.05)
  # Rollouts of 32 prompts x 48 new tokens (the pipeline's PPO when this experiment was designed;
  # the pipeline has since moved to 64 x 96): half the PPO cost, so that 3 seeds fit.
  ppo.train.update(steps=40, eval_every=5, batch_size=32)
  ppo.rl.max_new_tokens = 48
  ppo.rl.eval_prompts = 64
  c.eval.update(per_step=30, models='rlhf', prompting=False, rm_rankings=200, compare_prompts=2,
                sample_prompts=60, samples_per_prompt=1, best_of=max(BON))
  return c


SEEDS = (0, 1, 2)


def get_sweep(h):
  return h.product([h.sweep('seed', list(SEEDS)),
                    h.sweep('stages.reward.data.synthetic.num_docs', [200, 800, 3200])])


def _sqrt(x):
  return max(x, 0.0) ** 0.5


PPO_STEPS = (0, 10, 40)   # PPO's held-out evaluations the claims read: start, early, end


def _ppo(step, key):
  return f'ppo@{step}.eval/ppo/{key}'


def _change(key, a, b):
  """PPO's held-out `key` at step b minus at step a, and the standard error of that difference
  (the two evaluations' errors combined: the same 64 prompts, so this overstates it)."""
  return ((lambda r: r[_ppo(b, key)] - r[_ppo(a, key)]),
          (lambda r: (r[_ppo(b, key + '_se')] ** 2 + r[_ppo(a, key + '_se')] ** 2) ** 0.5))


def get_report():
  d = {n: _sqrt(kl_bon(n)) for n in BON}
  top = max(BON)
  derived = {}
  for name, key, (a, b) in (('ppo_proxy_gain', 'reward_mean', (0, 40)),
                            ('ppo_gold_early', 'gold_quality', (0, 10)),
                            ('ppo_gold_late', 'gold_quality', (10, 40)),
                            ('ppo_gold_gain', 'gold_quality', (0, 40))):
    derived[name], derived[name + '_se'] = _change(key, a, b)
  # Gao et al. fit the gain over the initial policy (R(0) = 0): best-of-n's gains over best-of-1.
  gain = lambda kind, n: f'best_of_n.{n}.{kind}_gain'
  each = {'each': 'num_docs'}
  fig1 = ('Fig. 1: "when we optimize for a learned proxy of the gold reward, the gold reward '
          'initially increases and later decreases" (best-of-n and RL; d = √KL, R_bon(d) = '
          'd(α − βd), R_RL(d) = d(α − β log d))')
  data = ('Sec. 3.3 and Fig. 4 (RM data size at fixed RM size): "more data leads to better gold '
          'scores and less goodharting"')
  claims = [
      {'claim': 'Best-of-n: the proxy reward rises', 'value': gain('proxy', top),
       'se': gain('proxy', top) + '_se', 'criterion': '> 0', 'paper': fig1, **each},
      {'claim': 'Best-of-n: the gold reward rises at first (n = 2)', 'value': gain('gold', 2),
       'se': gain('gold', 2) + '_se', 'criterion': '> 0', 'paper': fig1, **each},
      {'claim': f'Best-of-n: the gold reward ends below the start (n = {top})',
       'value': gain('gold', top), 'se': gain('gold', top) + '_se', 'criterion': '< 0',
       'paper': fig1, **each},
      {'claim': 'PPO: the proxy reward rises (step 0 → 40)', 'value': 'ppo_proxy_gain',
       'se': 'ppo_proxy_gain_se', 'criterion': '> 0', 'paper': fig1, **each},
      {'claim': 'PPO: the gold reward rises at first (step 0 → 10)', 'value': 'ppo_gold_early',
       'se': 'ppo_gold_early_se', 'criterion': '> 0', 'paper': fig1, **each},
      {'claim': 'PPO: the gold reward later falls (step 10 → 40)', 'value': 'ppo_gold_late',
       'se': 'ppo_gold_late_se', 'criterion': '< 0', 'paper': fig1, **each},
      {'claim': f'More RM data: best-of-{top} loses less gold', 'contrast': gain('gold', top),
       'se': gain('gold', top) + '_se', 'where': {'num_docs': 3200},
       'versus': {'num_docs': 200}, 'criterion': '> 0', 'paper': data},
      {'claim': 'More RM data: PPO gains more gold', 'contrast': 'ppo_gold_gain',
       'se': 'ppo_gold_gain_se', 'where': {'num_docs': 3200}, 'versus': {'num_docs': 200},
       'criterion': '> 0', 'paper': data},
  ]
  labels = {'reward_model.accuracy': 'RM held-out accuracy',
            **{f'best_of_n.{n}.gold_quality': f'gold, n={n}' for n in BON},
            **{f'best_of_n.{n}.proxy_reward': f'proxy, n={n}' for n in BON},
            'ppo_proxy_gain': 'PPO proxy, 40 − 0', 'ppo_gold_gain': 'PPO gold, 40 − 0',
            'ppo_gold_early': 'PPO gold, 10 − 0', 'ppo_gold_late': 'PPO gold, 40 − 10',
            'eval/ppo/kl': 'KL to SFT', 'eval/ppo/gold_quality': 'gold quality',
            'eval/ppo/reward_mean': 'proxy reward', 'num_docs': 'RM rankings'}
  return {
      'title': 'Reward model over-optimization, best-of-n and PPO, 3 RM data sizes '
               '(Gao, Schulman & Hilton 2022)',
      'derived': {**derived, **{
          f'{kind}_gain_{n}': (lambda r, n=n, k=kind: r[gain(k, n)]) for n in BON
          for kind in ('gold', 'proxy')}},
      'claims': claims, 'labels': labels,
      'metrics': {'reward_model.accuracy': 'proxy RM: held-out pairwise accuracy (noise-free rankings)',
                  **{f'best_of_n.{n}.gold_quality': f'best-of-{n}: gold quality' for n in BON},
                  'best_of_n.1.proxy_reward': 'best-of-1: proxy reward',
                  f'best_of_n.{top}.proxy_reward': f'best-of-{top}: proxy reward',
                  'ppo_proxy_gain': 'PPO: proxy reward at step 40 minus step 0 (held-out)',
                  'ppo_gold_early': 'PPO: gold quality at step 10 minus step 0',
                  'ppo_gold_late': 'PPO: gold quality at step 40 minus step 10'},
      'describe': {'reward_model.accuracy': 'the proxy RM\'s pairwise accuracy on held-out '
                                            'noise-free rankings',
                   'best_of_n.1.gold_quality': 'gold quality (0-4) of the reply the proxy picks '
                                               'from the first n of 64 samples, 60 word problems',
                   'ppo_gold_early': 'PPO\'s held-out gold quality (64 questions) at step 10 '
                                     'minus step 0; likewise the other PPO columns'},
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
                  'table': True, 'also': ['eval/ppo/gold_quality_se', 'eval/ppo/reward_mean_se'],
                  'title': 'PPO: gold reward vs d along training'},
                 {'name': 'ppo_proxy', 'run': 'ppo', 'x': 'eval/ppo/kl', 'sqrt_x': True,
                  'y': 'eval/ppo/reward_mean', 'group': 'num_docs', 'relative': True,
                  'table': True, 'title': 'PPO: proxy reward vs d along training'}],
  }

"""LoRA vs full fine-tuning in the default pipeline: does LoRA (rank 8 on every projection, alpha 16,
the default learning rates) keep the gains of SFT and of RLHF?

  python -m lmresearch.sweep --config=experiments/lora_vs_full/config.py \
      --workdir=runs/exp/lora_vs_full --publish

Each trial takes the pretrained base model of one whole-pipeline seed
(runs/exp/pipeline_seeds/seed=N, experiments/pipeline_seeds) and trains SFT, the reward model and
PPO from it, with adapters (configs/pipeline.py:lora=8: SFT and PPO) or without (the same
seed's full runs, reused whole); both are evaluated the same way. `:upstream=DIR` names another
folder of seed runs.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.config import parse_arg  # noqa: E402

SEEDS = (0, 1, 2)
RANK = 8


def get_config(arg=None):
  c = load_config('pipeline')
  c.upstream = os.path.join(parse_arg(arg).get('upstream', 'runs/exp/pipeline_seeds'), 'seed=0')
  c.reuse = 'pretrain'
  for n in ('sft', 'ppo'):   # take effect where a trial sets the rank
    c.stages[n].lora.update(targets='query,key,value,out,gate,up,down', alpha=2.0 * RANK)
  return c


def get_sweep(h):
  per_seed = lambda s: h.product([h.chain([
      h.product([h.sweep('stages.sft.lora.rank', [RANK]), h.sweep('stages.ppo.lora.rank', [RANK]),
                 h.fixed('reuse', 'pretrain')]),
      h.fixed('reuse', 'pretrain,sft,reward,ppo')]),   # full fine-tuning: the seed's own runs
      h.fixed('upstream', f'runs/exp/pipeline_seeds/seed={s}'), h.fixed('seed', s)])
  return h.chain([per_seed(s) for s in SEEDS])


R = 'stages.{}.{}'


def _arm(row):
  return f'LoRA r={RANK}' if row.get('rank') or row.get('sft.lora.rank') else 'full'


def get_report():
  cols = {R.format('sft', 'answer_accuracy'): 'SFT greedy accuracy',
          R.format('sft', 'sampled_labeler_quality'): 'SFT sampled gold',
          R.format('rlhf', 'answer_accuracy'): 'RLHF greedy accuracy',
          R.format('rlhf', 'sampled_labeler_quality'): 'RLHF sampled gold',
          R.format('rlhf', 'sampled_padded_share'): 'RLHF padded', R.format('rlhf', 'kl_to_sft'): 'KL to SFT',
          'sft_gain': 'SFT − base (accuracy)', 'rlhf_gold_gain': 'RLHF − SFT (gold)'}
  derived = {'arm': _arm,
             'sft_gain': lambda r: r[R.format('sft', 'answer_accuracy')] - r[R.format('base', 'answer_accuracy')],
             'rlhf_gold_gain': lambda r: r['claim_values.rlhf_gold_preferred.value']}
  lora = {'arm': f'LoRA r={RANK}'}
  return {
      'title': f'LoRA (rank {RANK}) vs full fine-tuning in the default pipeline',
      'head': ['arm'], 'derived': derived, 'labels': cols, 'metrics': cols, 'describe': {},
      'claims': [
          {'claim': 'LoRA SFT makes the base model answer', 'value': 'sft_gain', 'where': lora,
           'criterion': '> 0', 'paper': 'Hu et al. 2021 (LoRA), Sec. 5: on par with or better '
                                        'than full fine-tuning at a fraction of the trained params'},
          {'claim': "LoRA RLHF's samples are preferred by the gold labeler (each seed)",
           'interval': 'claim_values.rlhf_gold_preferred', 'where': lora, 'each': 'seed',
           'criterion': '> 0', 'paper': 'our pipeline\'s claim, with adapters'},
          {'claim': 'LoRA keeps full SFT\'s accuracy gain (paired by seed)', 'contrast': 'sft_gain',
           'where': lora, 'versus': {'arm': 'full'}, 'criterion': '>= -0.05',
           'paper': 'Hu et al. 2021: LoRA matches full fine-tuning'},
          {'claim': "LoRA keeps full RLHF's gold gain (paired by seed)", 'contrast': 'rlhf_gold_gain',
           'where': lora, 'versus': {'arm': 'full'}, 'criterion': '>= -0.1',
           'paper': 'Hu et al. 2021: LoRA matches full fine-tuning'},
      ],
  }

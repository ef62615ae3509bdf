"""LoRA vs full fine-tuning in the default pipeline: does LoRA (rank 8 on every projection,
alpha 16) keep the gains of SFT and of RLHF (PPO)?

  python -m lmresearch.sweep --config=experiments/lora_vs_full/config.py \
      --workdir=runs/exp/lora_vs_full --publish

Each seed's two arms start from the same pretrained base model: that seed's whole-pipeline run
of experiments/pipeline_seeds (runs/exp/pipeline_seeds/seed=N; `:upstream=DIR` names another
folder of seed runs). The LoRA arm trains SFT (adapters), the reward model (full, as the
default) and PPO (adapters on policy and value model) from it, as `configs/pipeline.py:lora=8`
does, with that config's learning rates; the full arm is the seed's own run, reused whole. Both
are evaluated the same way, so each claim is a paired difference by seed.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.training.config import parse_arg  # noqa: E402
from lmresearch.evals.claims import PIPELINE  # noqa: E402

SEEDS = (0, 1, 2)
RANK = 8


def get_config(arg=None):
  c = load_config('pipeline')
  c.upstream = os.path.join(parse_arg(arg, upstream='runs/exp/pipeline_seeds').upstream, 'seed={seed}')
  c.reuse = 'pretrain'
  lora = load_config('pipeline', f'lora={RANK}').stages
  for n in ('sft', 'ppo'):   # take effect where a trial sets the rank
    c.stages[n].lora.update(targets=lora[n].lora.targets, alpha=lora[n].lora.alpha)
  return c


def get_sweep(h):
  lora = load_config('pipeline', f'lora={RANK}').stages
  adapters = {'stages.sft.lora.rank': RANK, 'stages.ppo.lora.rank': RANK, 'reuse': 'pretrain',
              **{f'stages.{n}.train.{k}': lora[n].train[k] for n in ('sft', 'ppo') for k in ('lr', 'min_lr')}}
  arm = h.chain([
      # adapters on the projections only (the first published arm), then with the special
      # tokens' embedding and head rows trained too, as configs/pipeline.py:lora=8 now does
      [adapters, {**adapters, **{f'stages.{n}.lora.tokens': lora[n].lora.tokens for n in ('sft', 'ppo')}}],
      h.fixed('reuse', 'pretrain,sft,reward,ppo')])   # full fine-tuning: the seed's own run
  return h.product([h.sweep('seed', list(SEEDS)), arm])


R = 'stages.{}.{}'


ROWS = f'LoRA r={RANK} + token rows'


def _arm(row):
  if not row.get('sft.lora.rank'):
    return 'full'
  return ROWS if row.get('sft.lora.tokens') else f'LoRA r={RANK}'


def get_report():
  cols = {R.format('sft', 'answer_accuracy'): 'SFT greedy accuracy',
          R.format('base', 'arithmetic_accuracy'): 'base word problems',
          R.format('sft', 'arithmetic_accuracy'): 'SFT word problems',
          R.format('sft', 'fact_accuracy'): 'SFT facts',
          R.format('sft', 'sampled_degenerate_share'): 'SFT samples degenerate',
          R.format('sft', 'sampled_labeler_quality'): 'SFT sampled gold',
          R.format('rlhf', 'answer_accuracy'): 'RLHF greedy accuracy',
          R.format('rlhf', 'sampled_labeler_quality'): 'RLHF sampled gold',
          R.format('rlhf', 'kl_to_sft'): 'KL to SFT',
          'sft_gain': 'SFT − base (accuracy)', 'rlhf_gold_gain': 'RLHF − SFT (gold)',
          'rlhf_acc_change': 'RLHF − SFT (greedy accuracy)'}
  derived = {'arm': _arm,
             'sft_gain': lambda r: r[R.format('sft', 'answer_accuracy')] - r[R.format('base', 'answer_accuracy')],
             'rlhf_gold_gain': lambda r: r['claim_values.rlhf_gold_preferred.value'],
             'rlhf_acc_change': lambda r: r['claim_values.rlhf_keeps_accuracy.value']}
  measure = {c.id: c.measure for c in PIPELINE}   # the run's own claims, judged in the run
  hu = 'Hu et al. 2021 (LoRA), Sec. 5: on par with or better than full fine-tuning'
  claims = []
  for name in (ROWS, f'LoRA r={RANK}'):
    claims += [{**c, 'claim': c['claim'].replace('LoRA', name, 1)} for c in _claims({'arm': name}, measure, hu)]
  claims.append({'claim': 'Token rows raise LoRA SFT\'s accuracy gain (paired by seed)', 'contrast': 'sft_gain',
                 'where': {'arm': ROWS}, 'versus': {'arm': f'LoRA r={RANK}'}, 'criterion': '> 0',
                 'paper': "PEFT's trainable_token_indices: new tokens need their own rows"})
  return {
      'title': f'LoRA (rank {RANK}) vs full fine-tuning in the default pipeline',
      'head': ['arm'], 'derived': derived, 'labels': cols, 'metrics': cols, 'describe': {},
      'claims': claims,
  }


def _claims(lora, measure, hu):
  return [
    {'claim': 'LoRA SFT makes the base model answer (each seed)', 'interval': 'claim_values.sft_answers', 'measure': measure['sft_answers'],
     'where': lora, 'each': 'seed', 'criterion': '> 0', 'paper': hu},
    {'claim': "LoRA RLHF's samples are preferred by the gold labeler (each seed)",
     'interval': 'claim_values.rlhf_gold_preferred', 'measure': measure['rlhf_gold_preferred'], 'where': lora, 'each': 'seed',
     'criterion': '> 0', 'paper': 'the pipeline\'s claim, with adapters'},
    {'claim': "LoRA RLHF keeps its SFT's greedy accuracy (each seed)",
     'interval': 'claim_values.rlhf_keeps_accuracy', 'measure': measure['rlhf_keeps_accuracy'], 'where': lora, 'each': 'seed',
     'criterion': '>= -0.05', 'paper': 'the pipeline\'s claim, with adapters'},
    {'claim': 'LoRA keeps full SFT\'s accuracy gain (paired by seed)', 'contrast': 'sft_gain',
     'where': lora, 'versus': {'arm': 'full'}, 'criterion': '>= -0.05', 'paper': hu},
    {'claim': "LoRA keeps full RLHF's gold gain (paired by seed)", 'contrast': 'rlhf_gold_gain',
     'where': lora, 'versus': {'arm': 'full'}, 'criterion': '>= -0.1', 'paper': hu},
  ]

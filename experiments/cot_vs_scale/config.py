"""Wei et al. 2022 (chain-of-thought prompting), Fig. 4: direct vs chain-of-thought accuracy of
base models at several sizes trained on the same data. The paper finds CoT helps only past a
scale (~100B parameters); where, if anywhere, does the crossover fall on the embedded world?

  python -m lmresearch.sweep --config=experiments/cot_vs_scale/config.py \
      --workdir=runs/exp/cot_vs_scale

Each trial pretrains one base model (the default pipeline's 500 steps of 16 x 256 tokens, so
every size sees the same data) and evaluates it on 90 held-out word problems, prompted directly
and with 2 chain-of-thought exemplars (and few-shot, instruction).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402

# (layers, width, heads): 12k to 0.8M non-embedding parameters (the default model is the largest;
# a larger one does not fit the hour on 2 CPU cores)
SIZES = ((1, 32, 2), (2, 64, 4), (3, 96, 4), (4, 128, 4))


def get_config(arg=None):
  c = load_config('pipeline')
  c.run = 'pretrain'
  c.eval.update(sc_samples=(), compare_prompts=2, sample_prompts=0)
  return c


def get_sweep(h):
  key = 'stages.pretrain.model.'
  return h.product([h.zipit([h.sweep(key + 'num_layers', [s[0] for s in SIZES]),
                             h.sweep(key + 'embed_dim', [s[1] for s in SIZES]),
                             h.sweep(key + 'mlp_dim', [4 * s[1] for s in SIZES]),
                             h.sweep(key + 'num_heads', [s[2] for s in SIZES])]),
                    h.sweep('seed', [0, 1, 2])])


def _params(row):
  return 12 * row['num_layers'] * row['embed_dim'] ** 2


def get_report():
  col = 'prompting_by_steps.base.{}.all'
  return {
      'metrics': {'params': 'non-embedding parameters, 12 x layers x width^2',
                  col.format('direct'): 'direct answers (zero-shot)',
                  col.format('cot'): 'chain of thought (2 exemplars)',
                  col.format('few_shot'): 'few-shot direct answers (2 exemplars)',
                  'stages.base.heldout_loss': 'held-out loss (nats/token)'},
      'derived': {'params': _params},
      'labels': {col.format(m): m for m in ('direct', 'cot', 'few_shot')},
      'plots': [{'name': 'cot_vs_scale', 'logx': True, 'x': 'params', 'xlabel': 'parameters',
                 'labels': {col.format('direct'): 'direct (zero-shot)',
                            col.format('few_shot'): 'few-shot direct (2 exemplars)',
                            col.format('cot'): 'chain of thought (2 exemplars)'},
                 'ylabel': 'accuracy', 'y': [col.format(m) for m in ('direct', 'few_shot', 'cot')],
                 'title': 'CoT vs direct across scale (Wei et al. Fig. 4)'}],
  }

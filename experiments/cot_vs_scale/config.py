"""Wei et al. 2022 (chain-of-thought prompting), Fig. 4: standard vs chain-of-thought prompting
accuracy of base models at several sizes trained on the same data. The paper finds CoT helps only
past a scale (~100B parameters); where, if anywhere, does the crossover fall on the embedded world?

  python -m lmresearch.sweep --config=experiments/cot_vs_scale/config.py \
      --workdir=runs/exp/cot_vs_scale

Each trial pretrains one base model (the default pipeline's 500 steps of 16 x 256 tokens, so
every size sees the same data) and evaluates it on 90 held-out word problems with standard
prompting (2 answer-only exemplars, the paper's baseline), 2 chain-of-thought exemplars, and
zero-shot (a second baseline).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.training.config import parse_arg  # noqa: E402

# (layers, width, heads): 16k to 1.05M non-embedding parameters (16·L·d² for these Llama-style
# blocks; the default model is the largest: a larger one does not fit the hour on 2 CPU cores)
SIZES = ((1, 32, 2), (2, 64, 4), (3, 96, 4), (4, 128, 4))


def get_config(arg=None):
  parse_arg(arg)   # no preset arguments
  c = load_config('pipeline')
  c.run = 'pretrain'
  c.eval.update(per_step=30, sc_samples=(), compare_prompts=2, sample_prompts=0)
  return c


def get_sweep(h):
  key = 'stages.pretrain.model.'
  return h.product([h.zipit([h.sweep(key + 'num_layers', [s[0] for s in SIZES]),
                             h.sweep(key + 'embed_dim', [s[1] for s in SIZES]),
                             h.sweep(key + 'mlp_dim', [4 * s[1] for s in SIZES]),
                             h.sweep(key + 'num_heads', [s[2] for s in SIZES])]),
                    h.sweep('seed', [0, 1, 2])])


COL = 'prompting_by_steps.base.{}.{}'
PARAMS = 'stages.base.params_non_embedding'   # counted from the trained model (pipeline report)


def _gain(steps='all'):
  """CoT minus standard prompting (few-shot, answer-only exemplars) on one trial's questions."""
  return lambda r: r[COL.format('cot', steps)] - r[COL.format('few_shot', steps)]


def get_report():
  acc = {m: COL.format(m, 'all') for m in ('direct', 'few_shot', 'cot')}
  smallest, largest = {'num_layers': SIZES[0][0]}, {'num_layers': SIZES[-1][0]}
  paper = ('Sec. 3.2: "chain-of-thought prompting does not positively impact performance for '
           'small models, and only yields performance gains when used with models of ∼100B '
           'parameters"; Fig. 4: PaLM 540B on GSM8K, 17.9% standard vs 56.9% chain of thought')
  return {
      'title': 'Chain-of-thought vs standard prompting across model size (Wei et al. 2022, Fig. 4)',
      'metrics': {PARAMS: 'non-embedding parameters, counted from the trained model',
                  'stages.base.heldout_loss': 'held-out loss (nats/token)',
                  acc['direct']: 'zero-shot direct answers (a second baseline)',
                  acc['few_shot']: 'standard prompting: 2 exemplars with the answer only',
                  acc['cot']: 'chain of thought: the same 2 exemplars with their worked steps',
                  'cot_gain': 'CoT − standard prompting, paired within each trial',
                  'cot_gain_3_minus_1': 'CoT gain on 3-step minus 1-step problems'},
      'derived': {'cot_gain': _gain(), 'cot_gain_3_minus_1': lambda r: _gain('3')(r) - _gain('1')(r),
                  'cot_minus_direct': lambda r: r[acc['cot']] - r[acc['direct']]},
      'labels': {PARAMS: 'parameters', 'stages.base.heldout_loss': 'held-out loss',
                 acc['direct']: 'zero-shot direct', acc['few_shot']: 'standard (few-shot)',
                 acc['cot']: 'chain of thought', 'cot_gain': 'CoT − standard',
                 'cot_gain_3_minus_1': 'gain, 3-step − 1-step', 'cot_minus_direct': 'CoT − zero-shot'},
      'claims': [
          {'claim': 'CoT does not help the smallest model', 'value': 'cot_gain', 'where': smallest,
           'criterion': '<= 0', 'paper': paper},
          {'claim': 'CoT beats standard prompting at the largest model', 'value': 'cot_gain',
           'where': largest, 'criterion': '> 0', 'paper': paper},
          {'claim': "CoT's gain grows with scale", 'contrast': 'cot_gain', 'where': largest,
           'versus': smallest, 'criterion': '> 0',
           'paper': 'Fig. 4: "chain-of-thought prompting is an emergent ability of model scale"'},
          {'claim': 'The gain is larger on harder problems', 'value': 'cot_gain_3_minus_1',
           'where': largest, 'criterion': '> 0',
           'paper': 'Sec. 3.2: "chain-of-thought prompting has larger performance gains for '
                    'more-complicated problems"'},
          {'claim': 'CoT beats zero-shot direct answers at the largest model',
           'value': 'cot_minus_direct', 'where': largest, 'criterion': '> 0',
           'paper': 'not in the paper: our second baseline'},
      ],
      'plots': [{'name': 'cot_vs_scale', 'logx': True, 'x': PARAMS,
                 'xlabel': 'non-embedding parameters (counted)',
                 'labels': {acc['direct']: 'zero-shot direct',
                            acc['few_shot']: 'standard prompting (2 answer-only exemplars)',
                            acc['cot']: 'chain of thought (2 exemplars)'},
                 'ylabel': 'accuracy', 'y': [acc['few_shot'], acc['cot'], acc['direct']],
                 'title': 'CoT vs standard prompting across scale (Wei et al. Fig. 4)'}],
  }

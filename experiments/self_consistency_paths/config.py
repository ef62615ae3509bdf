"""Wang et al. 2022 (self-consistency), Fig. 2: accuracy vs the number of sampled reasoning paths,
against greedy chain-of-thought, for the base and the SFT model, at T in {0.5, 0.7, 1.0}.

  bash scripts/demo.sh        # once: the default pipeline in runs/demo (its base and SFT models)
  python -m lmresearch.sweep --config=experiments/self_consistency_paths/config.py \
      --workdir=runs/exp/self_consistency_paths

Each trial evaluates the upstream run's base and SFT models (nothing is trained) with one sampling
temperature and one seed (the seed draws the exemplars and the samples). Paths 1..40 come from
one draw of 40 per question (@n is the vote of the first n). `:upstream=DIR` names another run.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.config import parse_arg  # noqa: E402

PATHS = (1, 3, 5, 10, 20, 40)


def get_config(arg=None):
  c = load_config('pipeline')
  c.upstream = parse_arg(arg).get('upstream', 'runs/demo')
  c.run = c.reuse = 'pretrain,sft'
  c.eval.update(per_step=20, sc_samples=PATHS, sample_prompts=30, compare_prompts=2)
  return c


def get_sweep(h):
  return h.product([h.sweep('eval.sc_temperature', [0.5, 0.7, 1.0]), h.sweep('seed', [0, 1, 2])])


def _col(model, method):
  return f'prompting_by_steps.{model}.{method}.all'


def get_report():
  metrics = {}
  for model in ('base', 'sft'):
    metrics[_col(model, 'cot')] = f'{model}: greedy chain-of-thought accuracy (60 word problems)'
    for n in PATHS:
      metrics[_col(model, f'self_consistency@{n}')] = f'{model}: majority vote of {n} sampled paths'
  labels = {c: c.split('.')[1] + ' ' + c.split('.')[2].replace('self_consistency', 'SC')
            for c in metrics}
  return {
      'metrics': metrics,
      'labels': labels,
      'plots': [{'name': f'{model}_paths', 'group': 'sc_temperature', 'logx': True,
                 'series': {model: {n: _col(model, f'self_consistency@{n}') for n in PATHS}},
                 'hlines': {'greedy CoT': _col(model, 'cot')},
                 'xlabel': 'sampled reasoning paths', 'ylabel': 'accuracy',
                 'title': f'{model} model: self-consistency vs paths (Wang et al. Fig. 2)'}
                for model in ('base', 'sft')],
  }

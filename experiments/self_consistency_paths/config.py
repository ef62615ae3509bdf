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
from lmresearch.training.config import parse_arg  # noqa: E402

PATHS = (1, 3, 5, 10, 20, 40)


def get_config(arg=None):
  c = load_config('pipeline')
  c.upstream = parse_arg(arg, upstream='runs/demo').upstream
  c.run = c.reuse = 'pretrain,sft'
  c.eval.update(per_step=20, prompting_per_step=20, sc_samples=PATHS, sample_prompts=30,
                samples_per_prompt=1, compare_prompts=2)
  return c


def get_sweep(h):
  return h.product([h.sweep('eval.sc_temperature', [0.5, 0.7, 1.0]), h.sweep('seed', [0, 1, 2])])


def _col(model, method):
  return f'prompting_by_steps.{model}.{method}.all'


MODELS = ('sft', 'base')


def get_report():
  metrics, labels, derived, claims, tables = {}, {}, {}, [], []
  for model in MODELS:
    cols = [_col(model, 'cot')] + [_col(model, f'self_consistency@{n}') for n in PATHS]
    metrics[cols[0]] = f'{model}: greedy chain-of-thought accuracy (60 word problems)'
    for n, c in zip(PATHS, cols[1:]):
      metrics[c] = f'{model}: majority vote of {n} sampled paths'
    top, one = cols[-1], cols[1]
    gain = f'{model}_sc{PATHS[-1]}_minus_cot'
    derived[gain] = lambda r, top=top, cot=cols[0]: r[top] - r[cot]
    labels.update({c: c.split('.')[2].replace('self_consistency', 'SC') for c in cols})
    labels[cols[0]] = 'greedy CoT'
    labels[gain] = f'SC@{PATHS[-1]} − CoT'
    tables.append({'title': f'The {model} model', 'metrics': cols + [gain]})
    claims += [
        {'claim': f'Self-consistency beats greedy CoT ({model} model)', 'diff': (top, cols[0]),
         'each': 'sc_temperature', 'criterion': '> 0',
         'paper': 'Fig. 2: "Self-consistency (blue) significantly improves accuracy over '
                  'CoT-prompting with greedy decoding (orange)"; Table 2: PaLM-540B on GSM8K, '
                  '56.5 greedy CoT vs 74.4 self-consistency (40 paths); Sec. 3.5 and Fig. 4: '
                  '"robust to sampling strategies and parameters" (T varied)'},
        {'claim': f'Accuracy rises with the number of paths ({model} model)',
         'diff': (top, one), 'each': 'sc_temperature', 'criterion': '> 0',
         'measure': f'SC@{PATHS[-1]} − SC@1', 'paper': 'Fig. 2: "Sampling a higher number of '
                                                        'diverse reasoning paths consistently '
                                                        'improves reasoning accuracy"'}]
  return {
      'title': 'Self-consistency vs the number of sampled paths (Wang et al. 2022, Fig. 2)',
      'metrics': metrics, 'labels': labels, 'derived': derived, 'claims': claims,
      'describe': {_col('sft', 'cot'): 'greedy chain-of-thought accuracy on 60 word problems '
                                       '(2 exemplars)',
                   _col('sft', 'self_consistency@5'): 'the majority answer of the first 5 of 40 '
                                                       'paths sampled per question at T'},
      'tables': tables,
      'plots': [{'name': f'{model}_paths', 'group': 'sc_temperature', 'logx': True,
                 'series': {model: {n: _col(model, f'self_consistency@{n}') for n in PATHS}},
                 'hlines': {'greedy CoT': _col(model, 'cot')},
                 'xlabel': 'sampled reasoning paths', 'ylabel': 'accuracy',
                 'title': f'{model} model: self-consistency vs paths (Wang et al. Fig. 2)'}
                for model in MODELS],
  }

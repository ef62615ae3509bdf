"""experiments/real_base_prompting/run.py end to end on a tiny run (the real model is Gemma 3
270M: hours on 2 cores): every method on the same questions, rows per method and seed with paired
intervals, the sister example, a killed run resuming from its records, and the README block
rendered from what it wrote."""
import csv
import json
import os
import subprocess
import sys

import jax

from conftest import ROOT, load_config, tiny
from lmresearch.studies import render, trials

EXP = os.path.join(ROOT, 'experiments', 'real_base_prompting')


def test_runs_every_method_resumes_and_renders(tmp_path):
  from lmresearch.stages import launch
  c = tiny(load_config('pretrain'))
  c.model.max_len = 4096   # Wei et al.'s eight exemplars in a tiny byte-level BPE
  c.train.steps = 1
  c.checkpoint.every = 1
  model = str(tmp_path / 'model')
  launch.run(c, model, devices=jax.devices()[:1])
  data = tmp_path / 'test.jsonl'
  data.write_text(''.join(json.dumps({'question': f'Bo has {i} figs and finds 3. How many now?',
                                      'answer': f'{i} + 3 = {i + 3}\n#### {i + 3}'}) + '\n'
                          for i in range(3)))
  work = tmp_path / 'exp'
  cmd = [sys.executable, os.path.join(EXP, 'run.py'), f'--workdir={work}', f'--model={model}',
         f'--data={data}', '--questions=3', '--seeds=0,1']
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  rows = list(csv.DictReader(open(work / 'results.csv')))
  assert [(x['method'], x['seed']) for x in rows] == [
      ('direct', '0'), ('few_shot', '0'), ('cot', '0'), ('sampled_cot', '0'),
      ('self_consistency@3', '0'), ('sampled_cot', '1'), ('self_consistency@3', '1')]
  assert all(x['questions'] == '3' and x['status'] == 'done' for x in rows)
  cot = rows[2]
  assert float(cot['cot_vs_few_shot.n']) == 3 and cot['cot_vs_direct.lo'] != ''
  records = [json.loads(x) for x in open(work / 'records' / 'self_consistency@3.seed1.jsonl')]
  assert records[0]['method'] == 'self_consistency@3' and len(records) == 4
  assert all(len(x['votes']) == 3 for x in records[1:])
  few = [json.loads(x) for x in open(work / 'records' / 'few_shot.seed0.jsonl')][1]
  assert few['prompt'].count('The answer is') == 8 and 'There are 15 trees' in few['prompt']
  assert 'So there must have been' not in few['prompt']   # standard prompting: answers alone
  ex = json.load(open(work / 'examples.json'))
  assert 'sister' in ex['question'] and ex['target'] == '67' and len(ex['votes']) == 3
  # A rerun asks nothing again: every (method, seed) comes from its records.
  stamp = {p: os.path.getmtime(p) for p in (work / 'records').iterdir()}
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  assert stamp == {p: os.path.getmtime(p) for p in (work / 'records').iterdir()}
  exp = trials.load_experiment(os.path.join(EXP, 'config.py'))
  out = render.render(exp, render.read_csv(str(work / 'results.csv')), None)
  verdict = {(f['claim'], f['where']): f for f in out['claims']}
  assert len(verdict) == 6 and out['seeds'] == 2   # two claims per seed of the sampled rows
  assert all(f['n'] == 3 for f in out['claims'])
  assert '\n'.join(exp.module._examples(EXP)) in out['block']   # the published example's block
  shown = '\n'.join(exp.module._examples(str(work)))
  assert "The seed's example" in shown and 'half my age' in shown and 'votes' in shown

"""The human-feedback walk-through of docs/serving.md, run command by command as written: items from the
SFT run, two labelers, the server, the labeling (through the HTTP API, as the world's gold
labeler would rank), stats, export, a reward model on the export, PPO on that reward model, and
the PPO run served through the OpenAI API.

Only these changes to the written lines: `python` is this interpreter, `runs/demo` is a copy of
the tiny `pipeline_dirs` runs (base, sft, reward), `configs/` is a link to the repository's,
--from_world is smaller and the port free, and the training commands get extra --config.*
overrides appended (never edits of what is written) so that they take seconds."""
import contextlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from conftest import ROOT
from servers import free_port, running


def walkthrough() -> str:
  """The walk-through block: the first shell block under docs/serving.md's title."""
  text = open(os.path.join(ROOT, 'docs', 'serving.md')).read()
  block = re.search(r'# People in the loop[^\n]*\n.*?```\n(.*?)```', text, re.S)
  assert block, 'docs/serving.md has no "# People in the loop" code block'
  lines = [l.split('#')[0].rstrip() for l in block.group(1).replace('\\\n', ' ').splitlines()]
  return '\n'.join(l for l in lines if l.startswith('python -m lmresearch.'))


# 20 questions instead of 200 (sampling and labeling 200 x 4 responses would take minutes); with
# 20, the reward run's held-out share is raised below so that it fills one eval batch.
ITEMS = 20

# Appended to the training commands: the tiny pipeline's model (context 160) and seconds-sized runs.
REWARD_EXTRA = ['--config.train.steps=2', '--config.train.batch_size=4',
                '--config.data.val_fraction=0.2', '--config.train.eval_every=2',
                '--config.train.eval_batches=1', '--config.train.log_every=1',
                '--config.checkpoint.every=2', '--config.reward.norm_samples=4',
                '--config.reward.norm_max_new_tokens=8']
PPO_EXTRA = ['--config.train.steps=2', '--config.train.batch_size=4', '--config.train.eval_every=2',
             '--config.train.log_every=1', '--config.checkpoint.every=2', '--config.data.seq_len=96',
             '--config.data.synthetic.num_docs=40', '--config.rl.max_prompt_len=128',
             '--config.rl.max_new_tokens=16', '--config.rl.eval_prompts=4']


def commands(port: int) -> list[list[str]]:
  """The walk-through's command lines as argv lists, `python` -> this interpreter."""
  text = walkthrough()
  for old, new in (('--from_world=200', f'--from_world={ITEMS}'), ('--port=8000', f'--port={port}')):
    assert text.count(old) == 1, old
    text = text.replace(old, new)
  out = []
  for line in text.strip().splitlines():
    argv = shlex.split(line)
    assert argv[0] == 'python', line
    out.append([sys.executable] + argv[1:])
  return out


def env() -> dict:
  return {**os.environ, 'PYTHONPATH': ROOT,
          'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}


def run(argv, cwd, timeout=600) -> str:
  """Runs one command to completion; its stdout (the test fails with its output otherwise)."""
  start = time.time()
  p = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
  shown = ' '.join(argv[1:])
  print(f'{time.time() - start:5.1f} s  python {shown}')
  assert p.returncode == 0, f'`python {shown}` exited {p.returncode}:\n{p.stdout}\n{p.stderr}'
  return p.stdout


@contextlib.contextmanager
def serving(argv, cwd, port):
  """The server command running until the block ends: yields its URL once it answers."""
  with running(argv, port, cwd / f'serve-{port}.log', cwd=cwd, env=env()) as (url, _):
    yield url


def label_as_gold(url: str, token: str, items: dict) -> int:
  """Ranks every item the server hands this labeler as the world's gold labeler would: each
  displayed response mapped back to its gold quality, best first, equal qualities tied (they are
  next to each other in such a ranking). Returns how many were submitted."""
  h = {'Authorization': f'Bearer {token}'}
  n = 0
  with httpx.Client(base_url=url, headers=h, timeout=60) as client:
    while True:
      item = client.get('/api/label/next').json()
      if item['item_id'] is None:
        assert item['left'] == 0
        return n
      responses, gold = items[item['item_id']]
      assert sorted(item['responses']) == sorted(responses)
      by_text = {}
      for r, g in zip(responses, gold):
        by_text.setdefault(r, []).append(g)   # equal texts: each display slot takes one
      # Gold first; where gold ties, both labelers prefer the longer reply (a tiny model's
      # replies are all equally degenerate to the gold labeler, and a reward model needs pairs).
      q = [(by_text[r].pop(), len(r)) for r in item['responses']]
      ranking = sorted(range(len(q)), key=lambda p: (-q[p][0], -q[p][1]))
      ties = [[a, b] for a, b in zip(ranking, ranking[1:]) if q[a] == q[b]]
      r = client.post('/api/label/submit', json={'item_id': item['item_id'], 'ranking': ranking,
                                                  'ties': ties, 'seconds': 3.0})
      assert r.status_code == 200, r.text
      n += 1


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(pipeline_dirs, tmp_path):
  from lmresearch.data.formats import read_rankings
  (tmp_path / 'runs').mkdir()
  shutil.copytree(pipeline_dirs, tmp_path / 'runs' / 'demo')   # base, sft (and reward)
  os.symlink(os.path.join(ROOT, 'configs'), tmp_path / 'configs')
  create, add_alice, add_bob, _, stats, export, reward, ppo, serve_again = commands(8000)
  assert serve_again[:4] == commands(8000)[3][:4]

  out = run(create, tmp_path)
  assert f'added {ITEMS} items of 4 responses' in out
  tokens = [run(add, tmp_path).strip().splitlines()[-1] for add in (add_alice, add_bob)]
  assert all(re.fullmatch(r'[\w-]{20,}', t) for t in tokens), tokens

  with contextlib.closing(sqlite3.connect(tmp_path / 'labels.sqlite')) as db:
    items = {i: (json.loads(r), json.loads(g)) for i, r, g in
             db.execute('SELECT id, responses, gold FROM items')}
  assert len(items) == ITEMS and all(len(r) == 4 and g is not None for r, g in items.values())

  port = free_port()
  with serving(commands(port)[3], tmp_path, port) as url:
    assert [label_as_gold(url, t, items) for t in tokens] == [ITEMS, ITEMS]

  out = run(stats, tmp_path)
  assert f'{ITEMS} items ({ITEMS} fully labeled), 2 labelers, {2 * ITEMS} submissions' in out
  # tau-b is undefined ('-') on items whose responses are all equally good (a tiny model's
  # replies are all degenerate); pairwise agreement counts tied pairs too.
  m = re.search(r'inter-labeler agreement \((\d+) labeler pairs.*\): pairwise ([\d.]+), '
                r'Kendall tau-b (\S+)', out)
  assert m and int(m[1]) == ITEMS and m[2] == '1.000' and m[3] in ('1.000', '-'), out
  m = re.search(r'agreement with the gold order \((\d+) submissions\): pairwise ([\d.]+), '
                r'Kendall tau-b (\S+)', out)
  assert m and int(m[1]) == 2 * ITEMS, out   # below 1 where they split what gold ties

  out = run(export, tmp_path)
  assert f'wrote {ITEMS} ranking lines to rankings.jsonl' in out
  lines = [json.loads(x) for x in open(tmp_path / 'rankings.jsonl')]
  read = read_rankings(str(tmp_path / 'rankings.jsonl'))
  assert len(lines) == len(read) == ITEMS and sorted(x['item_id'] for x in lines) == sorted(items)
  for line, got in zip(lines, read):
    assert sorted(line['labelers']) == ['alice', 'bob']
    responses, gold = items[line['item_id']]
    assert sorted(got['responses']) == sorted(responses)
    # best first as both labelers ranked (gold, then length), every pair they tied kept tied
    # (the reward stage reads ties pairwise)
    q = [(g, len(r)) for g, r in zip(line['gold'], got['responses'])]
    assert q == sorted(q, reverse=True)
    assert sorted(map(tuple, got['ties'])) == [(i, j) for i in range(4) for j in range(i + 1, 4)
                                               if q[i] == q[j]]

  run(reward + REWARD_EXTRA, tmp_path)
  rm = tmp_path / 'runs' / 'rm_human'
  cfg = json.load(open(rm / 'config.json'))
  assert cfg['stage'] == 'reward'
  assert (cfg['data']['source'], cfg['data']['path']) == ('jsonl', 'rankings.jsonl')
  metrics = [json.loads(x) for x in open(rm / 'metrics.jsonl')]
  assert any(r.get('step') == 2 and 'eval/reward/loss' in r for r in metrics)
  assert (rm / 'checkpoints' / '2').is_dir() and (rm / 'reward_norm.json').exists()

  run(ppo + PPO_EXTRA, tmp_path)
  pp = tmp_path / 'runs' / 'demo' / 'ppo_human'
  assert json.load(open(pp / 'config.json'))['reward_from'] == 'runs/rm_human'
  assert any(r.get('step') == 2 and 'ppo/reward_mean' in r
             for r in map(json.loads, open(pp / 'metrics.jsonl')))
  assert (pp / 'checkpoints' / '2').is_dir()

  # The PPO run is one of the models `serve --workdir=runs/demo` serves.
  import openai
  port = free_port()
  with serving(commands(port)[3], tmp_path, port) as url:
    client = openai.OpenAI(base_url=f'{url}/v1', api_key='x', max_retries=0, timeout=120)
    assert 'ppo_human' in [m.id for m in client.models.list()]
    r = client.chat.completions.create(
        model='ppo_human', messages=[{'role': 'user', 'content': 'What does the owl eat?'}],
        max_tokens=8, temperature=1.0, seed=0)
    assert r.choices[0].message.role == 'assistant' and r.usage.completion_tokens >= 1
    assert isinstance(r.choices[0].message.content, str) and r.choices[0].message.content

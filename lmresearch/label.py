"""Human rankings for the reward model: make items, add labelers, follow progress, export.

  python -m lmresearch.label create --workdir=runs/demo/sft --prompts=PROMPTS.jsonl --k=4 --db=labels.sqlite [--per_item=2]
  python -m lmresearch.label create --from_world=200 --workdir=runs/demo/sft --k=4 --db=labels.sqlite
  python -m lmresearch.label add-labeler alice --db=labels.sqlite      # prints alice's access token once
  python -m lmresearch.label stats --db=labels.sqlite                 # progress, agreement
  python -m lmresearch.label export --db=labels.sqlite --out=rankings.jsonl [--merge=ranked_pairs|none]

`create` samples K responses per prompt from the chat run in --workdir (PROMPTS.jsonl lines are
{"prompt": ...}; a line with an "answer" also gets each response's gold quality) or, with
--from_world=N, for N held-out questions of the embedded world the run was trained on, with each
response's gold quality (what the world's noise-free labeler thinks of it). People rank the items
on the /label page of `python -m lmresearch.serve --db=...`. `export` writes the ranking JSONL
the reward stage reads (config.data.source=jsonl): several labelers' rankings of one item merged
into one by ranked pairs (or, --merge=none, one line each).
"""
from __future__ import annotations

import itertools
import json
import os
import sys
from typing import Optional

from absl import app, flags

from lmresearch.runtime import cli_errors, fail, parse_flags

FLAGS = flags.FLAGS
COMMANDS = ('create', 'add-labeler', 'stats', 'export')
WORLD_SALT = 7   # held-out world questions of their own (formats.synthetic uses salts 1..4)


def define_flags() -> None:
  """The CLI's flags, defined when it runs (tests import the functions below)."""
  flags.DEFINE_string('db', None, 'The label store (SQLite file; created if missing).')
  flags.DEFINE_string('workdir', None, 'create: the chat run (SFT or later) that writes the '
                      'responses.')
  flags.DEFINE_string('prompts', None, 'create: a JSONL file of {"prompt": ...} lines.')
  flags.DEFINE_integer('from_world', 0, 'create: this many held-out questions of the embedded '
                       'world instead of --prompts, each response with its gold quality.')
  flags.DEFINE_integer('k', 4, 'create: responses per prompt (2..16).')
  flags.DEFINE_integer('per_item', 1, 'create: labelers who rank each item.')
  flags.DEFINE_float('temperature', 1.0, 'create: sampling temperature (responses should differ).')
  flags.DEFINE_integer('max_new_tokens', 128, 'create: tokens per response at most.')
  flags.DEFINE_integer('seed', 0, 'create: sampling seed.')
  flags.DEFINE_integer('batch_size', 64, 'create: rows (prompt x response) per sampling batch.')
  flags.DEFINE_string('out', None, 'export: the ranking JSONL to write.')
  flags.DEFINE_enum('merge', 'ranked_pairs', ['ranked_pairs', 'none'], 'export: several '
                    "rankings of one item merged by Tideman's ranked pairs, or one line each.")


# ---- create ----------------------------------------------------------------------------------
def read_prompts(path: str) -> list[dict]:
  """{"prompt": str, "answer"?: str} lines; anything else is an error naming file and line."""
  from lmresearch.data.sources import read_jsonl
  from lmresearch.core.errors import ConfigError
  out = []
  for n, obj in read_jsonl(path):
    if not isinstance(obj.get('prompt'), str) or not obj['prompt'].strip():
      raise ConfigError(f'{path}:{n}: expected {{"prompt": "..."}} (a non-empty string).')
    answer = obj.get('answer')
    if answer is not None and not isinstance(answer, (str, int, float)):
      raise ConfigError(f'{path}:{n}: "answer" must be a string or a number.')
    out.append({'prompt': obj['prompt'], 'answer': None if answer is None else str(answer).strip()})
  if not out:
    raise ConfigError(f'{path}: no prompts in it.')
  return out


def world_prompts(workdir: str, n: int) -> list[dict]:
  """n held-out questions of the world the run in `workdir` was trained on, with answers."""
  from lmresearch.training import config as lmc
  from lmresearch.data import world as world_lib
  synthetic = lmc.load(workdir).data.synthetic
  w = world_lib.World(synthetic.world_seed)
  rng = world_lib.split_rng(synthetic.world_seed, 'test', salt=WORLD_SALT)
  out = []
  for _ in range(n):
    q, ideal, key = w.question(rng, synthetic.question_arithmetic_share)
    out.append({'prompt': q, 'answer': key, 'ideal': ideal, 'world_seed': synthetic.world_seed})
  return out


def sample_items(workdir: str, prompts: list[dict], k: int, *, temperature: float = 1.0,
                 max_new_tokens: int = 128, seed: int = 0, batch_size: int = 64) -> list[dict]:
  """K sampled responses per prompt from the chat run in `workdir`, as store items; a prompt
  with an "answer" gets each response's gold quality (`labeler.gold`)."""
  import jax
  import numpy as np

  from lmresearch.core import parallel
  from lmresearch.stages import runs
  from lmresearch.generation import batched
  from lmresearch.text import tokenizers
  from lmresearch.data.world_labeler import gold

  run = runs.load(workdir, chat=True)
  print(f'{workdir}: checkpoint step {run.step}; sampling {len(prompts)} x {k} responses',
        file=sys.stderr, flush=True)
  rows = [tokenizers.generation_prompt(run.tok, p['prompt']) for p in prompts for _ in range(k)]
  texts, finished = [], []
  key = jax.random.PRNGKey(seed)
  for n, start in enumerate(range(0, len(rows), batch_size)):
    with run.active():
      out = batched.generate(run.model, run.params, rows[start:start + batch_size],
                              max_new_tokens=max_new_tokens, rng=jax.random.fold_in(key, n),
                              temperature=temperature, stop_ids=run.tok.stop_ids,
                              pad_id=run.tok.pad_id)
    texts += batched.decode_completions(run.tok, out['completions'])
    finished += np.asarray(parallel.fetch(out['finished'])).tolist()
  items = []
  for i, p in enumerate(prompts):
    responses, done = texts[i * k:(i + 1) * k], finished[i * k:(i + 1) * k]
    meta = {'workdir': workdir, 'step': run.step, 'temperature': temperature, 'seed': seed,
            'finished': [bool(f) for f in done]}
    meta.update({m: p[m] for m in ('answer', 'ideal', 'world_seed') if p.get(m) is not None})
    g = None
    if p.get('answer'):
      g = [gold(r, p['prompt'], p['answer'], bool(f)) for r, f in zip(responses, done)]
    items.append({'prompt': p['prompt'], 'responses': responses, 'gold': g, 'meta': meta})
  return items


def create(db: str, workdir: str, *, prompts: Optional[str] = None, from_world: int = 0,
           k: int = 4, per_item: int = 1, **sampling) -> list[int]:
  """Samples the items and adds them to the store; returns their ids."""
  from lmresearch.data.formats import MAX_K
  from lmresearch.web.store import Store
  if bool(prompts) == bool(from_world):
    raise ValueError('give exactly one of --prompts=FILE.jsonl or --from_world=N.')
  if from_world < 0:
    raise ValueError(f'--from_world={from_world}: give a positive number of questions.')
  if not 2 <= k <= MAX_K:
    raise ValueError(f'--k={k}: a ranking has 2..{MAX_K} responses.')
  if per_item < 1:
    raise ValueError(f'--per_item={per_item}: give at least 1 labeler per item.')
  store = Store(db)   # opened first: a bad --db fails before minutes of sampling
  todo = read_prompts(prompts) if prompts else world_prompts(workdir, from_world)
  items = sample_items(workdir, todo, k, **sampling)
  return store.add_items(items, per_item=per_item,
                         source=f'world:{from_world}' if from_world else prompts)


# ---- stats -----------------------------------------------------------------------------------
def _num(x: Optional[float], digits: int = 3) -> str:
  return '-' if x is None else f'{x:.{digits}f}'


def stats_text(store) -> str:
  """Progress per labeler and agreement, as lines to print."""
  from lmresearch.web import rankings
  s = store.stats()
  lines = [f'{store.path}: {s["items"]} items ({s["complete_items"]} fully labeled), '
           f'{s["labelers"]} labelers, {s["submissions"]} submissions, {s["in_progress"]} in '
           'progress']
  for row in s['per_labeler']:
    lines.append(f'  {row["name"]}: {row["done"]} done, {row["left"]} left')
  a = rankings.agreement(store.submissions())
  lines.append(f'inter-labeler agreement ({a["pairs"]} labeler pairs on shared items): pairwise '
               f'{_num(a["pairwise"])}, Kendall tau-b {_num(a["tau"])} (InstructGPT: ~0.73 '
               'pairwise)' if a['pairs'] else 'inter-labeler agreement: no item ranked by two '
               'labelers yet (create with --per_item=2 to measure it)')
  if a['gold_n']:
    lines.append(f'agreement with the gold order ({a["gold_n"]} submissions): pairwise '
                 f'{_num(a["gold_pairwise"])}, Kendall tau-b {_num(a["gold_tau"])}')
  if s.get('votes'):
    lines.append(f'arena: {s["battles"]} battles, {s["votes"]} votes')
  return '\n'.join(lines)


# ---- export ----------------------------------------------------------------------------------
def _line(first: dict, order: list[int], lv: list[int], subs: list[dict]) -> dict:
  """One ranking JSONL line: responses in `order` (best first); ties: every pair of positions
  sharing a level (the reward stage reads ties pairwise, not transitively)."""
  place = {r: n for n, r in enumerate(order)}
  ties = sorted(sorted([place[i], place[j]]) for i, j in
                itertools.combinations(range(len(order)), 2) if lv[i] == lv[j])
  flags = {}
  for s in subs:
    for i, labels in s['flags'].items():
      flags.setdefault(str(place[int(i)]), set()).update(labels)
  line = {'prompt': first['prompt'], 'responses': [first['responses'][i] for i in order],
          'ties': ties, 'item_id': first['item_id'],
          'labelers': [s['labeler'] for s in subs],
          'flags': {p: sorted(v) for p, v in sorted(flags.items(), key=lambda kv: int(kv[0]))}}
  if first['gold'] is not None:
    line['gold'] = [first['gold'][i] for i in order]
  return line


def export_lines(store, merge: str = 'ranked_pairs') -> list[dict]:
  """The ranking JSONL lines of every submitted item (items nobody ranked are left out)."""
  from lmresearch.web import rankings
  if merge not in ('ranked_pairs', 'none'):
    raise ValueError(f'--merge={merge!r}: give ranked_pairs or none.')
  out = []
  for _, group in itertools.groupby(store.submissions(), key=lambda s: s['item_id']):
    subs = list(group)
    lvs = [rankings.levels(s['ranking'], s['ties']) for s in subs]
    if merge == 'none':
      out += [_line(s, s['ranking'], lv, [s]) for s, lv in zip(subs, lvs)]
      continue
    if len(subs) == 1:
      order, merged = subs[0]['ranking'], lvs[0]
    else:
      order, ties = rankings.merge_ranked_pairs(lvs, len(subs[0]['responses']))
      merged = rankings.levels(order, ties)
    out.append(_line(subs[0], order, merged, subs))
  return out


def export(db: str, out: str, merge: str = 'ranked_pairs') -> tuple[int, dict]:
  """Writes the ranking JSONL; returns (lines written, agreement)."""
  from lmresearch.core import fileio
  from lmresearch.web import rankings
  from lmresearch.web.store import Store
  store = Store(db)
  lines = export_lines(store, merge)
  fileio.write_text(out, ''.join(json.dumps(x, ensure_ascii=False) + '\n' for x in lines))
  return len(lines), rankings.agreement(store.submissions())


# ---- the command line ------------------------------------------------------------------------
def main(argv):
  from lmresearch.web.store import SchemaError, Store, StoreError
  args = argv[1:]
  if not args or args[0] not in COMMANDS:
    fail(f'give a command: {", ".join(COMMANDS)} (e.g. `python -m lmresearch.label stats '
         '--db=labels.sqlite`).')
  command, rest = args[0], args[1:]
  if not FLAGS.db:
    fail('--db is required (the label store, an SQLite file).')
  if command != 'add-labeler' and rest:
    fail(f'unexpected arguments {rest} after {command}.')
  if command in ('stats', 'export') and not os.path.exists(FLAGS.db):
    fail(f'--db={FLAGS.db}: no such label store (`create` or `add-labeler` makes one).')
  with cli_errors(SchemaError, StoreError, ValueError):
    if command == 'add-labeler':
      if len(rest) != 1:
        fail('add-labeler takes one name: python -m lmresearch.label add-labeler NAME --db=...')
      token = Store(FLAGS.db).add_labeler(rest[0])
      print(f'labeler {rest[0]!r} added. Their access token (shown only now; paste it into the '
            f'/label page):\n{token}')
    elif command == 'create':
      if not FLAGS.workdir:
        fail('--workdir is required (the chat run that writes the responses).')
      from lmresearch.runtime import setup_jax
      setup_jax()
      ids = create(FLAGS.db, FLAGS.workdir, prompts=FLAGS.prompts, from_world=FLAGS.from_world,
                   k=FLAGS.k, per_item=FLAGS.per_item, temperature=FLAGS.temperature,
                   max_new_tokens=FLAGS.max_new_tokens, seed=FLAGS.seed,
                   batch_size=FLAGS.batch_size)
      print(f'{FLAGS.db}: added {len(ids)} items of {FLAGS.k} responses (ids {ids[0]}..{ids[-1]}), '
            f'each for {FLAGS.per_item} labeler(s).')
    elif command == 'stats':
      print(stats_text(Store(FLAGS.db)))
    else:
      if not FLAGS.out:
        fail('--out is required (the ranking JSONL to write).')
      n, a = export(FLAGS.db, FLAGS.out, FLAGS.merge)
      agree = (f'inter-labeler pairwise agreement {_num(a["pairwise"])} over {a["pairs"]} pairs'
               if a['pairs'] else 'no item ranked twice')
      print(f'wrote {n} ranking lines to {FLAGS.out} (merge={FLAGS.merge}); {agree}.')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=parse_flags)

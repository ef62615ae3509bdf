"""Evaluation tasks: what a model is asked, and how its answers are judged.

  world_arithmetic  the embedded world's 1-, 2- and 3-step word problems, drawn by a held-out rng;
                    exact match on the final number, accuracy overall and per step count
  world_facts       questions about the world's creatures and fruits; correct if the key word is
                    in the first sentence (the facts are the ones the model was trained on: this
                    measures recall)
  gsm8k             GSM8K test lines; exact match on the final number ('#### N' or 'The answer is
                    N', commas and $ stripped)
  perplexity        held-out text -> mean loss per token and bits per byte
  reward_accuracy   a reward model's pairwise accuracy on held-out rankings
  win_rate          model A vs model B answering the same prompts: a reward model judges each pair
                    (ties count half) and, where the prompt has an exact answer, so does that answer

`run_task(task, run, ...)` -> (summary, records): the headline numbers, and one record per example
(question tasks: prompt, output, prediction, target, correct, ...). Generation goes through the
KV-cache sampler, `batch_size` rows per call, greedy unless the method samples.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmresearch import config as lmc
from lmresearch import sampling, tokenizers
from lmresearch.data import formats, packing
from lmresearch.data import world as world_lib
from lmresearch.data.sources import read_jsonl
from lmresearch.evaluation import prompting
from lmresearch.answers import matches, predict
from lmresearch.errors import ConfigError
from lmresearch.runs import Run, load  # noqa: F401  (re-exported: every task takes a Run)
from lmresearch.stages.reward import score

TASKS = ('world_arithmetic', 'world_facts', 'gsm8k', 'perplexity', 'reward_accuracy', 'win_rate')
EVAL_SALT = 5         # the world's evaluation rng streams, apart from every training stream
POOL_SIZE = 200       # exemplars drawn for few-shot prompts over the world
BASE_STOPS = ('\n\n', '\n' + world_lib.QUESTION_PREFIX)   # a base model moving on to a new question
MIXED_INSTRUCTION = 'Answer the question. For a word problem, end with "The answer is N."'


# ---- tasks ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Task:
  """examples: question tasks {'question', 'target', task fields...}; perplexity {'text'};
  reward_accuracy rankings {'prompt', 'responses' (best first), 'ties'}."""
  name: str
  examples: list
  source: str = 'the embedded world'
  pool: Sequence[prompting.Exemplar] = ()       # few-shot exemplars
  cot_pool: Sequence[prompting.Exemplar] = ()   # chain-of-thought exemplars, if not the pool
  instruction: str = prompting.ARITHMETIC_INSTRUCTION


def load_task(name: str, data: Optional[str] = None, world_seed: int = 0,
              limit: Optional[int] = None) -> Task:
  """A task's examples: from `data` (a file) or else the embedded world. Files are read here, so
  a bad line stops before any model loads."""
  task = _load_task(name, data, world_seed, limit)
  if not task.examples:
    raise ConfigError(f'task {name}: no examples in {task.source} (--limit={limit}).')
  return task


def _load_task(name, data, world_seed, limit) -> Task:
  world = world_lib.World(world_seed)
  test = world_lib.split_rng(world_seed, 'test', EVAL_SALT)
  train = world_lib.split_rng(world_seed, 'train', EVAL_SALT)
  n = 300 if limit is None else limit
  if name == 'world_arithmetic':
    # 1, 2, 3 steps in turn, so that any prefix (--limit) covers every step count evenly.
    problems = [world.problem(test, i % 3 + 1) for i in range(n)]
    examples = [{'question': p.question, 'target': str(p.answer), 'num_steps': p.num_steps}
                for p in problems]
    pool = [prompting.Exemplar(p.question, p.solution, p.direct)
            for p in (world.problem(train) for _ in range(POOL_SIZE))]
    return Task(name, examples, pool=pool)
  if name == 'world_facts':
    # Few distinct questions exist (one per creature and attribute); each is asked once.
    seen = {}
    for q, ideal, key in (world.fact_question(test) for _ in range(2000)):
      seen.setdefault(q, {'question': q, 'target': key, 'ideal': ideal})
    pool = [prompting.from_solution(*world.fact_question(train)[:2])
            for _ in range(POOL_SIZE)]
    return Task(name, list(seen.values())[:limit], pool=pool,
                instruction=prompting.FACT_INSTRUCTION)
  if name == 'gsm8k' or (name == 'win_rate' and data):
    data = data or os.path.join(lmc.DATA_DIR, 'gsm8k', 'test.jsonl')
    examples = [{'question': p['prompt'], 'target': p['answer'],
                 **({'num_steps': p['num_steps']} if p['num_steps'] else {})}
                for p in formats.read_prompts(data)[:limit]]
    pool = _gsm8k_train_pool(data) if name == 'gsm8k' else prompting.GSM8K_COT_EXEMPLARS
    return Task(name, examples, data, pool, prompting.GSM8K_COT_EXEMPLARS)
  if name == 'win_rate':   # the world's question mix: word problems and facts
    examples = [{'question': q, 'target': key, 'ideal': ideal}
                for q, ideal, key in (world.question(test) for _ in range(n))]
    pool = [prompting.from_solution(*world.question(train)[:2]) for _ in range(POOL_SIZE)]
    return Task(name, examples, pool=pool, instruction=MIXED_INSTRUCTION)
  if name == 'perplexity':
    if not data:
      return Task(name, [{'text': t} for t in world_lib.corpus(world_seed, n, 'test')])
    return Task(name, [{'text': t} for t in _texts(data)[:limit]], data)
  if name == 'reward_accuracy':
    if not data:   # noise-free, every candidate of a question, all five degenerate replies
      return Task(name, [world.ranking(test, degenerate=len(world_lib.DEGENERATE)) for _ in range(n)])
    return Task(name, formats.read_rankings(data)[:limit], data)
  raise ConfigError(f'task {name!r}: expected one of {", ".join(TASKS)}.')


def _gsm8k_train_pool(test_path: str) -> list[prompting.Exemplar]:
  """Few-shot exemplars from GSM8K train.jsonl beside the test file, else the published 8."""
  path = os.path.join(os.path.dirname(test_path), 'train.jsonl')
  if not os.path.exists(path) or os.path.samefile(path, test_path):
    return list(prompting.GSM8K_COT_EXEMPLARS)
  chats = formats.read_chats(path)   # GSM8K lines become [question, worked solution]
  return [prompting.from_solution(c['messages'][0]['content'], c['messages'][1]['content'])
          for c in chats if len(c['messages']) == 2]


def _texts(path: str) -> list[str]:
  """A .jsonl file's "text" fields, or any other file as one document."""
  if path.endswith('.jsonl'):
    texts = []
    for n, obj in read_jsonl(path):
      if not isinstance(obj.get('text'), str):
        raise ConfigError(f'{path}:{n}: expected {{"text": str}}.')
      texts.append(obj['text'])
    return texts
  if not os.path.exists(path):
    raise ConfigError(f'{path}: no such file.')
  with open(path, encoding='utf-8') as f:
    return [f.read()]


# ---- generation -----------------------------------------------------------------------------

def generate(run: Run, prompts: Sequence[Sequence[int]], *, samples: int = 1,
             temperature: float = 0.0, seed: int = 0, batch_size: int = 32,
             max_new_tokens: int = 256) -> tuple[list[list[str]], list[list[bool]]]:
  """Each prompt answered `samples` times -> (texts, finished) per prompt, batch_size rows per
  sampler call. Generation is capped to what the longest prompt leaves of the context."""
  max_len = run.model.cfg.max_len
  for i, p in enumerate(prompts):
    if len(p) >= max_len:
      raise ValueError(f'example {i}: the prompt has {len(p)} tokens, which leaves no room in the '
                       f'model context of {max_len} tokens; lower --shots or pick a shorter '
                       'method.')
  new = min(max_new_tokens, max_len - max(map(len, prompts)))
  rows = [p for p in prompts for _ in range(samples)]
  tok, texts, finished = run.tok, [], []
  stops = () if run.chat else BASE_STOPS
  with run.active():
    for b, start in enumerate(range(0, len(rows), batch_size)):
      chunk = rows[start:start + batch_size]
      n = len(chunk)
      if len(rows) > batch_size:   # a short last batch is filled up: one shape, one compile
        chunk = chunk + chunk[:1] * (batch_size - n)
      out = sampling.generate(run.model, run.params, chunk, max_new_tokens=new,
                              rng=jax.random.fold_in(jax.random.PRNGKey(seed), b),
                              temperature=temperature, stop_ids=(tok.eos_id, tok.end_id),
                              pad_id=tok.pad_id)
      texts += sampling.decode_completions(tok, out['completions'][:n], stops)
      finished += np.asarray(out['finished'])[:n].tolist()
  group = lambda xs: [xs[i:i + samples] for i in range(0, len(xs), samples)]
  return group(texts), group(finished)


def answer_questions(task: Task, run: Run, *, method: str = 'direct',
                     shots: Optional[int] = None, temperature: float = 0.7, seed: int = 0,
                     batch_size: int = 32, max_new_tokens: int = 256) -> tuple[dict, list[dict]]:
  """A question task: prompt, generate (several samples and a vote for self-consistency), judge."""
  style, samples = prompting.parse_method(method)
  pool = task.cot_pool if style == 'cot' and task.cot_pool else task.pool
  if style in ('direct', 'instruction'):
    shots = 0
  elif shots is None:   # a task's own CoT exemplar set (GSM8K's published 8) is used whole
    shots = len(pool) if style == 'cot' and task.cot_pool else 4
  prompts = []
  for i, ex in enumerate(task.examples):   # exemplars drawn per question, never the question itself
    exemplars = prompting.select_exemplars(pool, shots, seed * 1_000_003 + i, [ex['question']])
    prompts.append(prompting.build_prompt(run.tok, ex['question'], style, exemplars,
                                          task.instruction, run.chat))
  outputs, finished = generate(run, prompts, samples=samples,
                               temperature=temperature if samples > 1 else 0.0, seed=seed,
                               batch_size=batch_size, max_new_tokens=max_new_tokens)
  records = []
  for ex, ids, outs, done in zip(task.examples, prompts, outputs, finished):
    target = ex['target']
    votes = [predict(o, target) for o in outs]
    pred = prompting.majority_vote(votes)
    k = votes.index(pred) if pred in votes else 0   # show the first sample that voted for it
    rec = {'prompt': run.tok.decode(ids), 'output': outs[k], 'prediction': pred, **ex,
           'correct': matches(pred, target) if target else None, 'finished': done[k]}
    if samples > 1:
      rec.update(samples=outs, votes=votes)
    records.append(rec)
  summary = {'task': task.name, 'method': method, 'shots': shots, **_accuracy(records),
             'unfinished': sum(not r['finished'] for r in records)}
  if samples > 1:
    summary['temperature'] = temperature
  return summary, records


def fewer_paths(summary: dict, records: list[dict], n: int) -> tuple[dict, list[dict]]:
  """Self-consistency@n from a self-consistency@N result (n < N): the vote of each question's
  first n sampled paths. The paths are independent draws, so this is the same estimator as
  sampling n afresh, at no cost. (`unfinished` stays the @N result's count.)"""
  out = []
  for r in records:
    votes, outs = r['votes'][:n], r['samples'][:n]
    pred = prompting.majority_vote(votes)
    k = votes.index(pred) if pred in votes else 0
    out.append({**r, 'samples': outs, 'votes': votes, 'prediction': pred, 'output': outs[k],
                'correct': matches(pred, r['target']) if r['target'] else None})
  return ({**summary, 'method': f'self_consistency@{n}', 'reused_paths_of': summary['method'],
           **_accuracy(out)}, out)


def _accuracy(records: list[dict]) -> dict:
  """Over the examples with a target: overall, and per step count where there is one."""
  judged = [r for r in records if r['correct'] is not None]
  mean = lambda rs: float(np.mean([r['correct'] for r in rs])) if rs else None
  out = {'num_examples': len(records), 'accuracy': mean(judged)}
  steps = sorted({r['num_steps'] for r in judged if r.get('num_steps')})
  if steps:
    out['accuracy_by_num_steps'] = {
        str(s): mean([r for r in judged if r.get('num_steps') == s]) for s in steps}
  return out


# ---- scoring --------------------------------------------------------------------------------

def perplexity(task: Task, run: Run, batch_size: int = 32) -> tuple[dict, list[dict]]:
  """Documents packed as [BOS] doc [EOS] into rows of the model's training length (no attention
  across documents); every token after a BOS is predicted once, EOS included. Bits per byte =
  total nats / (ln 2 * total UTF-8 bytes), comparable across tokenizers."""
  texts = [ex['text'] for ex in task.examples]
  tok = run.tok
  seq_len = run.config.data.seq_len if run.config is not None else run.model.cfg.max_len
  docs = [[tok.bos_id] + ids + [tok.eos_id] for ids in tok.encode_batch(texts)]
  tokens = np.concatenate([np.asarray(d, np.int32) for d in docs])
  doc_ids = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
  pad = -(len(tokens) - 1) % seq_len   # fill the last row; each pad its own doc, so never a target
  tokens = np.concatenate([tokens, np.full(pad, tok.pad_id, np.int32)])
  doc_ids = np.concatenate([doc_ids, len(docs) + np.arange(pad)])
  ds = packing.PackedDataset(tokens, doc_ids, seq_len)
  last = ds.num_windows - 1

  @jax.jit
  def token_nll(params, batch):
    logits = run.model.apply({'params': params}, batch['inputs'], batch['positions'],
                             batch['segment_ids']).astype(jnp.float32)
    target = jnp.take_along_axis(logits, batch['targets'][..., None], -1)[..., 0]
    return (jax.nn.logsumexp(logits, -1) - target) * batch['weights']

  rows, n_ids = run.batch_rows(batch_size), len(docs) + pad
  nats, counts = np.zeros(n_ids), np.zeros(n_ids)   # per document
  with run.active():
    for start in range(0, ds.num_windows, rows):
      idx = np.arange(start, start + rows)
      batch = ds.rows(np.minimum(idx, last))
      batch['weights'][idx > last] = 0   # filler rows
      nll = np.asarray(token_nll(run.params, batch)).ravel()
      # Row i predicts tokens i * seq_len + 1 ... (i + 1) * seq_len of the stream.
      owner = doc_ids[np.minimum(idx, last)[:, None] * seq_len + np.arange(1, seq_len + 1)].ravel()
      nats += np.bincount(owner, nll, n_ids)
      counts += np.bincount(owner, batch['weights'].ravel(), n_ids)
  sizes = [len(t.encode('utf-8')) for t in texts]
  records = [{'text': t, 'tokens': int(c), 'loss': n / max(c, 1),
              'bits_per_byte': n / (math.log(2) * max(b, 1))}
             for t, n, c, b in zip(texts, nats, counts, sizes)]
  total, count, size = nats.sum(), counts.sum(), sum(sizes)
  return {'task': task.name, 'num_documents': len(texts), 'tokens': int(count), 'bytes': size,
          'loss': total / count, 'perplexity': math.exp(total / count),
          'bits_per_byte': total / (math.log(2) * size)}, records


def reward_scores(rm: Run, prompts: Sequence[str], responses: Sequence[str],
                  batch_size: int = 32) -> np.ndarray:
  """The reward model's score of each (prompt, response) chat, minus the run's offset. Chats
  longer than the model context are cut to it."""
  max_len = rm.model.cfg.max_len
  ids = [tokenizers.render_reply(rm.tok, p, r)[0][:max_len] for p, r in zip(prompts, responses)]
  length = min(max_len, -(-max(map(len, ids)) // 64) * 64)   # one shape for every batch
  rows = rm.batch_rows(batch_size)
  fn = jax.jit(lambda params, tokens, mask: score(rm.model, params, tokens, mask, pool=rm.pool))
  out = []
  with rm.active():
    for start in range(0, len(ids), rows):
      chunk = ids[start:start + rows]
      tokens, mask = np.zeros((rows, length), np.int32), np.zeros((rows, length), np.int32)
      mask[:, 0] = 1   # filler rows hold one pad token
      for i, x in enumerate(chunk):
        tokens[i, :len(x)], mask[i, :len(x)] = x, 1
      out.append(np.asarray(fn(rm.params, tokens, mask))[:len(chunk)])
  return np.concatenate(out) - rm.offset


def reward_accuracy(task: Task, rm: Run, batch_size: int = 32) -> tuple[dict, list[dict]]:
  """Over every (non-tied) pair of every ranking: is the better response scored higher? Where the
  rankings name each response's kind (the embedded world's do), also per kind: the mean reward,
  and the accuracy over the pairs that kind is in."""
  flat = [(r['prompt'], resp) for r in task.examples for resp in r['responses']]
  scores = reward_scores(rm, [p for p, _ in flat], [x for _, x in flat], batch_size)
  records, at, by_kind = [], 0, {}
  for r in task.examples:
    s, n = scores[at:at + len(r['responses'])], len(r['responses'])
    kinds = r.get('kinds') or [None] * n
    for kind, x in zip(kinds, s):
      by_kind.setdefault(kind, []).append(float(x))
    ties = {tuple(sorted(t)) for t in r.get('ties', [])}
    for i in range(n):
      for j in range(i + 1, n):
        if (i, j) not in ties:
          records.append({'prompt': r['prompt'], 'chosen': r['responses'][i],
                          'rejected': r['responses'][j], 'chosen_kind': kinds[i],
                          'rejected_kind': kinds[j], 'chosen_reward': float(s[i]),
                          'rejected_reward': float(s[j]), 'correct': bool(s[i] > s[j])})
    at += n
  acc = lambda rs: float(np.mean([x['correct'] for x in rs])) if rs else None
  summary = {'task': task.name, 'num_rankings': len(task.examples), 'num_pairs': len(records),
             'accuracy': acc(records)}
  if None not in by_kind:
    bad = set(world_lib.DEGENERATE)
    real = [x for x in records if x['chosen_kind'] not in bad and x['rejected_kind'] not in bad]
    summary.update(
        accuracy_real_pairs=acc(real), num_real_pairs=len(real),
        by_kind={k: {'reward_mean': float(np.mean(v)), 'count': len(v),
                     'pair_accuracy': acc([x for x in records if k in (x['chosen_kind'], x['rejected_kind'])])}
                 for k, v in sorted(by_kind.items())})
  return summary, records


def win_rate(task: Task, a: Run, b: Run, judge: Run, **kw) -> tuple[dict, list[dict]]:
  """A against B on the same prompts: 1 for a win, 1/2 for a tie, 0 for a loss, judged by the
  reward model and (where there is a target) by the exact answer."""
  if b is None or judge is None:
    raise ConfigError('win_rate needs the other model (--other_workdir) and a reward model '
                      '(--reward_workdir).')
  summary_a, records = answer_questions(task, a, **kw)
  summary_b, records_b = answer_questions(task, b, **kw)
  questions = [ex['question'] for ex in task.examples]
  rewards = reward_scores(judge, questions * 2, [r['output'] for r in records + records_b],
                          kw.get('batch_size', 32)).reshape(2, -1)
  for r, r_b, score_a, score_b in zip(records, records_b, *rewards):
    same = r['output'] == r_b['output'] or bool(np.isclose(score_a, score_b))
    r.update(other_output=r_b['output'], other_prediction=r_b['prediction'],
             other_correct=r_b['correct'], reward=float(score_a), other_reward=float(score_b),
             win=_outcome(score_a, score_b, tie=same),
             exact_win=None if r['correct'] is None else
             _outcome(r['correct'], r_b['correct'], tie=r['correct'] == r_b['correct']))
  exact = [r['exact_win'] for r in records if r['exact_win'] is not None]
  return {'task': task.name, 'method': summary_a['method'], 'num_examples': len(records),
          'win_rate': float(np.mean([r['win'] for r in records])),
          'exact_win_rate': float(np.mean(exact)) if exact else None,
          'accuracy': summary_a['accuracy'], 'other_accuracy': summary_b['accuracy']}, records


def _outcome(a, b, tie: bool) -> float:
  return 0.5 if tie else float(a > b)


def run_task(task, run: Run, *, data: Optional[str] = None, limit: Optional[int] = None,
             method: str = 'direct', shots: Optional[int] = None, temperature: float = 0.7,
             seed: int = 0, batch_size: int = 32, max_new_tokens: int = 256,
             other: Optional[Run] = None, judge: Optional[Run] = None) -> tuple[dict, list[dict]]:
  """Evaluates `run` on a task (a name, or a Task from load_task) -> (summary, records).

  method: direct | instruction | few_shot | cot | self_consistency@N (question tasks)
  shots: exemplars per prompt (default 4; cot on GSM8K: the 8 published ones)
  temperature: self-consistency's sampling temperature (every other method is greedy)
  other, judge: win_rate's model B and reward model
  """
  if isinstance(task, str):
    world_seed = run.config.data.synthetic.world_seed if run.config is not None else 0
    task = load_task(task, data, world_seed, limit)
  kw = dict(method=method, shots=shots, temperature=temperature, seed=seed,
            batch_size=batch_size, max_new_tokens=max_new_tokens)
  if task.name == 'perplexity':
    summary, records = perplexity(task, run, batch_size)
  elif task.name == 'reward_accuracy':
    summary, records = reward_accuracy(task, run, batch_size)
  elif task.name == 'win_rate':
    summary, records = win_rate(task, run, other, judge, **kw)
  else:
    summary, records = answer_questions(task, run, **kw)
  return {**summary, 'data': task.source}, records

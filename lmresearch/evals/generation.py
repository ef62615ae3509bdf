"""Generation for evaluation: prompts -> answers with the KV-cache sampler, question tasks' prompting,
sampling and majority vote, and their accuracy (overall and per step count)."""
from __future__ import annotations

import dataclasses
import sys
from typing import Optional, Sequence

import jax
import numpy as np

from lmresearch.core import parallel
from lmresearch.generation import batched
from lmresearch.text.answers import matches, predict
from lmresearch.data import world as world_lib
from lmresearch.evals import prompting
from lmresearch.generation.stops import compile_stops as stop_table
from lmresearch.stages.runs import Run

MIN_ANSWER_ROOM = 48   # tokens a default number of exemplars must leave for the answer
BASE_STOPS = ('\n\n', '\n' + world_lib.QUESTION_PREFIX)   # a base model moving on to a new question


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
  table = stop_table(run.tok, stops, run.model.cfg.vocab_size)
  with run.active():
    for b, start in enumerate(range(0, len(rows), batch_size)):
      chunk = rows[start:start + batch_size]
      n = len(chunk)
      if len(rows) > batch_size:   # a short last batch is filled up: one shape, one compile
        chunk = chunk + chunk[:1] * (batch_size - n)
      out = batched.generate(run.model, run.params, chunk, max_new_tokens=new,
                              rng=jax.random.fold_in(jax.random.PRNGKey(seed), b),
                              temperature=temperature, stop_ids=tok.stop_ids,
                              pad_id=tok.pad_id, stop_table=table, share_prefix=True)
      texts += batched.decode_completions(tok, out['completions'][:n], stops)
      finished += np.asarray(parallel.fetch(out['finished']))[:n].tolist()
  group = lambda xs: [xs[i:i + samples] for i in range(0, len(xs), samples)]
  return group(texts), group(finished)


def answer_questions(task, run: Run, *, method: str = 'direct',
                     shots: Optional[int] = None, temperature: float = 0.7, seed: int = 0,
                     batch_size: int = 32, max_new_tokens: int = 256) -> tuple[dict, list[dict]]:
  """A question task: prompt, generate (several samples and a vote for self-consistency), judge."""
  style, samples = prompting.parse_method(method)
  pool = task.cot_pool if style == 'cot' and task.cot_pool else task.pool
  def build(k):   # exemplars drawn per question, never the question itself
    return [prompting.build_prompt(
        run.tok, ex['question'], style,
        prompting.select_exemplars(pool, k, seed * 1_000_003 + i, [ex['question']]),
        task.instruction, run.chat) for i, ex in enumerate(task.examples)]

  room = run.model.cfg.max_len - MIN_ANSWER_ROOM
  skipped = []
  if shots is None and style not in ('direct', 'instruction'):
    # A question that leaves no room to answer even without exemplars is skipped and counted
    # (GSM8K's longest questions on a small model), rather than stopping the whole evaluation.
    fits = [len(p) <= room for p in build(0)]
    skipped = [ex for ex, ok in zip(task.examples, fits) if not ok]
    if skipped:
      task = dataclasses.replace(task, examples=[ex for ex, ok in zip(task.examples, fits) if ok])
      print(f'[evaluate] {len(skipped)} of {len(skipped) + len(task.examples)} questions skipped: '
            f'alone they leave under {MIN_ANSWER_ROOM} tokens to answer in the model context of '
            f'{run.model.cfg.max_len} tokens (accuracy is over the rest).', file=sys.stderr,
            flush=True)
      if not task.examples:
        raise ValueError(f'task {task.name}: no question fits the model context of '
                         f'{run.model.cfg.max_len} tokens.')
  if style in ('direct', 'instruction'):
    shots = 0
  elif shots is None:   # a task's own CoT exemplar set (GSM8K's published 8) is used whole...
    default = len(pool) if style == 'cot' and task.cot_pool else 4
    shots = default   # ...or as many exemplars as leave room to answer in the model's context
    while shots > 0 and max(map(len, build(shots))) > room:
      shots -= 1
    if shots < default:
      print(f'[evaluate] {shots} exemplars per prompt: {default} would not leave '
            f'{MIN_ANSWER_ROOM} tokens to answer in the model context of {run.model.cfg.max_len} '
            'tokens (--shots sets the number).', file=sys.stderr, flush=True)
  prompts = build(shots)
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
  summary = {'task': task.name, 'method': method, 'shots': shots, **accuracy(records),
             'unfinished': sum(not r['finished'] for r in records)}
  if skipped:
    summary['skipped_too_long'] = len(skipped)
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
           **accuracy(out)}, out)


def accuracy(records: list[dict]) -> dict:
  """Over the examples with a target: overall, and per step count where there is one."""
  judged = [r for r in records if r['correct'] is not None]
  mean = lambda rs: float(np.mean([r['correct'] for r in rs])) if rs else None
  out = {'num_examples': len(records), 'accuracy': mean(judged)}
  steps = sorted({r['num_steps'] for r in judged if r.get('num_steps')})
  if steps:
    out['accuracy_by_num_steps'] = {
        str(s): mean([r for r in judged if r.get('num_steps') == s]) for s in steps}
  return out

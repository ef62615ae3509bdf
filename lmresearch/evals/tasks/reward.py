"""A reward model's pairwise accuracy on held-out rankings (and, where the rankings name each
response's kind, per kind)."""
from __future__ import annotations

import numpy as np

from lmresearch.data import formats
from lmresearch.data import world as world_lib
from lmresearch.evals.scoring import reward_scores
from lmresearch.evals.tasks.base import Task, TaskKind, num_examples, world_streams


class RewardAccuracy(TaskKind):
  name = 'reward_accuracy'

  def examples(self, data, world_seed, limit):
    if not data:   # noise-free, every candidate of a question, all five degenerate replies
      world, test, _ = world_streams(world_seed)
      return Task(self.name, [world.ranking(test, degenerate=len(world_lib.DEGENERATE))
                              for _ in range(num_examples(limit))])
    return Task(self.name, formats.read_rankings(data)[:limit], data)

  def judge(self, task, run, *, other=None, reward_model=None, batch_size: int = 32, **kw):
    return reward_accuracy(task, run, batch_size)


def reward_accuracy(task: Task, rm, batch_size: int = 32) -> tuple[dict, list[dict]]:
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

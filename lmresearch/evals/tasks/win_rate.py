"""Model A against model B answering the same prompts: a reward model judges each pair (ties count
half) and, where the prompt has an exact answer, so does that answer. The prompts are the world's
question mix (word problems and facts), or a prompts file (e.g. GSM8K)."""
from __future__ import annotations

import numpy as np

from lmresearch.core.errors import ConfigError
from lmresearch.evals import generation, prompting
from lmresearch.evals.scoring import outcome, reward_scores
from lmresearch.evals.tasks.base import POOL_SIZE, Task, TaskKind, num_examples, world_streams
from lmresearch.evals.tasks.gsm8k import read_questions

MIXED_INSTRUCTION = 'Answer the question. For a word problem, end with "The answer is N."'


class WinRate(TaskKind):
  name = 'win_rate'

  def examples(self, data, world_seed, limit):
    if data:
      return Task(self.name, read_questions(data, limit), data, prompting.GSM8K_COT_EXEMPLARS,
                  prompting.GSM8K_COT_EXEMPLARS)
    world, test, train = world_streams(world_seed)   # the world's question mix
    examples = [{'question': q, 'target': key, 'ideal': ideal}
                for q, ideal, key in (world.question(test) for _ in range(num_examples(limit)))]
    pool = [prompting.from_solution(*world.question(train)[:2]) for _ in range(POOL_SIZE)]
    return Task(self.name, examples, pool=pool, instruction=MIXED_INSTRUCTION)

  def judge(self, task, run, *, other=None, reward_model=None, **kw):
    return win_rate(task, run, other, reward_model, **kw)


def win_rate(task: Task, a, b, judge, **kw) -> tuple[dict, list[dict]]:
  """A against B on the same prompts: 1 for a win, 1/2 for a tie, 0 for a loss, judged by the
  reward model and (where there is a target) by the exact answer."""
  if b is None or judge is None:
    raise ConfigError('win_rate needs the other model (--other_workdir) and a reward model '
                      '(--reward_workdir).')
  summary_a, records = generation.answer_questions(task, a, **kw)
  summary_b, records_b = generation.answer_questions(task, b, **kw)
  questions = [ex['question'] for ex in task.examples]
  rewards = reward_scores(judge, questions * 2, [r['output'] for r in records + records_b],
                          kw.get('batch_size', 32)).reshape(2, -1)
  for r, r_b, score_a, score_b in zip(records, records_b, *rewards):
    same = r['output'] == r_b['output'] or bool(np.isclose(score_a, score_b))
    r.update(other_output=r_b['output'], other_prediction=r_b['prediction'],
             other_correct=r_b['correct'], reward=float(score_a), other_reward=float(score_b),
             win=outcome(score_a, score_b, tie=same),
             exact_win=None if r['correct'] is None else
             outcome(r['correct'], r_b['correct'], tie=r['correct'] == r_b['correct']))
  exact = [r['exact_win'] for r in records if r['exact_win'] is not None]
  return {'task': task.name, 'method': summary_a['method'], 'num_examples': len(records),
          'win_rate': float(np.mean([r['win'] for r in records])),
          'exact_win_rate': float(np.mean(exact)) if exact else None,
          'accuracy': summary_a['accuracy'], 'other_accuracy': summary_b['accuracy']}, records

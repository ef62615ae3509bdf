"""The embedded world's questions: word problems (exact match on the final number, accuracy overall
and per step count) and fact questions (correct if the key word is in the first sentence; the facts
are the ones the model was trained on, so this measures recall)."""
from __future__ import annotations

from lmresearch.evals import generation, prompting
from lmresearch.evals.tasks.base import POOL_SIZE, Task, TaskKind, num_examples, world_streams


class QuestionTask(TaskKind):
  """A task of questions with a target: prompted, answered (voted for self-consistency), judged by
  exact match."""

  def judge(self, task, run, *, other=None, reward_model=None, **kw):
    return generation.answer_questions(task, run, **kw)


class WorldArithmetic(QuestionTask):
  name = 'world_arithmetic'

  def examples(self, data, world_seed, limit):
    world, test, train = world_streams(world_seed)
    # 1, 2, 3 steps in turn, so that any prefix (--limit) covers every step count evenly.
    problems = [world.problem(test, i % 3 + 1) for i in range(num_examples(limit))]
    examples = [{'question': p.question, 'target': str(p.answer), 'num_steps': p.num_steps}
                for p in problems]
    pool = [prompting.Exemplar(p.question, p.solution, p.direct)
            for p in (world.problem(train) for _ in range(POOL_SIZE))]
    return Task(self.name, examples, pool=pool)


class WorldFacts(QuestionTask):
  name = 'world_facts'

  def examples(self, data, world_seed, limit):
    world, test, train = world_streams(world_seed)
    # Few distinct questions exist (one per creature and attribute); each is asked once.
    seen = {}
    for q, ideal, key in (world.fact_question(test) for _ in range(2000)):
      seen.setdefault(q, {'question': q, 'target': key, 'ideal': ideal})
    pool = [prompting.from_solution(*world.fact_question(train)[:2])
            for _ in range(POOL_SIZE)]
    return Task(self.name, list(seen.values())[:limit], pool=pool,
                instruction=prompting.FACT_INSTRUCTION)

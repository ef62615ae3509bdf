"""What every evaluation task shares: the loaded examples (`Task`) and the task class contract."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from lmresearch.data import world as world_lib
from lmresearch.evals import prompting

EVAL_SALT = 5         # the world's evaluation rng streams, apart from every training stream
POOL_SIZE = 200       # exemplars drawn for few-shot prompts over the world


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


class TaskKind:
  """One task: `examples(data, world_seed, limit)` -> the Task to ask (from `data`, a file, or else
  the embedded world; files are read there, so a bad line stops before any model loads), and
  `judge(task, run, **kw)` -> (summary, records): how the answers are judged."""
  name = ''

  def examples(self, data: Optional[str], world_seed: int, limit: Optional[int]) -> Task:
    raise NotImplementedError

  def judge(self, task: Task, run, *, other=None, reward_model=None, **kw) -> tuple[dict, list[dict]]:
    raise NotImplementedError


def world_streams(world_seed: int):
  """The world, and its held-out test and exemplar (train) rngs for evaluation."""
  return (world_lib.World(world_seed), world_lib.split_rng(world_seed, 'test', EVAL_SALT),
          world_lib.split_rng(world_seed, 'train', EVAL_SALT))


def num_examples(limit: Optional[int]) -> int:
  return 300 if limit is None else limit

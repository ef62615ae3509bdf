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

Each task is a small class in its own file (`examples()`: what is asked; `judge()`: how it is
judged), registered in REGISTRY. `run_task(task, run, ...)` -> (summary, records): the headline numbers, and one record per example
(question tasks: prompt, output, prediction, target, correct, ...). Generation goes through the
KV-cache sampler, `batch_size` rows per call, greedy unless the method samples.
"""
from __future__ import annotations

from typing import Optional

from lmresearch.core.errors import ConfigError
from lmresearch.evals.generation import answer_questions, fewer_paths, generate  # noqa: F401
from lmresearch.evals.scoring import reward_scores  # noqa: F401
from lmresearch.evals.tasks.base import Task, TaskKind
from lmresearch.evals.tasks.gsm8k import GSM8K
from lmresearch.evals.tasks.perplexity import Perplexity, perplexity  # noqa: F401
from lmresearch.evals.tasks.reward import RewardAccuracy, reward_accuracy  # noqa: F401
from lmresearch.evals.tasks.win_rate import WinRate, win_rate  # noqa: F401
from lmresearch.evals.tasks.world import WorldArithmetic, WorldFacts
from lmresearch.stages.runs import Run, load  # noqa: F401  (re-exported: every task takes a Run)

REGISTRY: dict[str, TaskKind] = {t.name: t for t in (
    WorldArithmetic(), WorldFacts(), GSM8K(), Perplexity(), RewardAccuracy(), WinRate())}
TASKS = tuple(REGISTRY)


def load_task(name: str, data: Optional[str] = None, world_seed: int = 0,
              limit: Optional[int] = None) -> Task:
  """A task's examples: from `data` (a file) or else the embedded world. Files are read here, so
  a bad line stops before any model loads."""
  if name not in REGISTRY:
    raise ConfigError(f'task {name!r}: expected one of {", ".join(TASKS)}.')
  task = REGISTRY[name].examples(data, world_seed, limit)
  if not task.examples:
    raise ConfigError(f'task {name}: no examples in {task.source} (--limit={limit}).')
  return task


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
  summary, records = REGISTRY[task.name].judge(
      task, run, other=other, reward_model=judge, method=method, shots=shots,
      temperature=temperature, seed=seed, batch_size=batch_size, max_new_tokens=max_new_tokens)
  return {**summary, 'data': task.source}, records

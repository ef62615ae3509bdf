"""GSM8K test lines: exact match on the final number ('#### N' or 'The answer is N', commas and $
stripped). CoT uses the 8 published exemplars of Wei et al. (2022)."""
from __future__ import annotations

import os

from lmresearch.training import config as lmc
from lmresearch.data import formats
from lmresearch.evals import prompting
from lmresearch.evals.tasks.base import Task
from lmresearch.evals.tasks.world import QuestionTask


def read_questions(data, limit) -> list[dict]:
  """A prompts file (GSM8K's own format or {"prompt", "answer"}) as question examples."""
  return [{'question': p['prompt'], 'target': p['answer'],
           **({'num_steps': p['num_steps']} if p['num_steps'] else {})}
          for p in formats.read_prompts(data)[:limit]]


class GSM8K(QuestionTask):
  name = 'gsm8k'

  def examples(self, data, world_seed, limit):
    data = data or os.path.join(lmc.DATA_DIR, 'gsm8k', 'test.jsonl')
    return Task(self.name, read_questions(data, limit), data, _gsm8k_train_pool(data),
                prompting.GSM8K_COT_EXEMPLARS)


def _gsm8k_train_pool(test_path: str) -> list[prompting.Exemplar]:
  """Few-shot exemplars from GSM8K train.jsonl beside the test file, else the published 8."""
  path = os.path.join(os.path.dirname(test_path), 'train.jsonl')
  if not os.path.exists(path) or os.path.samefile(path, test_path):
    return list(prompting.GSM8K_COT_EXEMPLARS)
  chats = formats.read_chats(path)   # GSM8K lines become [question, worked solution]
  return [prompting.from_solution(c['messages'][0]['content'], c['messages'][1]['content'])
          for c in chats if len(c['messages']) == 2]

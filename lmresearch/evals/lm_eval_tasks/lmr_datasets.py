"""The datasets of our lm-evaluation-harness tasks (the YAML files beside this one name these
functions as `custom_dataset`): built at task-load time, with nothing downloaded.

  gsm8k   the shared local copy of GSM8K, $LMR_DATA_DIR/gsm8k/{train,test}.jsonl (default: the
          shared/data folder beside the project checkout)
  world_* the embedded world's questions and held-out documents, generated from its seed (the
          harness passes its task metadata here: `world_seed`, which `lmresearch.evaluate
          --lm_eval` sets from the run's config.data.synthetic.world_seed; 0 otherwise). Test
          questions come from the held-out evaluation rng that our own world tasks use, few-shot
          examples from its train rng.
"""
from __future__ import annotations

import os

from lmresearch.text import answers
from lmresearch.training import config as lmc
from lmresearch.data import world as world_lib
from lmresearch.core.errors import ConfigError
from lmresearch.evals.tasks.base import POOL_SIZE, num_examples, world_streams


def _datasets(splits: dict) -> dict:
  import datasets   # a dependency of lm_eval itself
  return {name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}


def gsm8k(**metadata) -> dict:
  folder = os.path.join(lmc.DATA_DIR, 'gsm8k')
  files = {split: os.path.join(folder, f'{split}.jsonl') for split in ('train', 'test')}
  for path in files.values():
    if not os.path.exists(path):
      raise ConfigError(f'{path}: no such file; set LMR_DATA_DIR to the folder that holds '
                        'gsm8k/{train,test}.jsonl.')
  import datasets
  return dict(datasets.load_dataset('json', data_files=files))


def world_facts(world_seed: int = 0, **metadata) -> dict:
  """Every fact the world has, asked once (16 creatures x color, town, food; 12 fruits' colors):
  the question, the answer sentence for each candidate value of its kind, and the right one."""
  world = world_lib.World(int(world_seed))
  towns, foods = sorted(world.towns), [world_lib._plural(f) for f in world_lib.FRUITS]
  rows = []

  def ask(question, sentence, values, answer):
    rows.append({'question': question, 'choices': [sentence.format(v) for v in values],
                 'label': values.index(answer), 'key': answer,
                 'answer': sentence.format(answer)})

  for c in world.creatures:
    ask(f'What color is the {c.name}?', f'The {c.name} is {{}}.', world_lib.COLORS, c.color)
    ask(f'Where does the {c.name} live?', f'The {c.name} lives in {{}}.', towns, c.town)
    ask(f'What does the {c.name} eat?', f'The {c.name} eats {{}}.', foods,
        world_lib._plural(c.food))
  for f in world_lib.FRUITS:
    ask(f'What color is the {f}?', f'The {f} is {{}}.', world_lib.COLORS, world.fruits[f][0])
  return _datasets({'test': rows})


def world_arithmetic(world_seed: int = 0, **metadata) -> dict:
  """300 held-out 1-, 2- and 3-step word problems (in turn, so that --limit keeps them even),
  and POOL_SIZE train problems with worked solutions for few-shot prompts."""
  world, test, train = world_streams(int(world_seed))
  make = lambda p: {'question': p.question, 'solution': p.solution, 'answer': str(p.answer),
                    'num_steps': p.num_steps}
  return _datasets({
      'test': [make(world.problem(test, i % 3 + 1)) for i in range(num_examples(None))],
      'train': [make(world.problem(train)) for _ in range(POOL_SIZE)]})


def world_text(world_seed: int = 0, **metadata) -> dict:
  """300 held-out documents of the pretraining corpus (its 'test' split), as our perplexity task
  reads them."""
  return _datasets({'test': [{'text': t} for t in
                             world_lib.corpus(int(world_seed), num_examples(None), 'test')]})


def key_in_first_sentence(doc: dict, results: list) -> dict:
  """world_facts' generate form, judged as our own task judges it: right if the answer's first
  sentence holds the key word."""
  return {'acc': float(answers.matches(answers.predict(results[0], doc['key']), doc['key']))}

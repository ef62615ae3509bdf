"""Prompting methods, for base models and chat models alike, and the self-consistency vote.

  direct              the question alone (zero-shot)
  instruction         an instruction first ("Solve the problem step by step. End with ...")
  few_shot            k solved exemplars, each answered directly ("The answer is 6.")
  cot                 k exemplars with worked step-by-step solutions (Wei et al. 2022)
  self_consistency@N  the cot prompt, N reasoning paths sampled at a temperature, the majority
                      answer wins (Wang et al. 2022)

A base model gets one document in the pretraining format of the embedded world, exemplars
first, separated by blank lines, ending where the answer starts:

  Question: <exemplar>\nAnswer: <solution>\n\nQuestion: <question>\nAnswer:

A chat model gets the chat template: the instruction as a system message, each exemplar as a
prior user/assistant turn, then the question as the last user turn.
"""
from __future__ import annotations

import collections
import dataclasses
import random
import re
from typing import Optional, Sequence

from lmresearch.generation import batched
from lmresearch.text import tokenizers
from lmresearch.data.world import ANSWER_PREFIX, QUESTION_PREFIX

STYLES = ('direct', 'instruction', 'few_shot', 'cot')
# Characters every world tokenizer knows ('"' is in the world's documents, "'" is not).
ARITHMETIC_INSTRUCTION = 'Solve the problem step by step. End with "The answer is N."'
FACT_INSTRUCTION = 'Answer the question in one short sentence.'


@dataclasses.dataclass(frozen=True)
class Exemplar:
  question: str
  solution: str   # worked step by step, ending in the answer (cot)
  short: str      # the answer alone, e.g. "The answer is 6." (few_shot)


def from_solution(question: str, solution: str) -> Exemplar:
  """An exemplar whose short answer is its solution's final "The answer is N." (a solution
  without one, e.g. a one-sentence fact, is its own short answer)."""
  return Exemplar(question, solution, solution[max(solution.rfind('The answer is'), 0):])


# The 8 GSM8K chain-of-thought exemplars of Wei et al. (2022), Table 20, word for word.
GSM8K_COT_EXEMPLARS = tuple(from_solution(q, s) for q, s in [
    ('There are 15 trees in the grove. Grove workers will plant trees in the grove today. After '
     'they are done, there will be 21 trees. How many trees did the grove workers plant today?',
     'There are 15 trees originally. Then there were 21 trees after some more were planted. So '
     'there must have been 21 - 15 = 6. The answer is 6.'),
    ('If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the '
     'parking lot?',
     'There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.'),
    ('Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have '
     'left in total?',
     'Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. '
     'After eating 35, they had 74 - 35 = 39. The answer is 39.'),
    ('Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many '
     'lollipops did Jason give to Denny?',
     'Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny '
     '20 - 12 = 8. The answer is 8.'),
    ('Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys '
     'does he have now?',
     'Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more '
     'toys. 5 + 4 = 9. The answer is 9.'),
    ('There were nine computers in the server room. Five more computers were installed each day, '
     'from monday to thursday. How many computers are now in the server room?',
     'There were originally 9 computers. For each of 4 days, 5 more computers were added. So '
     '5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.'),
    ('Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. '
     'How many golf balls did he have at the end of wednesday?',
     'Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After '
     'losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.'),
    ('Olivia has $23. She bought five bagels for $3 each. How much money does she have left?',
     'Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has '
     '23 - 15 dollars left. 23 - 15 is 8. The answer is 8.'),
])


def parse_method(method: str) -> tuple[str, int]:
  """-> (prompt style, samples per question): 'cot' -> ('cot', 1), 'self_consistency@5' ->
  ('cot', 5)."""
  m = re.fullmatch(r'self_consistency@(\d+)', method)
  if m and int(m.group(1)) >= 1:
    return 'cot', int(m.group(1))
  if method in STYLES:
    return method, 1
  raise ValueError(f'prompting method {method!r}: expected one of {", ".join(STYLES)} or '
                   'self_consistency@N (N >= 1).')


def select_exemplars(pool: Sequence[Exemplar], k: int, seed: int,
                     exclude: Sequence[str] = ()) -> list[Exemplar]:
  """k exemplars drawn by a seeded rng, never one whose question is in `exclude` (the test
  questions); they keep the pool's order, so k = all of the published 8 is the paper's prompt."""
  banned = {q.strip() for q in exclude}
  candidates = [e for e in pool if e.question.strip() not in banned]
  if k > len(candidates):
    raise ValueError(f'{k} exemplars asked for, but the pool holds only {len(candidates)} that '
                     'are not test questions; lower --shots.')
  return [candidates[i] for i in sorted(random.Random(seed).sample(range(len(candidates)), k))]


def _turns(style: str, exemplars: Sequence[Exemplar]) -> list[tuple[str, str]]:
  if style not in ('few_shot', 'cot'):
    return []
  return [(e.question, e.solution if style == 'cot' else e.short) for e in exemplars]


def prompt_text(question: str, style: str, exemplars: Sequence[Exemplar] = (),
                instruction: str = ARITHMETIC_INSTRUCTION) -> str:
  """The base-model prompt: a document that the answer completes."""
  parts = [instruction] if style == 'instruction' else []
  parts += [f'{QUESTION_PREFIX}{q}\n{ANSWER_PREFIX}{a}' for q, a in _turns(style, exemplars)]
  # No space after 'Answer:': BPE tokenizers fold the space into the next word's token.
  parts.append(f'{QUESTION_PREFIX}{question}\n{ANSWER_PREFIX.rstrip()}')
  return '\n\n'.join(parts)


def prompt_messages(question: str, style: str, exemplars: Sequence[Exemplar] = (),
                    instruction: str = ARITHMETIC_INSTRUCTION) -> list[dict]:
  """The chat-model prompt: exemplars as earlier turns of the conversation."""
  messages = [{'role': 'system', 'content': instruction}] if style == 'instruction' else []
  for q, a in _turns(style, exemplars):
    messages += [{'role': 'user', 'content': q}, {'role': 'assistant', 'content': a}]
  return messages + [{'role': 'user', 'content': question}]


def build_prompt(tok, question: str, style: str, exemplars: Sequence[Exemplar] = (),
                 instruction: str = ARITHMETIC_INSTRUCTION, chat: bool = False) -> list[int]:
  """Token ids to generate from: [BOS] + the document, or the chat ending in <|assistant|>."""
  if chat:
    messages = prompt_messages(question, style, exemplars, instruction)
    return tokenizers.generation_prompt(tok, messages)
  return batched.encode_prompt(tok, prompt_text(question, style, exemplars, instruction))


def majority_vote(answers: Sequence[Optional[str]]) -> Optional[str]:
  """The most frequent non-None answer; a tie goes to the answer that appeared first. None only
  when every answer is None."""
  counts = collections.Counter(a for a in answers if a is not None)
  # Counter keeps first-seen order and max() keeps the first maximum: ties go to the earliest.
  return max(counts, key=counts.get) if counts else None

"""The embedded default: a small invented world, generated deterministically from a seed.

Every stage of the pipeline draws from the same world, so one codebase can demonstrate the whole
life of a model with no file and no network:
  * documents     encyclopedia-style paragraphs about creatures, fruits and towns, and arithmetic
                  word problems with (or without) step-by-step solutions -> pretraining;
  * chats         questions about the world answered by an assistant -> SFT;
  * rankings      K responses of known quality order, ranked by a noisy simulated labeler -> reward
                  model and DPO;
  * prompts       arithmetic problems with verifiable answers -> GRPO and evaluation.

Facts are fixed by `World(seed)`; which documents/questions are drawn is set by each call's rng,
so train and held-out splits use different rngs over the same facts.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Optional

COLORS = ['red', 'blue', 'green', 'yellow', 'purple', 'orange', 'white', 'black', 'pink', 'gray']
SIZES = ['tiny', 'small', 'big', 'huge']
TASTES = ['sweet', 'sour', 'bitter', 'salty', 'spicy']
FRUITS = ['banana', 'apple', 'plum', 'cherry', 'pear', 'mango', 'lemon', 'grape', 'melon', 'peach',
          'fig', 'kiwi']
PLACES = ['river', 'hill', 'forest', 'lake', 'valley', 'coast']
PEOPLE = ['Tam', 'Mira', 'Bo', 'Lina', 'Oskar', 'Nia', 'Pim', 'Rosa', 'Juno', 'Kai']
SOUNDS = ['brip', 'woo', 'tik', 'mum', 'zee', 'pop', 'hoo', 'grr']
_SYL = ['zor', 'mip', 'bla', 'kin', 'tru', 'vex', 'lo', 'dar', 'fen', 'gub', 'nox', 'pel', 'quo',
        'ris', 'sul', 'tam', 'wib', 'yor', 'zan', 'mor']

QUESTION_PREFIX = 'Question: '
ANSWER_PREFIX = 'Answer: '
OFF_TOPIC_QUALITY = 0.25
DEGENERATE_QUALITY = 0.0
DEGENERATE = ('cut_off', 'echo', 'empty', 'garbage', 'repeated')
# Stray bytes: control characters, DEL, the replacement character and line-noise symbols.
GARBAGE = ''.join(map(chr, [*range(1, 9), 11, 12, *range(14, 32), 127])) + '\ufffd#@~^|{}<>'


@dataclasses.dataclass(frozen=True)
class Creature:
  name: str
  color: str
  size: str
  town: str
  food: str
  sound: str


@dataclasses.dataclass(frozen=True)
class Problem:
  """An arithmetic word problem with its worked solution."""
  question: str
  steps: tuple          # sentences, one arithmetic step each
  answer: int
  num_steps: int

  @property
  def solution(self) -> str:
    return ' '.join(self.steps) + f' The answer is {self.answer}.'

  @property
  def direct(self) -> str:
    return f'The answer is {self.answer}.'


class World:
  def __init__(self, seed: int = 0, num_creatures: int = 16, num_towns: int = 6):
    rng = random.Random(seed)
    names = set()
    while len(names) < num_creatures + num_towns:
      names.add(''.join(rng.sample(_SYL, 2)))
    names = sorted(names)
    rng.shuffle(names)
    self.towns = {n.capitalize(): rng.choice(PLACES) for n in names[num_creatures:]}
    town_names = sorted(self.towns)
    self.fruits = {f: (rng.choice(COLORS), rng.choice(TASTES)) for f in FRUITS}
    self.fruits['banana'] = ('yellow', 'sweet')   # the demo's "The banana is ..." reads naturally
    self.creatures = [
        Creature(n, rng.choice(COLORS), rng.choice(SIZES), rng.choice(town_names),
                 rng.choice(FRUITS), rng.choice(SOUNDS)) for n in names[:num_creatures]]

  # ---- pretraining documents -------------------------------------------------------------
  def creature_doc(self, c: Creature, rng: random.Random) -> str:
    facts = [f'It lives in {c.town}.', f'It eats {_plural(c.food)}.', f'A {c.name} says "{c.sound}".',
             f'The {c.name} is {c.size}.', f'Every {c.name} is {c.color}.']
    rng.shuffle(facts)
    return f'The {c.name} is a {c.size} {c.color} creature. ' + ' '.join(facts[:rng.randint(2, 5)])

  def fruit_doc(self, fruit: str, rng: random.Random) -> str:
    color, taste = self.fruits[fruit]
    fans = [c.name for c in self.creatures if c.food == fruit]
    s = f'The {fruit} is a {color} fruit. It tastes {taste}.'
    if fans:
      s += f' The {_plural(rng.choice(fans))} love {_plural(fruit)}.'
    return s

  def town_doc(self, town: str, rng: random.Random) -> str:
    people = [c.name for c in self.creatures if c.town == town]
    s = f'{town} is a town by the {self.towns[town]}.'
    if people:
      rng.shuffle(people)
      s += ' ' + ' and '.join(f'the {_plural(p)}' for p in people[:3]).capitalize() + ' live there.'
    return s

  def problem(self, rng: random.Random, num_steps: Optional[int] = None) -> Problem:
    """1-3 step word problems over small numbers: each step is one + or - on the running total."""
    num_steps = num_steps or rng.randint(1, 3)
    who, fruit = rng.choice(PEOPLE), rng.choice(FRUITS)
    total = rng.randint(2, 12)
    sentences = [f'{who} has {total} {_plural(fruit)}.']
    steps = [f'{who} starts with {total}.']
    for _ in range(num_steps):
      if total > 1 and rng.random() < 0.5:
        n = rng.randint(1, min(total - 1, 9))
        verb = rng.choice(['eats', 'gives away', 'sells', 'drops'])
        sentences.append(f'{who} {verb} {n}.')
        steps.append(f'{total} - {n} = {total - n}.')
        total -= n
      else:
        n = rng.randint(1, 9)
        verb = rng.choice(['buys', 'finds', 'picks', 'gets'])
        sentences.append(f'{who} {verb} {n} more.')
        steps.append(f'{total} + {n} = {total + n}.')
        total += n
    q = ' '.join(sentences) + f' How many {_plural(fruit)} does {who} have now?'
    return Problem(q, tuple(steps), total, num_steps)

  def qa(self, p: Problem, worked: bool) -> str:
    return f'{QUESTION_PREFIX}{p.question}\n{ANSWER_PREFIX}{p.solution if worked else p.direct}'

  def worksheet(self, rng: random.Random, worked: bool) -> str:
    """Several problems answered in one style: the kind of document few-shot prompts imitate."""
    return '\n\n'.join(self.qa(self.problem(rng), worked) for _ in range(rng.randint(2, 5)))

  def documents(self, n: int, rng: random.Random, worked_fraction: float = 0.5) -> list[str]:
    """n pretraining documents: encyclopedia entries, word problems and worksheets of several
    problems in one answer style. Only a share (worked_fraction) of problems show their steps;
    the rest give the answer alone — the two styles that few-shot and CoT prompts select."""
    out = []
    for _ in range(n):
      r = rng.random()
      worked = rng.random() < worked_fraction
      if r < 0.35:
        out.append(self.creature_doc(rng.choice(self.creatures), rng))
      elif r < 0.48:
        out.append(self.fruit_doc(rng.choice(FRUITS), rng))
      elif r < 0.56:
        out.append(self.town_doc(rng.choice(sorted(self.towns)), rng))
      elif r < 0.68:
        out.append(self.worksheet(rng, worked))
      else:
        out.append(self.qa(self.problem(rng), worked))
    return out

  # ---- questions with known answers (SFT chats, rankings, evaluation) --------------------------
  def fact_question(self, rng: random.Random) -> tuple[str, str, str]:
    """(question, ideal answer, the key word an answer must contain)."""
    c = rng.choice(self.creatures)
    kind = rng.randrange(4)
    if kind == 0:
      return f'What color is the {c.name}?', f'The {c.name} is {c.color}.', c.color
    if kind == 1:
      return f'Where does the {c.name} live?', f'The {c.name} lives in {c.town}.', c.town
    if kind == 2:
      return f'What does the {c.name} eat?', f'The {c.name} eats {_plural(c.food)}.', _plural(c.food)
    f = rng.choice(FRUITS)
    return f'What color is the {f}?', f'The {f} is {self.fruits[f][0]}.', self.fruits[f][0]

  def wrong_fact(self, key: str, rng: random.Random) -> str:
    pool = [w for w in COLORS + sorted(self.towns) + [_plural(f) for f in FRUITS] if w != key]
    return rng.choice(pool)


  # ---- post-training data: chats, rankings, verifiable prompts -------------------------------
  def question(self, rng: random.Random, arithmetic_share: float = 0.5):
    """(question, ideal answer, key): an arithmetic problem (answered step by step) or a fact."""
    if rng.random() < arithmetic_share:
      p = self.problem(rng)
      return p.question, p.solution, str(p.answer)
    return self.fact_question(rng)

  def chat(self, rng: random.Random, max_turns: int = 3, padded_share: float = 0.25) -> dict:
    """1-3 turns; in a few chats the assistant answers word problems without the steps, so that
    a chat model, too, follows the answer style of the turns before (few-shot in chat form).
    Like human demonstrators, some answers trail off into filler (`padded_share`): SFT imitates
    that habit, and the rankings (which prefer concise answers) are what can train it away."""
    messages = []
    if rng.random() < 0.3:
      messages.append({'role': 'system', 'content': SYSTEM_PROMPT})
    terse = rng.random() < 0.15
    for _ in range(rng.randint(1, max_turns)):
      q, a, key = self.question(rng)
      if terse and key.isdigit():
        a = f'The answer is {key}.'
      if rng.random() < padded_share:
        a = f'{a} {rng.choice(RAMBLE)}'
      messages += [{'role': 'user', 'content': q}, {'role': 'assistant', 'content': a}]
    return {'messages': messages}

  def responses(self, question: str, answer: str, key: str, rng: random.Random,
                degenerate: int = len(DEGENERATE)) -> list[tuple[float, str, str]]:
    """Candidate replies as (true quality, text, kind): correct and concise > correct but terse
    (no steps), padded with filler, or rude > wrong > an off-topic document continuation >
    `degenerate` of the degenerate replies an RL policy drifts into (see `degenerate_replies`).
    Word problems get 9 real candidates, fact questions 8 (one of them a bare number, as a base
    model answers). Filler and rudeness each come on a right and a wrong answer: were filler only
    ever on right answers, a reward model that cannot check the arithmetic would learn filler as
    a sign of a right answer and prefer padded replies to concise ones."""
    if key.isdigit():
      wrong_key = str(int(key) + rng.choice([1, 2, 3]) * (1 if int(key) < 4 or rng.random() < 0.5 else -1))
    else:
      wrong_key = self.wrong_fact(key, rng)
    wrong = answer.replace(key, wrong_key) if key in answer else f'The answer is {wrong_key}.'
    if key.isdigit():   # a wrong final answer after the same (now inconsistent) reasoning
      wrong = answer.rsplit('The answer is', 1)[0] + f'The answer is {wrong_key}.'
    if key.isdigit():
      terse = [(3.5, f'The answer is {key}.', 'terse'), (1.0, f'The answer is {wrong_key}.', 'wrong_terse')]
    else:   # a base model's kind of reply, which does not answer the question
      terse = [(1.0, f'The answer is {rng.randint(1, 12)}.', 'non_answer')]
    real = terse + [
        (4.0, answer, 'concise'),
        (3.0, f'{answer} {rng.choice(RAMBLE)}', 'padded'),
        (2.0, f'{rng.choice(RUDE)} {answer}', 'rude'),
        (1.0, wrong, 'wrong'),
        (1.0, f'{wrong} {rng.choice(RAMBLE)}', 'wrong_padded'),
        (0.5, f'{rng.choice(RUDE)} {wrong}', 'rude_wrong'),
        (OFF_TOPIC_QUALITY, self.creature_doc(rng.choice(self.creatures), rng), 'off_topic'),
    ]
    bad = degenerate_replies(question, answer, rng)
    kinds = sorted(bad) if degenerate >= len(bad) else rng.sample(sorted(bad), degenerate)
    return real + [(DEGENERATE_QUALITY, bad[k], k) for k in kinds]

  def ranking(self, rng: random.Random, k: Optional[int] = None, noise: float = 0.0,
              degenerate: int = 2) -> dict:
    """{'prompt', 'responses': [best, ..., worst], 'kinds'} as ranked by a simulated labeler whose
    judgement of each reply's quality is perturbed by Gaussian noise of std `noise`: k of the
    question's candidates (all when k is None), `degenerate` of them degenerate replies."""
    q, a, key = self.question(rng)
    cands = self.responses(q, a, key, rng, degenerate)
    if k is not None:
      cands = rng.sample(cands, min(k, len(cands)))
    seen = [(c[0] + rng.gauss(0, noise) if noise else c[0], c[1], c[2]) for c in cands]
    ranked = sorted(seen, key=lambda c: c[0], reverse=True)   # by the labeler's judgement
    out = {'prompt': q, 'responses': [c[1] for c in ranked], 'kinds': [c[2] for c in ranked]}
    # Equal true quality (e.g. two wrong answers) is a tie to a noise-free labeler, not an order.
    ties = [[i, j] for i in range(len(ranked)) for j in range(i + 1, len(ranked))
            if ranked[i][0] == ranked[j][0]]
    if ties:
      out['ties'] = ties
    return out

  def prompt(self, rng: random.Random, num_steps: Optional[int] = None) -> dict:
    p = self.problem(rng, num_steps)
    return {'prompt': p.question, 'answer': str(p.answer), 'num_steps': p.num_steps}


SYSTEM_PROMPT = 'You are a helpful assistant. Answer the question.'
RAMBLE = ['I hope this helps, and there is much more to say.', 'That is what I think, as far as I can tell.',
          'Questions like this one are very common.']
RUDE = ['Ugh, fine.', 'Obviously.', 'What a silly question.', 'Stop asking me that.']


def degenerate_replies(question: str, answer: str, rng: random.Random) -> dict:
  """The replies an RL policy drifts into when a reward model has never been told they are bad:
  nothing at all, a reply cut off mid-sentence, the answer said over and over, stray bytes, the
  question echoed back. Each is ranked below every real answer (ties among themselves)."""
  words = answer.split()
  cuts = [i for i in range(1, len(words)) if not words[i - 1].endswith('.')] or [1]
  garbage = rng.choice(GARBAGE[:GARBAGE.index('\ufffd')]) + ''.join(   # one control char at least
      rng.choice(GARBAGE) for _ in range(rng.randint(2, 15)))
  return {'empty': '',
          'cut_off': ' '.join(words[:rng.choice(cuts)]),
          'repeated': ' '.join([answer] * rng.randint(2, 4)),
          'garbage': rng.choice(['', answer + ' ']) + garbage,
          'echo': question}


def _plural(word: str) -> str:
  if word.endswith(('ch', 'sh', 's')):
    return word + 'es'
  if word.endswith('y') and word[-2] not in 'aeiou':
    return word[:-1] + 'ies'
  return word + 's'


def corpus(seed: int, num_docs: int, split: str = 'train', worked_fraction: float = 0.5) -> list[str]:
  """The embedded pretraining corpus: facts from World(seed), documents drawn per split."""
  world = World(seed)
  salt = {'train': 1, 'validation': 2, 'test': 3}[split]
  return world.documents(num_docs, random.Random(seed * 1000 + salt), worked_fraction)


def split_rng(seed: int, split: str, salt: int = 0) -> random.Random:
  return random.Random(seed * 1000 + {'train': 1, 'validation': 2, 'test': 3}[split] + 10 * salt)

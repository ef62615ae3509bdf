"""The world's own noise-free labeler, applied to any reply: is it degenerate (and how), padded with
filler, and its quality on the rankings' scale. The gold preference a reward model approximates;
the pipeline's report reads it."""
from __future__ import annotations

from typing import Optional

from lmresearch.text.answers import matches, predict
from lmresearch.data.world import DEGENERATE_QUALITY, RAMBLE, RUDE


def degenerate_kind(response: str, question: Optional[str] = None,
                    finished: bool = True) -> Optional[str]:
  """Which degenerate reply this is (None for a real answer, right or wrong): the gold labeler's
  test, model-agnostic. `finished`: whether generation ended with the end token (a reply that
  never ends is degenerate however it reads)."""
  text = response.strip()
  if not text:
    return 'empty'
  if not finished:
    return 'unfinished'
  if not all(c.isprintable() or c in '\n\t' for c in text):
    return 'garbage'
  if question is not None and text == question.strip():
    return 'echo'
  sentences = [x for x in (s.strip() for s in text.split('.')) if x]
  if len(sentences) != len(set(sentences)):
    return 'repeated'
  if text[-1] not in '.!?"':
    return 'cut_off'
  return None


def mechanically_degenerate(response: str, finished: bool = True) -> bool:
  """The report's `degenerate_share` test, which needs no question: empty, never finished, or
  holding non-printable characters."""
  return degenerate_kind(response, None, finished) in ('empty', 'unfinished', 'garbage')


def labeler_quality(response: str, correct: bool, word_problem: bool,
                    question: Optional[str] = None, finished: bool = True) -> float:
  """The noise-free labeler's quality scale (see `World.responses`) applied to any reply: the gold
  preference that a reward model trained on the rankings only approximates. An off-topic reply
  counts as wrong; a degenerate one (empty, unfinished, cut off, repeated, garbage, the question
  echoed) is the worst."""
  if degenerate_kind(response, question, finished):
    return DEGENERATE_QUALITY
  rude = response.startswith(tuple(RUDE))
  if not correct:
    return 0.5 if rude else 1.0
  if rude:
    return 2.0
  if padded(response):
    return 3.0
  return 3.5 if word_problem and '=' not in response else 4.0


def padded(response: str) -> bool:
  """Whether a reply trails off into the world's filler."""
  return any(r in response for r in RAMBLE)


def gold(reply: str, question: str, answer: str, finished: bool = True) -> float:
  """The gold quality of a reply to a question whose answer is known (a world question, or a
  prompts-format line with an "answer"): its correctness checked, then `labeler_quality`."""
  correct = bool(answer) and matches(predict(reply, answer), answer)
  return labeler_quality(reply, correct, answer.lstrip('-').isdigit(), question, finished)

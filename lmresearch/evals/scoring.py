"""Scoring for evaluation: a reward model's score of (prompt, reply) chats, and win outcomes (one
place for "A beats B": 1 for a win, 1/2 for a tie, 0 for a loss)."""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from lmresearch.core import parallel
from lmresearch.text import tokenizers
from lmresearch.stages.runs import Run
from lmresearch.stages.reward import score


def reward_scores(rm: Run, prompts: Sequence[str], responses: Sequence[str],
                  batch_size: int = 32) -> np.ndarray:
  """The reward model's score of each (prompt, response) chat, minus the run's offset. Chats
  longer than the model context are cut to it."""
  max_len = rm.model.cfg.max_len
  rendered = [tokenizers.render_reply(rm.tok, p, r) for p, r in zip(prompts, responses)]
  ids = [x[:max_len] for x, _ in rendered]
  replies = [m[:max_len] for _, m in rendered]
  length = min(max_len, -(-max(map(len, ids)) // 64) * 64)   # one shape for every batch
  rows = rm.batch_rows(batch_size)
  fn = jax.jit(lambda params, tokens, mask, reply: score(rm.model, params, tokens, mask,
                                                         pool=rm.pool, reply=reply))
  out = []
  with rm.active():
    for start in range(0, len(ids), rows):
      chunk = ids[start:start + rows]
      tokens, mask = np.zeros((rows, length), np.int32), np.zeros((rows, length), np.int32)
      reply = np.zeros((rows, length), np.int32)
      mask[:, 0] = 1   # filler rows hold one pad token
      for i, (x, m) in enumerate(zip(chunk, replies[start:start + rows])):
        tokens[i, :len(x)], mask[i, :len(x)], reply[i, :len(m)] = x, 1, m
      out.append(np.asarray(parallel.fetch(fn(rm.params, tokens, mask, reply)))[:len(chunk)])
  return np.concatenate(out) - rm.offset


def outcome(a, b, tie: bool) -> float:
  """1 if a beats b, 1/2 for a tie, else 0."""
  return 0.5 if tie else float(a > b)


def win_outcomes(outputs_a, scores_a, outputs_b, scores_b) -> list[float]:
  """Per question: 1 if the judge scores A's answer above B's, 1/2 for the same answer or score."""
  return [outcome(p, q, tie=x == y or bool(np.isclose(p, q)))
          for x, p, y, q in zip(outputs_a, scores_a, outputs_b, scores_b)]


def exact_outcomes(correct_a, correct_b) -> list[float]:
  """Per question, only the answer's correctness counts: 1/2 when both are right or both wrong."""
  return [outcome(bool(a), bool(b), tie=bool(a) == bool(b)) for a, b in zip(correct_a, correct_b)]

"""The claims a pipeline run tests, each with its number, a 95% interval and a verdict.

The report opens with these: the classic story (a base model only completes documents, SFT makes it
answer, RLHF's answers are preferred by the reward model *and* by the gold labeler without reward
hacking, chain-of-thought beats direct answers, self-consistency is at least as good as greedy
CoT), each checked on this run's own per-example records. Differences are paired (the same
questions answered by both models or methods); intervals are normal approximations of the mean
(1.96 standard errors), and Wilson intervals for a single share, which stay sensible at 0 or 1.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

Z = 1.96


def mean_ci(xs: Sequence[float]) -> tuple[float, float, float]:
  """(mean, low, high): the mean and its 95% normal-approximation interval."""
  x = np.asarray(xs, np.float64)
  m = float(x.mean())
  se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0
  return m, m - Z * se, m + Z * se


def wilson(k: int, n: int) -> tuple[float, float, float]:
  """(share, low, high): k of n with its 95% Wilson score interval."""
  p = k / n
  d = 1 + Z * Z / n
  centre = (p + Z * Z / (2 * n)) / d
  half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d
  return p, max(0.0, centre - half), min(1.0, centre + half)


def _claim(claim, measure, stats, n, criterion, verdict) -> dict:
  value, lo, hi = stats
  return {'claim': claim, 'measure': measure, 'value': value, 'ci95': [lo, hi], 'n': n,
          'criterion': criterion, 'verdict': verdict}


def _greater(stats, null: float) -> str:
  """For 'A > null': holds when the whole interval is above it."""
  value, lo, hi = stats
  if lo > null:
    return 'holds'
  return 'not significant' if value > null else 'does not hold'


def _diff(a, b):
  return [float(x) - float(y) for x, y in zip(a, b)]


def evaluate(answer_correct: dict, fact_correct: dict, sampled_quality: dict,
             sampled_rm_outcomes: dict, greedy_degenerate: dict, prompting_correct: dict,
             sc_method: Optional[str] = None) -> list[dict]:
  """Each argument maps a model name to its per-example list (same examples, same order, across
  models); prompting_correct maps model -> method -> list. Claims whose evidence is missing from
  this run (e.g. no RLHF stage) are left out."""
  out = []
  if 'base' in fact_correct:
    xs = fact_correct['base']
    s = wilson(sum(map(bool, xs)), len(xs))
    out.append(_claim('The base model only completes documents', 'base: fact questions answered',
                      s, len(xs), '95% interval below 0.5', 'holds' if s[2] < 0.5 else 'does not hold'))
  if 'base' in answer_correct and 'sft' in answer_correct:
    s = mean_ci(_diff(answer_correct['sft'], answer_correct['base']))
    out.append(_claim('SFT makes it answer', 'answer accuracy, SFT − base', s,
                      len(answer_correct['sft']), 'interval above 0', _greater(s, 0.0)))
  if 'rlhf' in sampled_rm_outcomes:
    xs = sampled_rm_outcomes['rlhf']
    s = mean_ci(xs)
    out.append(_claim("RLHF's answers are preferred by the reward model",
                      'RM win rate of RLHF samples vs SFT samples (ties 1/2)', s, len(xs),
                      'interval above 0.5', _greater(s, 0.5)))
  if 'rlhf' in sampled_quality and 'sft' in sampled_quality:
    s = mean_ci(_diff(sampled_quality['rlhf'], sampled_quality['sft']))
    out.append(_claim("RLHF's answers are preferred by the gold labeler",
                      'gold labeler quality of samples, RLHF − SFT', s, len(sampled_quality['rlhf']),
                      'interval above 0', _greater(s, 0.0)))
  if 'rlhf' in answer_correct and 'sft' in answer_correct:
    s = mean_ci(_diff(answer_correct['rlhf'], answer_correct['sft']))
    out.append(_claim('RLHF keeps SFT\'s greedy accuracy', 'greedy answer accuracy, RLHF − SFT', s,
                      len(answer_correct['rlhf']), 'mean ≥ −0.02 (within 2 points)',
                      'holds' if s[0] >= -0.02 else 'does not hold'))
  if 'rlhf' in greedy_degenerate:
    xs = greedy_degenerate['rlhf']
    s = wilson(sum(map(bool, xs)), len(xs))
    out.append(_claim('RLHF does not hack the reward model with degenerate answers',
                      'RLHF greedy answers empty, unfinished or non-printable', s, len(xs),
                      'share ≤ 0.01', 'holds' if s[0] <= 0.01 else 'does not hold'))
  base = prompting_correct.get('base', {})
  if 'cot' in base and 'direct' in base:
    s = mean_ci(_diff(base['cot'], base['direct']))
    out.append(_claim('Chain-of-thought beats direct answers', 'base model accuracy, CoT − direct',
                      s, len(base['cot']), 'interval above 0', _greater(s, 0.0)))
  if sc_method in base and 'cot' in base:
    s = mean_ci(_diff(base[sc_method], base['cot']))
    out.append(_claim('Self-consistency is at least as accurate as greedy CoT',
                      f'base model accuracy, {sc_method} − CoT', s, len(base['cot']), 'mean ≥ 0',
                      'holds' if s[0] >= 0 else 'does not hold'))
  return out

"""The report's claims: intervals against numpy/closed forms, and verdicts on made-up evidence."""
import math

import numpy as np
import pytest

from lmresearch.evaluation import claims


def test_mean_interval_is_the_mean_plus_minus_1_96_standard_errors():
  x = np.random.default_rng(0).normal(1.0, 2.0, 200)
  m, lo, hi = claims.mean_ci(x)
  se = np.std(x, ddof=1) / math.sqrt(len(x))
  assert m == pytest.approx(np.mean(x)) and hi - m == pytest.approx(1.96 * se) and m - lo == pytest.approx(1.96 * se)


def test_wilson_interval_stays_inside_0_1_and_is_not_empty_at_zero():
  p, lo, hi = claims.wilson(0, 60)
  assert p == 0 and lo == 0 and 0.05 < hi < 0.07   # the rule of three: about 3/60
  p, lo, hi = claims.wilson(30, 60)
  assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 60), rel=0.05)


def test_verdicts_follow_the_evidence():
  n = 100
  good, bad = [True] * n, [False] * n
  half = [True, False] * (n // 2)
  found = {c['claim']: c for c in claims.evaluate(
      answer_correct={'base': bad, 'sft': good, 'rlhf': half},
      fact_correct={'base': bad},
      sampled_quality={'sft': [3.0] * n, 'rlhf': [3.0 + 0.5 * (i % 2) for i in range(n)]},
      sampled_rm_outcomes={'rlhf': [0.5] * n},
      greedy_degenerate={'rlhf': [i < 5 for i in range(n)]},
      prompting_correct={'base': {'direct': half, 'cot': good, 'self_consistency@10': half}},
      sc_method='self_consistency@10')}
  verdict = {k: c['verdict'] for k, c in found.items()}
  assert verdict == {
      'The base model only completes documents': 'holds',
      'SFT makes it answer': 'holds',
      "RLHF's answers are preferred by the reward model": 'does not hold',   # all ties
      "RLHF's answers are preferred by the gold labeler": 'holds',
      "RLHF keeps SFT's greedy accuracy": 'does not hold',                    # 1.0 -> 0.5
      'RLHF does not hack the reward model with degenerate answers': 'does not hold',   # 5%
      'Chain-of-thought beats direct answers': 'holds',
      'Self-consistency is at least as accurate as greedy CoT': 'does not hold'}
  assert found['SFT makes it answer']['value'] == 1.0


def test_claims_without_evidence_are_left_out():
  assert claims.evaluate({}, {}, {}, {}, {}, {}) == []

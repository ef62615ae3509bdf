"""The report's claims: intervals against numpy/closed forms, and verdicts on made-up evidence."""
import math

import numpy as np
import pytest

from lmresearch.evals import claims, stats


def test_mean_interval_is_the_mean_plus_minus_t_standard_errors():
  x = np.random.default_rng(0).normal(1.0, 2.0, 200)
  m, lo, hi, n = claims.mean_ci(x)
  se = np.std(x, ddof=1) / math.sqrt(len(x))
  assert n == 200 and m == pytest.approx(np.mean(x))
  assert hi - m == pytest.approx(1.972 * se, rel=1e-3) and m - lo == pytest.approx(1.972 * se, rel=1e-3)
  # three seeds: Student's t with 2 degrees of freedom, not the normal's 1.96
  m, lo, hi, _ = claims.mean_ci([1.0, 2.0, 3.0])
  assert hi - m == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)


def test_wilson_interval_stays_inside_0_1_and_is_not_empty_at_zero():
  p, lo, hi, _ = claims.wilson(0, 60)
  assert p == 0 and lo == 0 and 0.05 < hi < 0.07   # the rule of three: about 3/60
  p, lo, hi, _ = claims.wilson(30, 60)
  assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 60), rel=0.05)


def test_verdicts_follow_the_evidence():
  n = 100
  good, bad = [True] * n, [False] * n
  half = [True, False] * (n // 2)
  found = {c['id']: c for c in claims.evaluate(
      answer_correct={'base': bad, 'sft': good, 'rlhf': half},
      fact_correct={'base': bad},
      sampled_quality={'sft': [3.0] * n, 'rlhf': [3.0 + 0.5 * (i % 2) for i in range(n)]},
      sampled_rm_outcomes={'rlhf': [0.5] * n},
      greedy_degenerate={'rlhf': [i < 5 for i in range(n)]},
      prompting_correct={'base': {'direct': half, 'cot': good, 'self_consistency@10': half}},
      sc_method='self_consistency@10')}
  verdict = {k: c['verdict'] for k, c in found.items()}
  assert verdict == {
      'base_completes': 'holds',
      'sft_answers': 'holds',
      'rlhf_rm_preferred': 'does not hold',     # all ties: the interval is the point 0.5
      'rlhf_gold_preferred': 'holds',
      'rlhf_keeps_accuracy': 'does not hold',    # 1.0 -> 0.5
      'rlhf_not_degenerate': 'does not hold',    # 5 of 100: the whole interval is above 1%
      'cot_beats_direct': 'holds',
      'sc_beats_cot': 'does not hold'}
  assert found['sft_answers']['value'] == 1.0


@pytest.mark.parametrize('interval,criterion,expected', [
    ((-0.033, -0.106, 0.039), '> 0', 'not significant'),     # the README's self-consistency row
    ((0.0, 0.0, 0.025), '<= 0.01', 'not significant'),       # 0 of 150 degenerate: could be 2.5%
    ((0.0, 0.0, 0.009), '<= 0.01', 'holds'),
    ((0.04, -0.104, 0.184), '> 0', 'not significant'),
    ((-0.2, -0.3, -0.1), '> 0', 'does not hold'),
    ((0.01, -0.03, 0.05), '>= -0.05', 'holds'),
    ((-0.08, -0.12, -0.06), '>= -0.05', 'does not hold'),
    ((1.895, 1.87, 1.92), 'within 0.05 of 1.88', 'holds'),
    ((2.0, 1.95, 2.05), 'within 0.05 of 1.88', 'does not hold'),
    ((1.0, float('nan'), float('nan')), '> 0', 'not significant'),   # one seed, no error: no interval
])
def test_one_rule_decides_by_where_the_interval_lies(interval, criterion, expected):
  assert stats.verdict(interval, criterion) == expected


def test_a_malformed_criterion_is_named():
  with pytest.raises(ValueError, match="criterion 'about 3'"):
    stats.criterion('about 3')


def test_claims_without_evidence_are_left_out():
  assert claims.evaluate({}, {}, {}, {}, {}, {}) == []


def test_seeds_that_agree_still_carry_their_questions_error():
  """Three runs that all measure 0 of 420: Student's t over them is zero wide, which is no 95%
  interval; the pooled interval keeps the questions' sampling error. Runs that differ keep t's."""
  from lmresearch.evals import stats
  same = stats.pooled_ci([(0.0, 0.0, 0.009)] * 3)
  assert same.lo < 0 < 0.002 < same.hi and same.n == 3
  spread = [(0.2, 0.15, 0.25), (0.4, 0.35, 0.45), (0.6, 0.55, 0.65)]
  t = stats.mean_ci([0.2, 0.4, 0.6])
  assert stats.pooled_ci(spread) == t

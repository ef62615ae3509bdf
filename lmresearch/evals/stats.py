"""The one rule every published verdict follows, in the pipeline's report and in every experiment.

A claim is a quantity and a criterion on it ('> 0', '>= -0.05', '<= 0.01', 'within 0.05 of 1.88').
Its 95% interval decides:
  holds            the whole interval satisfies the criterion;
  does not hold    the whole interval violates it;
  not significant  the interval straddles the boundary (the data cannot tell).
  not measured     no finished run gives the quantity a value (an experiment's results predate
                   the claim, or its trials have not run): said, never counted as a verdict.
A mean's interval is Student's t with n - 1 degrees of freedom (4.30 standard errors at n = 3
seeds, 1.98 at n = 150 questions); a share's is Wilson's score interval, which stays sensible at
0 and 1. With one value and a standard error measured inside that run (over its questions), the
interval is the normal one on that standard error.
"""
from __future__ import annotations

import math
import re
from typing import NamedTuple, Sequence

import numpy as np

Z = 1.959963984540054
VERDICTS = ('holds', 'not significant', 'does not hold', 'not measured')


def t975(df: int) -> float:
  """The 97.5% quantile of Student's t (two-sided 95%); the normal's for df = inf."""
  if not math.isfinite(df):
    return Z
  from scipy.stats import t   # scipy comes with jax
  return float(t.ppf(0.975, df))


class Interval(NamedTuple):
  value: float
  lo: float
  hi: float
  n: int


def mean_ci(xs: Sequence[float]) -> Interval:
  """The mean and its 95% t interval (n - 1 degrees of freedom); a single value has none (nan)."""
  x = np.asarray([v for v in xs if v is not None and np.isfinite(v)], np.float64)
  if not len(x):
    return Interval(math.nan, math.nan, math.nan, 0)
  m = float(x.mean())
  if len(x) < 2:
    return Interval(m, math.nan, math.nan, 1)
  half = t975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
  return Interval(m, m - half, m + half, len(x))


def pooled_ci(runs: Sequence[tuple]) -> Interval:
  """Runs' (value, lo, hi), each with its own 95% interval over its questions -> their mean with
  an interval that carries both errors: Student's t over the runs' values, widened where needed
  to the sampling error of the mean of the runs (the runs' own half-widths, combined as
  independent). Seeds that all give the same value (every run 0 of 420 degenerate answers) make
  t's interval zero wide; that is not a 95% interval, the questions' error still is."""
  runs = [r for r in runs if all(np.isfinite(x) for x in r)]
  t = mean_ci([r[0] for r in runs])
  if len(runs) < 2:
    return t
  se = math.sqrt(sum(((hi - lo) / (2 * Z)) ** 2 for _, lo, hi in runs)) / len(runs)
  return Interval(t.value, min(t.lo, t.value - Z * se), max(t.hi, t.value + Z * se), t.n)


def normal_ci(value: float, se: float, n: int = 1) -> Interval:
  """value ± 1.96 se: a run's own measurement with a standard error over its many examples."""
  return Interval(value, value - Z * se, value + Z * se, n)


def wilson(k: int, n: int) -> Interval:
  """k of n as a share with its 95% Wilson score interval."""
  p = k / n
  d = 1 + Z * Z / n
  centre = (p + Z * Z / (2 * n)) / d
  half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d
  # min/max: at k = 0 or n the bound is the share itself, which rounding can leave a hair off
  return Interval(p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)), n)


class Criterion(NamedTuple):
  op: str          # '>', '>=', '<', '<=' or 'within'
  bound: float     # the threshold (the reference value for 'within')
  margin: float = 0.0

  def __str__(self) -> str:
    if self.op == 'within':
      return f'within {_num(self.margin)} of {_num(self.bound)}'
    return f'{self.op} {_num(self.bound)}'


def _num(x: float) -> str:
  return f'{x:g}'.replace('-', '−')


_CRITERION = re.compile(r'^\s*(?:(>=|<=|>|<)\s*(\S+)|within\s+(\S+)\s+of\s+(\S+))\s*$')


def criterion(text: str) -> Criterion:
  """'> 0', '>= -0.05', '< 0.5', '<= 0.01' or 'within 0.05 of 1.88' -> a Criterion."""
  m = _CRITERION.match(text.replace('−', '-'))
  if not m:
    raise ValueError(f'criterion {text!r}: expected "> x", ">= x", "< x", "<= x" or '
                     '"within m of x".')
  if m.group(1):
    return Criterion(m.group(1), float(m.group(2)))
  return Criterion('within', float(m.group(4)), float(m.group(3)))


def verdict(interval, crit) -> str:
  """holds / not significant / does not hold, by where the 95% interval lies (module docstring).
  An interval that could not be formed (one seed, no standard error) is 'not significant'."""
  crit = criterion(crit) if isinstance(crit, str) else crit
  lo, hi = interval[1], interval[2]
  if not (np.isfinite(lo) and np.isfinite(hi)):
    return 'not significant'
  b = crit.bound
  if crit.op == 'within':
    inside = b - crit.margin <= lo and hi <= b + crit.margin
    outside = hi < b - crit.margin or lo > b + crit.margin
  else:
    ok = {'>': lambda x: x > b, '>=': lambda x: x >= b, '<': lambda x: x < b,
          '<=': lambda x: x <= b}[crit.op]
    inside, outside = ok(lo) and ok(hi), not ok(lo) and not ok(hi)
  return 'holds' if inside else 'does not hold' if outside else 'not significant'

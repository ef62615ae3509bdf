"""An experiment's claims, judged on its results table by the one rule (`evaluation.stats`).

`get_report()['claims']` is a list of dicts:
  claim      what is claimed, in the paper's terms ("CoT beats standard prompting")
  paper      the paper's own statement or number, cited as the paper has it
  value: col | diff: (col_a, col_b) | contrast: col with versus: {column: value}
             the quantity per trial: a metric, a paired difference of two metrics of one trial, or
             the difference between this group's trial and the `versus` group's trial of the same
             seed (e.g. γ = 0.3 minus γ = 0)
  where      {column: value or [values]}: the trials it is judged on (all when absent)
  each       a column: one verdict per value of it (one per model size, say)
  criterion  '> 0', '>= -0.05', '<= 0.01', 'within 0.05 of 1.88' (stats.criterion)
  frontier: (x, y) with versus and origin
             per seed, the mean height of this method's (x, y) points above the versus method's
             frontier: its points joined by straight lines from (0, origin column), e.g. gold
             reward vs KL above PPO's, starting at SFT (frontier_gaps)
  interval: prefix
             a quantity the run judged itself (its columns prefix.value / .lo / .hi / .n: the
             pipeline's claims, over its questions); with several runs, t over their values
  se         with one seed: the column(s) holding the trial's own standard error of the quantity
             (over its questions): one column, or one per side of a diff/contrast (combined as
             sqrt(a² + b²), which overstates the error of a paired difference)
  measure    optional text for the measure (default: built from the labels)
With several seeds the interval is Student's t over the per-seed values; with one seed, the
normal interval on `se`; with neither, no interval ('not significant').
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from lmresearch.evals import stats


def _same(a, b) -> bool:
  if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
  return str(a) == str(b)


def _match(value, wanted) -> bool:
  if isinstance(wanted, (list, tuple)):   # any of these values
    return any(_same(value, w) for w in wanted)
  return _same(value, wanted)


def select(table: list[dict], where: Optional[dict]) -> list[dict]:
  """The finished rows whose columns match `where` (a value, or a list of accepted values)."""
  return [r for r in table if r.get('status') == 'done'
          and all(_match(r.get(k), v) for k, v in (where or {}).items())]


def _num(row: dict, col: str) -> float:
  v = row.get(col)
  return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _by_seed(rows: list[dict], fn) -> dict:
  return {r.get('seed', i): fn(r) for i, r in enumerate(rows)}


def quantity(table: list[dict], claim: dict, where: dict) -> tuple[list[float], list[float]]:
  """Per-seed values of the claim's quantity on the rows `where` selects, and (one seed only)
  the standard errors measured inside the run."""
  rows = select(table, where)
  se_cols = claim.get('se')
  se_cols = [se_cols] if isinstance(se_cols, str) else list(se_cols or [])
  ses = lambda r: [_num(r, c) for c in se_cols]
  if 'frontier' in claim:
    return frontier_gaps(table, claim, where), []
  if 'interval' in claim:   # judged inside the run already: its value and 95% bounds
    p = claim['interval']
    return [(_num(r, p + '.value'), _num(r, p + '.lo'), _num(r, p + '.hi'), _num(r, p + '.n'))
            for r in rows], ['given']
  if 'contrast' in claim:
    col = claim['contrast']
    base = {**where, **claim['versus']}
    a = _by_seed(rows, lambda r: (_num(r, col), ses(r)))
    b = _by_seed(select(table, base), lambda r: (_num(r, col), ses(r)))
    pairs = [(a[s], b[s]) for s in a if s in b]
    values = [x[0] - y[0] for x, y in pairs]
    errs = [math.sqrt(sum(e * e for e in x[1] + y[1])) for x, y in pairs] if se_cols else []
  elif 'diff' in claim:
    ca, cb = claim['diff']
    values = [_num(r, ca) - _num(r, cb) for r in rows]
    errs = [math.sqrt(sum(e * e for e in ses(r))) for r in rows] if se_cols else []
  else:
    values = [_num(r, claim['value']) for r in rows]
    errs = [ses(r)[0] for r in rows] if se_cols else []
  return values, errs


def frontier_gaps(table: list[dict], claim: dict, where: dict) -> list[float]:
  """Per seed: how far the `where` method's points lie above the `versus` method's frontier, on
  average over its points. The frontier is the versus method's points of that seed (x, y), sorted
  by x and joined by straight lines from the `origin` point (x = 0, y = the origin column: the
  starting policy); points past its largest x are left out (nothing to compare them with)."""
  x, y = claim['frontier']
  mine = _by_seed_all(select(table, where))
  theirs = _by_seed_all(select(table, {**{k: v for k, v in where.items()
                                          if k not in claim['versus']}, **claim['versus']}))
  out = []
  for seed, rows in mine.items():
    if seed not in theirs:
      continue
    front = sorted((_num(r, x), _num(r, y)) for r in theirs[seed])
    front = [(0.0, _num(rows[0], claim['origin']))] + front
    xs, ys = np.array([p[0] for p in front]), np.array([p[1] for p in front])
    gaps = [_num(r, y) - float(np.interp(_num(r, x), xs, ys)) for r in rows
            if _num(r, x) <= xs.max()]
    if gaps:
      out.append(float(np.mean(gaps)))
  return out


def _by_seed_all(rows: list[dict]) -> dict:
  out: dict = {}
  for r in rows:
    out.setdefault(r.get('seed', 0), []).append(r)
  return out


def interval(values: list, errs: list) -> stats.Interval:
  if errs == ['given']:   # one run's own interval; with several, see stats.pooled_ci
    if len(values) == 1:
      v, lo, hi, n = values[0]
      return stats.Interval(v, lo, hi, int(n) if np.isfinite(n) else 1)
    return stats.pooled_ci([v[:3] for v in values])
  ok = [i for i, v in enumerate(values) if np.isfinite(v)]
  values = [values[i] for i in ok]
  if len(values) == 1 and errs and np.isfinite(errs[ok[0]]):
    return stats.normal_ci(values[0], errs[ok[0]])
  return stats.mean_ci(values)


def groups(table: list[dict], claim: dict) -> list[dict]:
  """The `where` of each verdict: one, or one per value of claim['each'] (in table order)."""
  where = dict(claim.get('where', {}))
  each = claim.get('each')
  if not each:
    return [where]
  seen = []
  for r in select(table, where):
    if r.get(each) is not None and not any(_same(r.get(each), v) for v in seen):
      seen.append(r.get(each))
  return [{**where, each: v} for v in seen]


def measure_text(claim: dict, labels: dict) -> str:
  if claim.get('measure'):
    return claim['measure']
  lab = lambda c: labels.get(c, c)
  if 'frontier' in claim:
    versus = ', '.join(f'{v}' for v in claim['versus'].values())
    return (f'{lab(claim["frontier"][1])} above {versus}\'s {lab(claim["frontier"][1])} vs '
            f'{lab(claim["frontier"][0])} frontier at the same {lab(claim["frontier"][0])} '
            '(mean over its points, per seed)')
  if 'contrast' in claim:
    versus = ', '.join(f'{k}={v}' for k, v in claim['versus'].items())
    return f'{lab(claim["contrast"])}, minus the same at {versus} (same seed)'
  if 'diff' in claim:
    return f'{lab(claim["diff"][0])} − {lab(claim["diff"][1])}'
  return lab(claim['value'])


def evaluate(table: list[dict], claims: list[dict], labels: Optional[dict] = None) -> list[dict]:
  """Every declared claim (per group) with its value, 95% interval, n and verdict."""
  out = []
  for c in claims:
    stats.criterion(c['criterion'])   # a malformed criterion fails here, naming itself
    for where in groups(table, c):
      values, errs = quantity(table, c, where)
      iv = interval(values, errs)
      out.append({'claim': c['claim'], 'paper': c.get('paper', ''),
                  'where': ', '.join(f'{k}={v}' for k, v in where.items()   # filters unsaid
                                     if not isinstance(v, (list, tuple))),
                  'measure': measure_text(c, labels or {}), 'value': iv.value,
                  'ci95': [iv.lo, iv.hi], 'n': iv.n, 'criterion': c['criterion'],
                  'interval': 'the run\'s own' if 'interval' in c and len(values) == 1 else
                  'normal (within-run s.e.)' if iv.n == 1 and np.isfinite(iv.lo)
                  else 't over seeds',
                  'verdict': stats.verdict(iv, c['criterion']) if iv.n else 'not measured'})
  return out


def summary(found: list[dict]) -> str:
  """'3 of 5 claims hold, 2 not significant': the headline an experiment's title carries."""
  n = len(found)
  counts = {v: sum(f['verdict'] == v for f in found) for v in stats.VERDICTS}
  h = counts['holds']
  parts = [f'{h} of {n} claim{"s" if n != 1 else ""} hold{"s" if h == 1 else ""}']
  if counts['not significant']:
    parts.append(f'{counts["not significant"]} not significant')
  if counts['does not hold']:
    k = counts['does not hold']
    parts.append(f'{k} do{"es" if k == 1 else ""} not hold')
  if counts['not measured']:
    parts.append(f'{counts["not measured"]} not measured')
  return ', '.join(parts)

"""A sweep's results table: rows read back from results.csv, derived columns, and the aggregate
over seeds (mean, standard error, n) that the reports and READMEs show."""
from __future__ import annotations

import csv
import math
from typing import NamedTuple, Sequence

import numpy as np


class Agg(NamedTuple):
  """A metric over the seeds of a group."""
  mean: float
  se: float
  n: int


def mean_se(values: Sequence[float]) -> Agg:
  """Mean, standard error (sample std with n−1, over √n; nan for n = 1) and n, of the finite values."""
  v = np.asarray([x for x in values if isinstance(x, (int, float)) and np.isfinite(x)],
                 dtype=np.float64)
  if not len(v):
    return Agg(math.nan, math.nan, 0)
  se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else math.nan
  return Agg(float(v.mean()), se, len(v))


def aggregate(table: list[dict], swept: Sequence[str], metrics: Sequence[str],
              extra: Sequence[str] = ()) -> list[dict]:
  """Groups the finished trials by every swept column but `seed` -> per group, each metric's
  (mean, s.e., n), and the `extra` columns (the same in every trial of a group, e.g. a derived
  label) as its first trial has them."""
  keys = [k for k in swept if k != 'seed']
  groups: dict[tuple, list[dict]] = {}
  for r in table:
    if r['status'] == 'done':
      groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
  return [{**dict(zip(keys, g)), **{k: rs[0].get(k) for k in extra if k not in keys},
           **{m: mean_se([r.get(m) for r in rs]) for m in metrics}} for g, rs in groups.items()]


def _parse(cell: str):
  if cell == '':
    return None
  if cell in ('True', 'False'):
    return cell == 'True'
  for kind in (int, float):
    try:
      return kind(cell)
    except ValueError:
      pass
  return cell


def read_csv(path: str) -> list[dict]:
  """results.csv -> rows with numbers as numbers and empty cells left out."""
  with open(path, newline='') as f:
    return [{k: v for k, v in ((k, _parse(v)) for k, v in row.items()) if v is not None}
            for row in csv.DictReader(f)]


def with_derived(table: list[dict], spec: dict) -> list[dict]:
  """Each finished row with the spec's derived columns computed (again) from its other columns."""
  out = []
  for r in table:
    r = dict(r)
    if r.get('status') == 'done':
      for name, fn in (spec.get('derived') or {}).items():
        try:
          r[name] = fn(r)
        except Exception:   # a derived column of a trial that lacks what it needs
          r.pop(name, None)
    out.append(r)
  return out

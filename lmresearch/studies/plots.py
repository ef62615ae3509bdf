"""The sweep report's figures: a metric against a swept value or along a declared axis (one line
per group, with standard-error bars and optional curve fits), and logged values along training.
The spec format is in lmresearch/studies/results.py."""
from __future__ import annotations

import math
import os
import re
from typing import Callable

import numpy as np

# Curve families for plots: name -> (formula, feature fn of x; the fit is linear in its params).
FITS: dict[str, tuple[str, Callable]] = {
    'linear': ('a + b·x', lambda x: [np.ones_like(x), x]),
    'bon': ('x·(α − β·x)', lambda x: [x, -x * x]),   # Gao et al. 2022, best-of-n, x = sqrt KL
    'rl': ('x·(α − β·log x)', lambda x: [x, -x * np.log(np.maximum(x, 1e-9))]),   # ... and RL
}


def fit(name: str, x, y) -> dict:
  formula, features = FITS[name]
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  A = np.stack(features(x), axis=1)
  params, *_ = np.linalg.lstsq(A, y, rcond=None)
  return {'formula': formula, 'params': [float(p) for p in params]}


def plot(spec: dict, agg: list[dict], path: str) -> list[dict]:
  """One PNG: spec['y'] against spec['x'], a line (and fit) per group; returns the fits."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  x = spec.get('xlabel', spec.get('x', ''))
  y = spec.get('ylabel', spec['y'] if isinstance(spec.get('y'), str) else 'value')
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  fits = []
  for label, xs, ys, ses in _lines(spec, agg):
    line = ax.errorbar(xs, ys, yerr=np.nan_to_num(ses), marker='o', capsize=3, label=label)
    fits += _fit_line(ax, spec, xs, ys, line[0].get_color(), label, path)
  for i, (label, col) in enumerate(spec.get('hlines', {}).items()):   # reference levels
    for r in agg:
      if col in r and np.isfinite(r[col][0]):
        ax.axhline(r[col][0], ls=':', color=f'C{7 + i}', label=label)
        label = None   # once in the legend
  if spec.get('logx'):
    ax.set_xscale('log')
  if 'series' in spec and 'x' not in spec:   # the declared x values as ticks (1, 3, 5, 10 paths)
    ticks = sorted({xv for cols in spec['series'].values() for xv in cols})
    ax.set_xticks(ticks, [f'{t:.2g}' for t in ticks])
    ax.minorticks_off()
  _finish(fig, ax, x, y, spec.get('title', f'{y} vs {x}'), path)
  return fits


def _fit_line(ax, spec, xs, ys, color, label, path) -> list[dict]:
  """The spec's curve fitted to the points and drawn dashed over them; [] without a fit."""
  if not spec.get('fit') or len(xs) < 2:
    return []
  f = fit(spec['fit'], xs, ys)
  grid = np.linspace(max(xs.min(), 1e-3) if spec['fit'] == 'rl' else xs.min(), xs.max(), 100)
  ax.plot(grid, np.stack(FITS[spec['fit']][1](grid), 1) @ np.asarray(f['params']), '--',
          color=color, alpha=0.7)
  return [{'plot': os.path.basename(path), 'group': label, 'points': len(xs), **f}]


def _finish(fig, ax, xlabel, ylabel, title, path) -> None:
  import matplotlib.pyplot as plt
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _lines(spec: dict, agg: list[dict]):
  """(label, xs, ys, standard errors) per line of a plot spec, points sorted by x."""
  group = spec.get('group')
  for g in sorted({r.get(group) for r in agg} if group else [None], key=str):
    rows = [r for r in agg if not group or r.get(group) == g]
    prefix = spec.get('group_labels', {}).get(g, f'{group}={g}') if group else ''
    none = (math.nan, math.nan, 0)
    lines = [(f'{prefix} {name}'.strip(), [(xv, r.get(col, none)) for xv, col in cols.items()
                                           for r in rows])
             for name, cols in spec.get('series', {}).items()]
    ys = [spec['y']] if isinstance(spec.get('y'), str) else list(spec.get('y', []))
    for y in ys:
      name = spec.get('labels', {}).get(y, y)
      lines.append((f'{prefix} {name}'.strip() if len(ys) > 1 or not prefix else prefix,
                    [(_val(r.get(spec['x'])), r.get(y, none)) for r in rows]))
    for label, pts in lines:
      pts = sorted((xv, m[0], m[1]) for xv, m in pts if xv is not None and np.isfinite(m[0]))
      if pts:
        xs, ys, ses = map(np.asarray, zip(*pts))
        yield label, xs, ys, ses


def curve_column(run: str, step: int, key: str) -> str:
  """The results-table column holding `key` as logged at `step` of a trial's sub-run `run`."""
  return f'{run}@{step}.{key}'


_COLUMN = re.compile(r'^(?P<run>[^@]*)@(?P<step>\d+)\.(?P<key>.+)$')


def curve_points(spec: dict, table: list[dict], raw: bool = False) -> dict:
  """group -> points of spec['y'] against spec['x'] along training, read from the table's curve
  columns (pooled over seeds; `relative`: minus each trial's first point). raw: group -> step ->
  [(x, y), ...] instead, x untransformed."""
  run, group = spec.get('run', ''), spec.get('group')
  points: dict = {}
  for row in table:
    if row.get('status') != 'done':
      continue
    steps: dict = {}
    for col, v in row.items():
      m = _COLUMN.match(col)
      if m and m['run'] == run and m['key'] in (spec['x'], spec['y']) and v is not None:
        steps.setdefault(int(m['step']), {})[m['key']] = float(v)
    mine = [(s, d[spec['x']], d[spec['y']]) for s, d in sorted(steps.items())
            if spec['x'] in d and spec['y'] in d]
    if spec.get('relative') and mine:   # the gain over the trial's first logged point (step 0)
      mine = [(s, x, y - mine[0][2]) for s, x, y in mine]
    g = row.get(group) if group else None
    if raw:
      for s, x, y in mine:
        points.setdefault(g, {}).setdefault(s, []).append((x, y))
    elif mine:
      tx = (lambda x: math.sqrt(max(x, 0.0))) if spec.get('sqrt_x') else (lambda x: x)
      points.setdefault(g, []).extend((tx(x), y) for _, x, y in mine)
  return points


def curve(spec: dict, table: list[dict], path: str) -> list[dict]:
  """One PNG of logged points along training: spec['y'] against spec['x'] at every step that
  logged both, per group (pooled over seeds), each group with its fit."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  group = spec.get('group')
  points = curve_points(spec, table)
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  fits = []
  for i, (g, pts) in enumerate(sorted(points.items(), key=lambda kv: str(kv[0]))):
    xs, ys = map(np.asarray, zip(*sorted(pts)))
    label = f'{group}={g}' if group else spec['y']
    ax.scatter(xs, ys, s=12, color=f'C{i}', label=label)
    if spec.get('connect'):   # one trial per group: its points in order along training
      ax.plot(xs, ys, '-', color=f'C{i}', alpha=0.5)
    fits += _fit_line(ax, spec, xs, ys, f'C{i}', label, path)
  _finish(fig, ax, ('√' if spec.get('sqrt_x') else '') + spec['x'], spec['y'],
          spec.get('title', f'{spec["y"]} along training'), path)
  return fits


def _val(v):
  if hasattr(v, 'mean') and hasattr(v, 'se'):   # an aggregated metric used as x: its mean
    return v[0] if np.isfinite(v[0]) else None
  return v

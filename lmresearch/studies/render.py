"""What a reader of an experiment sees, rendered from its results table and nothing else.

An experiment README keeps its prose (the claim, the setup, the discussion); its first line (the
title, with the verdict count) and the block between BEGIN and END are rendered here from
results.csv and the experiment's get_report(): the verdicts, the results table (mean ± standard
error over seeds), curve tables, fits and plots.

  python -m lmresearch.sweep --config=experiments/<name>/config.py --report_only

refreshes them from experiments/<name>/results.csv (tests/test_docs.py re-renders every shipped
experiment and fails when a README differs).
"""
from __future__ import annotations

import math
import os
import re
from typing import Optional

import numpy as np

from lmresearch.core import fileio
from lmresearch.studies import hyper, verdicts
from lmresearch.studies.plots import curve, curve_points, plot
from lmresearch.studies.table import aggregate, read_csv, with_derived  # noqa: F401

BEGIN = ('<!-- BEGIN RESULTS: rendered from results.csv by `python -m lmresearch.sweep '
         '--config={config} --report_only`; edit get_report(), not this block -->')
END = '<!-- END RESULTS -->'
SEED = 'seed'


# ---- the table ------------------------------------------------------------------------------

def swept_columns(exp) -> list[str]:
  return list(hyper.short_names(exp.sweep()).values())


# ---- cells -----------------------------------------------------------------------------------

def number(x: float, decimals: int = 3) -> str:
  if x is None or not np.isfinite(x):
    return '—'
  if abs(x) >= 1000 and float(x).is_integer():
    return f'{x:,.0f}'
  return f'{x:.{decimals}f}'


def mean_se(m: float, se: float) -> str:
  """'0.315 ± 0.039': the standard error to two significant digits, the mean to match."""
  if not np.isfinite(m):
    return '—'
  if not np.isfinite(se):
    return number(m)
  if se == 0:
    return f'{number(m)} ± 0'

  d = max(0, min(6, 1 - math.floor(math.log10(abs(se)))))
  return f'{m:.{d}f} ± {se:.{d}f}'


def _interval(c: dict) -> str:
  lo, hi = c['ci95']
  if not (np.isfinite(lo) and np.isfinite(hi)):
    return f'{number(c["value"])} [no interval]'
  return f'{number(c["value"])} [{number(lo)}, {number(hi)}]'


def _float(v) -> float:
  return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
  esc = lambda s: str(s).replace('|', '\\|')
  return (['| ' + ' | '.join(map(esc, header)) + ' |', '|' + ' --- |' * len(header)]
          + ['| ' + ' | '.join(map(esc, r)) + ' |' for r in rows])


# ---- sections --------------------------------------------------------------------------------

def claims_section(found: list[dict]) -> list[str]:
  rows = [[c['claim'], c['where'] or 'all trials', c['measure'], _interval(c), str(c['n']),
           c['criterion'], f'**{c["verdict"]}**' if c['verdict'] == 'holds' else c['verdict']]
          for c in found]
  lines = md_table(['claim', 'trials', 'measure', 'value [95% interval]', 'n', 'criterion',
                    'verdict'], rows)
  papers: dict = {}
  for c in found:
    if c['paper'] and c['claim'] not in papers.setdefault(c['paper'], []):
      papers[c['paper']].append(c['claim'])
  if papers:
    lines += ['', 'What the paper says:', ''] + [
        f'- *{"; ".join(claims)}*: {paper}' for paper, claims in papers.items()]
  return lines


def results_section(agg: list[dict], head: list[str], metrics: list[str], labels: dict,
                    note: bool = True) -> list[str]:
  ns = {a[m].n for a in agg for m in metrics if a.get(m) is not None and a[m].n}
  header = [labels.get(c, c) for c in head + metrics]
  rows = [[str(a.get(c)) for c in head]
          + [mean_se(a[m].mean, a[m].se) if a.get(m) is not None and a[m].n else '—'
             for m in metrics] for a in agg]
  n_text = (f'n = {ns.pop()} seeds per row' if len(ns) == 1 else
            f'n = {min(ns)}–{max(ns)} seeds per row') if ns else 'no finished trials'
  text = [f'Mean ± standard error over seeds ({n_text}; the standard error is the sample '
          'standard deviation, n − 1, over √n; one seed shows its value alone).', '']
  return (text if note else []) + md_table(header, rows)


def curve_section(spec: dict, table: list[dict], labels: dict) -> list[str]:
  """A logged curve as a table: per group and logged step, the mean of x and y over seeds."""
  pts = curve_points(spec, table, raw=True)
  if not pts:
    return []
  group = spec.get('group')
  header = ([labels.get(group, group)] if group else []) + ['step', labels.get(spec['x'], spec['x']),
                                                         labels.get(spec['y'], spec['y']), 'n']
  rows = []
  for g, steps in pts.items():
    for step in sorted(steps):
      xs, ys = zip(*steps[step])
      rows.append(([str(g)] if group else []) + [str(step), number(float(np.mean(xs))),
                                                 number(float(np.mean(ys))), str(len(xs))])
  return [f'**{spec.get("title", spec["y"])}** (every logged evaluation; mean over seeds):', ''] + md_table(header, rows)


def fits_section(fits: list[dict]) -> list[str]:
  if not fits:
    return []
  rows = [[f['plot'], str(f['group']), f['formula'], ', '.join(f'{p:.3g}' for p in f['params']),
           str(f.get('points', ''))] for f in fits]
  return ['Least-squares fits:', ''] + md_table(['plot', 'group', 'fit', 'parameters', 'points'], rows)


# ---- one experiment -------------------------------------------------------------------------

def metric_columns(spec: dict, table: list[dict], swept: list[str]) -> list[str]:
  if spec.get('metrics'):
    return list(spec['metrics'])
  skip = set(swept) | {'trial', 'status', 'error', 'wall_seconds'}
  return [k for k in dict.fromkeys(k for r in table for k in r)
          if k not in skip and '@' not in k and any(isinstance(r.get(k), (int, float)) for r in table)]


def render(exp, table: list[dict], out_dir: Optional[str], config_path: Optional[str] = None) -> dict:
  """Plots (PNG, into out_dir; none without it), the README title and block, from the table
  alone."""
  spec = exp.report_spec()
  table = with_derived(table, spec)
  swept = swept_columns(exp)
  metrics = metric_columns(spec, table, swept)
  labels = spec.get('labels', {})
  plot_cols = [c for t in spec.get('tables', []) for c in t['metrics']]
  for p in spec.get('plots', []):
    plot_cols += ([c for cols in p.get('series', {}).values() for c in cols.values()]
                  + ([p['x']] if 'x' in p else []) + list(p.get('hlines', {}).values())
                  + ([p['y']] if isinstance(p.get('y'), str) else list(p.get('y', []))))
  head = list(spec.get('head') or [k for k in swept if k != SEED])   # a table row's label columns
  group_cols = [p['group'] for p in spec.get('plots', []) if p.get('group')]
  agg = aggregate(table, swept, [c for c in dict.fromkeys(metrics + plot_cols + ['wall_seconds'])
                                 if c not in swept + head], extra=head + group_cols)
  fits, pngs = [], []
  for p in spec.get('plots', []):
    name = p.get('name') or (p['y'] if isinstance(p.get('y'), str) else 'series').replace('/', '_')
    if out_dir:
      fits += plot(p, agg, os.path.join(out_dir, f'{name}.png'))
    pngs.append(f'{name}.png')
  curves = []
  for c in spec.get('curves', []):
    name = c.get('name') or c['y'].replace('/', '_')
    if curve_points(c, table):
      if out_dir:
        fits += curve(c, table, os.path.join(out_dir, f'{name}.png'))
      pngs.append(f'{name}.png')
      if c.get('table'):
        curves += [''] + curve_section(c, table, labels)
  found = verdicts.evaluate(table, spec.get('claims', []), labels)
  keys = [k for k in swept if k != SEED]
  seeds = max([len(verdicts.select(table, {k: a.get(k) for k in keys})) for a in agg] or [0])
  done = sum(r.get('status') == 'done' for r in table)
  trial_s = sum(float(r.get('wall_seconds') or 0) for r in table if r.get('status') == 'done')
  lines = [BEGIN.format(config=config_path or exp.path), '']
  if found:
    lines += ['**Verdicts** (95% intervals: Student\'s t over seeds, or with one seed the '
              'normal interval on the run\'s own standard error over its questions; *holds* when '
              'the whole interval meets the criterion, *does not hold* when none of it does, '
              '*not significant* otherwise; *not measured* when no finished trial gives it a value):', ''] + claims_section(found) + ['']
  described = spec.get('describe', spec.get('metrics'))
  if described:
    lines += [f'- `{labels.get(m, m)}`' + (f' (`{m}`)' if m in labels else '') + f': {d}'
              for m, d in described.items()] + ['']
  for i, t in enumerate(spec.get('tables') or [{'metrics': metrics}]):   # one per model, say
    lines += ([f'**{t["title"]}**', ''] if t.get('title') else [])
    rows = [a for a in agg if all(verdicts._match(a.get(k), v) for k, v in t.get('where', {}).items())]
    lines += results_section(rows, head, list(t['metrics']), labels, note=i == 0) + ['']
  if spec.get('per_trial'):   # every trial's own values, beside the means
    cols = list(spec['per_trial'])
    lines += ['Per trial:', ''] + md_table(
        ['trial'] + [labels.get(c, c) for c in cols],
        [[r['trial']] + [number(_float(r.get(c))) for c in cols]
         for r in table if r.get('status') == 'done']) + ['']
  for section in spec.get('blocks', []):   # an experiment's own files, rendered by its code
    lines += list(section(os.path.dirname(os.path.abspath(exp.path)))) + ['']
  lines += curves[1:] + [''] if curves else []
  lines += fits_section(fits) + ([''] if fits else [])
  lines += [' '.join(f'![{p[:-4]}]({p})' for p in pngs), ''] if pngs else []
  lines += [f'{done} trials, {trial_s / 60:.0f} min of trial time in all (the sum of each '
            'trial\'s wall seconds). Per-trial values: `results.csv`.', END]
  title = spec.get('title', os.path.basename(os.path.dirname(exp.path)))
  headline = f'# {title}: {verdicts.summary(found)} ({seeds} seed{"s" if seeds != 1 else ""})' \
      if found else f'# {title}'
  return {'title': headline, 'block': '\n'.join(lines), 'claims': found, 'aggregate': agg,
          'fits': fits, 'plots': pngs, 'trial_seconds': trial_s, 'seeds': seeds, 'trials': done}


def splice(text: str, title: str, block: str, where: str) -> str:
  """The README with its first line replaced by `title` and its BEGIN..END block by `block`."""
  lines = text.split('\n')
  if not lines or not lines[0].startswith('# '):
    raise ValueError(f'{where}: the first line must be the title ("# ..."), rendered.')
  body = '\n'.join([title] + lines[1:])
  found = re.search(r'<!-- BEGIN RESULTS.*?-->.*?<!-- END RESULTS -->', body, re.S)
  if not found:
    raise ValueError(f'{where}: no "<!-- BEGIN RESULTS ... -->" ... "{END}" block; add the two '
                     'marker lines where the rendered results go.')
  return body[:found.start()] + block + body[found.end():]


def refresh_readme(exp, results_csv: Optional[str] = None, check: bool = False) -> Optional[str]:
  """Re-renders experiments/<name>/README.md (and its plots) from its results.csv. With check,
  writes nothing and returns a description of the difference (None when up to date)."""
  exp_dir = os.path.dirname(os.path.abspath(exp.path))
  path = results_csv or os.path.join(exp_dir, 'results.csv')
  table = read_csv(path) if os.path.exists(path) else []   # not run yet: every claim not measured
  readme = os.path.join(exp_dir, 'README.md')
  out_dir = exp_dir if not check else _scratch()
  r = render(exp, table, out_dir, os.path.relpath(exp.path))
  old = open(readme).read()
  new = splice(old, r['title'], r['block'], readme)
  if check:
    return None if new == old else _first_difference(old, new, readme)
  fileio.write_text(readme, new)
  return None


def _scratch() -> str:
  import tempfile
  return tempfile.mkdtemp(prefix='lmr-render-')


def _first_difference(old: str, new: str, where: str) -> str:
  a, b = old.split('\n'), new.split('\n')
  for i, (x, y) in enumerate(zip(a, b)):
    if x != y:
      return f'{where}:{i + 1}: the README has\n  {x}\nwhere results.csv renders\n  {y}'
  return f'{where}: {len(a)} lines in the README, {len(b)} rendered'

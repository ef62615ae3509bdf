"""What a sweep measured: one row per trial (results.csv, results.jsonl), and a report that
aggregates over seeds (mean ± standard error, n) with the experiment's plots and curve fits.

An experiment declares its report with `get_report()` -> dict:
  metrics: {column: description}   the columns of the table, in order (default: every metric)
  labels:  {column: short header}   optional table headers for long column names
  derived: {column: fn(row) -> value}   columns computed from a row (e.g. sqrt of a KL)
  plots:   [{'x': column, 'y': column (or a list), 'group': column or None, 'logx': bool,
             'fit': one of FITS or None, 'title': str}]
           or, for several metrics of one trial along a declared axis (e.g. accuracy vs the
           number of sampled paths), {'series': {label: {x value: column}}, 'xlabel', 'ylabel',
           'group': column or None}: a line per label (and group); 'group_labels': {value:
           legend label}; 'hlines': {label: column}
           draws a reference level (e.g. greedy CoT) in either kind
  curves:  [{'run': sub-run, 'x': key, 'y': key, 'group': column or None, 'sqrt_x': bool,
             'fit': ..., 'connect': bool, 'relative': bool (y minus the trial's first point),
             'title': str}]: every logged step of <trial>/<run>/metrics.jsonl as a
           point (e.g. gold reward vs √KL along PPO), pooled over seeds, one colour per group
A column is an override key (its last component, as in trial names), `seed`, or a metric: the
last value of each metrics.jsonl key of a stage run, or the flattened report.json of a pipeline.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np

from lmresearch import fileio
from lmresearch.sweeps import hyper
from lmresearch.sweeps.plots import curve, plot
from lmresearch.sweeps.trials import Trial



def flatten(obj, prefix: str = '') -> dict:
  """Nested dicts -> {'a.b.c': number}; lists and strings are left out."""
  out = {}
  for k, v in obj.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(flatten(v, key + '.'))
    elif isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
      out[key] = float(v)
  return out


def final_metrics(run_dir: str) -> dict:
  """A pipeline's flattened report.json, else the last value of each metrics.jsonl key."""
  report = os.path.join(run_dir, 'report.json')
  if os.path.exists(report):
    with open(report) as f:
      return flatten(json.load(f))
  out = {}
  path = os.path.join(run_dir, 'metrics.jsonl')
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if line.strip():
          out.update({k: v for k, v in json.loads(line).items() if isinstance(v, (int, float))})
  return out


class Agg(NamedTuple):
  """A metric over the seeds of a group."""
  mean: float
  se: float
  n: int


def rows(trials: Sequence[Trial], derived: Optional[dict] = None) -> list[dict]:
  """One row per trial: its swept values (by short_names), status, the runner's wall seconds,
  and its final metrics (a pipeline's own `wall_seconds` is left to the runner's)."""
  short = hyper.short_names([t.overrides for t in trials])
  out = []
  for t in trials:
    st = t.status()
    metrics = final_metrics(t.workdir) if st.get('status') == 'done' else {}
    metrics.pop('wall_seconds', None)
    row = {'trial': t.name, **{short[k]: v for k, v in t.overrides.items()},
           'status': st.get('status', 'pending'), 'wall_seconds': st.get('wall_seconds'), **metrics}
    if row['status'] == 'failed':
      row['error'] = ((st.get('error_tail') or '').strip().splitlines() or [''])[-1][-300:]
    if row['status'] == 'done':
      for name, fn in (derived or {}).items():
        try:
          row[name] = fn(row)
        except Exception:   # a derived column of a trial that lacks what it needs
          row[name] = None
    out.append(row)
  return out


def write_rows(workdir: str, table: list[dict]) -> None:
  fileio.write_text(os.path.join(workdir, 'results.jsonl'),
                    ''.join(json.dumps(r) + '\n' for r in table))
  columns = list(dict.fromkeys(k for r in table for k in r))
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=columns)
  w.writeheader()
  w.writerows(table)
  fileio.write_text(os.path.join(workdir, 'results.csv'), buf.getvalue())


def mean_se(values: Sequence[float]) -> Agg:
  """Mean, standard error (sample std with n−1, over √n; nan for n = 1) and n, of the finite values."""
  v = np.asarray([x for x in values if isinstance(x, (int, float)) and np.isfinite(x)],
                 dtype=np.float64)
  if not len(v):
    return Agg(math.nan, math.nan, 0)
  se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else math.nan
  return Agg(float(v.mean()), se, len(v))


def aggregate(table: list[dict], swept: Sequence[str], metrics: Sequence[str]) -> list[dict]:
  """Groups the finished trials by every swept column but `seed` -> per group, each metric's
  (mean, s.e., n)."""
  keys = [k for k in swept if k != 'seed']
  groups: dict[tuple, list[dict]] = {}
  for r in table:
    if r['status'] == 'done':
      groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
  return [{**dict(zip(keys, g)), **{m: mean_se([r.get(m) for r in rs]) for m in metrics}}
          for g, rs in groups.items()]


def _cell(v) -> str:
  if isinstance(v, Agg):
    m, se, n = v
    if not n:
      return '—'
    return f'{m:.4g} ± {se:.2g} (n={n})' if np.isfinite(se) else f'{m:.4g} (n=1)'
  return str(v)


def write_report(workdir: str, exp_spec: str, trials: Sequence[Trial], spec: dict,
                 command: str) -> dict:
  table = rows(trials, spec.get('derived'))
  write_rows(workdir, table)
  swept = list(hyper.short_names([t.overrides for t in trials]).values())
  numeric = [k for k in dict.fromkeys(k for r in table for k in r)
             if k not in swept + ['trial', 'status', 'error', 'wall_seconds'] and any(
                 isinstance(r.get(k), (int, float)) for r in table)]
  metrics = list(spec.get('metrics') or numeric)
  for p in spec.get('plots', []):
    cols = ([c for cols in p.get('series', {}).values() for c in cols.values()]
            + ([p['x']] if 'x' in p else []) + list(p.get('hlines', {}).values())
            + ([p['y']] if isinstance(p.get('y'), str) else list(p.get('y', []))))
    metrics += [c for c in cols if c not in swept and c not in metrics]
  agg = aggregate(table, swept, metrics + ['wall_seconds'])
  fits = []
  for i, p in enumerate(spec.get('plots', [])):
    name = p.get('name') or (p['y'] if isinstance(p.get('y'), str) else 'series').replace('/', '_')
    fits += plot(p, agg, os.path.join(workdir, f'plot_{i}_{name}.png'))
  for i, c in enumerate(spec.get('curves', [])):
    fits += curve(c, trials, table, os.path.join(workdir, f'curve_{i}_{c.get("name", "")}.png'))
  done = sum(r['status'] == 'done' for r in table)
  failed = [r for r in table if r['status'] == 'failed']
  head = [k for k in swept if k != 'seed']
  labels = spec.get('labels', {})   # short table headers for long metric names
  lines = [f'# Sweep: {exp_spec}', '',
           f'`{command}` — {len(table)} trials: {done} done, {len(failed)} failed, '
           f'{len(table) - done - len(failed)} not run.', '',
           'Each cell: mean ± standard error over the seeds of the group (sample standard '
           'deviation with n − 1, divided by √n), and n. Each trial is one run of the '
           'experiment config with its overrides; a metric is the last value logged in its '
           "metrics.jsonl (a stage run) or its report.json's value (a pipeline run). Per-trial "
           'values: results.csv.', '']
  if spec.get('metrics'):
    lines += [f'- `{labels.get(m, m)}`' + (f' (`{m}`)' if m in labels else '') + f': {d}'
              for m, d in spec['metrics'].items()] + ['']
  cols = head + metrics + ['wall_seconds']
  lines += ['| ' + ' | '.join(labels.get(c, c) for c in cols) + ' |', '|' + ' --- |' * len(cols)]
  lines += ['| ' + ' | '.join(_cell(a.get(c)) for c in cols) + ' |' for a in agg]
  if fits:
    lines += ['', '| plot | group | fit | parameters |', '| --- | --- | --- | --- |']
    lines += [f'| {f["plot"]} | {f["group"]} | {f["formula"]} | '
              + ', '.join(f'{p:.4g}' for p in f['params']) + ' |' for f in fits]
  lines += [''] + [f'![{p}]({p})' for p in sorted(os.listdir(workdir)) if p.endswith('.png')]
  if failed:
    lines += ['', '## Failed trials', ''] + [f'- {r["trial"]}: {r.get("error", "")}'
                                               for r in failed]
  md = '\n'.join(lines) + '\n'
  fileio.write_text(os.path.join(workdir, 'report.md'), md)
  fileio.write_text(os.path.join(workdir, 'report.html'), _html(md))
  return {'rows': table, 'aggregate': agg, 'fits': fits}


def _html(md: str) -> str:
  """The markdown report as plain HTML (tables, images, paragraphs)."""
  out, in_table = ['<html><body style="font-family:sans-serif">'], False
  for line in md.splitlines():
    if line.startswith('|'):
      cells = [html.escape(c.strip()) for c in line.strip('|').split('|')]
      if set(''.join(cells)) <= set('- '):
        continue
      out.append(('<table border=1 cellpadding=4>' if not in_table else '')
                 + '<tr>' + ''.join(f'<td>{c}</td>' for c in cells) + '</tr>')
      in_table = True
      continue
    if in_table:
      out.append('</table>')
      in_table = False
    if line.startswith('!['):
      src = line[line.index('(') + 1:-1]
      out.append(f'<img src="{html.escape(src)}">')
    elif line.startswith('#'):
      level = len(line) - len(line.lstrip('#'))
      out.append(f'<h{level}>{html.escape(line.lstrip("# "))}</h{level}>')
    elif line.strip():
      out.append(f'<p>{html.escape(line)}</p>')
  return '\n'.join(out + (['</table>'] if in_table else []) + ['</body></html>']) + '\n'

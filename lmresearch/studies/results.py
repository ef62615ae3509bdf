"""What a sweep measured: one row per trial (results.csv, results.jsonl), and a report that
aggregates over seeds (mean ± standard error, n) with the experiment's verdicts, plots and fits.

An experiment declares its report with `get_report()` -> dict:
  title:   the README's title (render.py appends the verdict count)
  claims:  [...]  what the experiment tests and the paper's own statement (studies/verdicts.py)
  metrics: {column: description}   the columns of the table, in order (default: every metric)
  labels:  {column: short header}   optional table headers for long column names
  head:    [columns]   the label columns of a table row (default: the swept ones but the seed)
  tables:  [{'title', 'metrics': [columns], 'where': {column: value(s)}}]   several tables
           instead of one of `metrics`, each of the groups `where` selects
  describe: {column: text}   the columns explained under the verdicts (default: `metrics`)
  per_trial: [columns]   also a table of every trial's own values
  blocks:  [fn(experiment dir) -> markdown lines]   more of the block, rendered by the
           experiment's code from files it keeps beside results.csv (e.g. model answers)
  publish_files: {name: '<trial>/<file>'}   trial files `sweep --publish` keeps beside the
           experiment (e.g. one run's report.json)
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
             'table': bool (also a table of the points), 'also': [keys carried too, e.g. their
             standard errors], 'title': str}]: every logged step of
           <trial>/<run>/metrics.jsonl as a point (e.g. gold reward vs √KL along PPO), pooled
           over seeds, one colour per group; the points travel in results.csv as `run@step.key`
A column is an override key (its last component, as in trial names), `seed`, or a metric: the
last value of each metrics.jsonl key of a stage run, or the flattened report.json of a pipeline.
"""
from __future__ import annotations

import csv
import html
import io
import json
import os
from typing import Optional, Sequence

from lmresearch.core import fileio
from lmresearch.studies import hyper
from lmresearch.studies.plots import curve_column
from lmresearch.studies.table import Agg, aggregate, mean_se, with_derived  # noqa: F401
from lmresearch.studies.trials import Trial



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


def curve_values(run_dir: str, curves: Sequence[dict]) -> dict:
  """Every logged value a declared curve plots, as columns `run@step.key` (plots.curve_column):
  so that curves, like tables, render from results.csv alone."""
  out = {}
  for run in dict.fromkeys(c.get('run', '') for c in curves):
    keys = {k for c in curves if c.get('run', '') == run
            for k in (c['x'], c['y'], *c.get('also', ()))}
    path = os.path.join(run_dir, run, 'metrics.jsonl')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      for line in f:
        m = json.loads(line) if line.strip() else {}
        for k in keys & set(m):
          out[curve_column(run, int(m['step']), k)] = m[k]
  return out


def rows(trials: Sequence[Trial], spec: Optional[dict] = None) -> list[dict]:
  """One row per trial: its swept values (by short_names), status, the runner's wall seconds,
  its final metrics (a pipeline's own `wall_seconds` is left to the runner's), the points of the
  declared curves and the derived columns."""
  spec = spec or {}
  short = hyper.short_names([t.overrides for t in trials])
  out = []
  for t in trials:
    st = t.status()
    done = st.get('status') == 'done'
    metrics = final_metrics(t.workdir) if done else {}
    metrics.pop('wall_seconds', None)
    row = {'trial': t.name, **{short[k]: v for k, v in t.overrides.items()},
           'status': st.get('status', 'pending'), 'wall_seconds': st.get('wall_seconds'), **metrics}
    if row['status'] == 'failed':
      row['error'] = ((st.get('error_tail') or '').strip().splitlines() or [''])[-1][-300:]
    if done:
      row.update(curve_values(t.workdir, spec.get('curves', [])))
    out.append(row)
  return with_derived(out, spec)


def write_rows(workdir: str, table: list[dict]) -> None:
  fileio.write_text(os.path.join(workdir, 'results.jsonl'),
                    ''.join(json.dumps(r) + '\n' for r in table))
  columns = list(dict.fromkeys(k for r in table for k in r))
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=columns)
  w.writeheader()
  w.writerows(table)
  fileio.write_text(os.path.join(workdir, 'results.csv'), buf.getvalue())


def write_report(workdir: str, exp, trials: Sequence[Trial], command: str) -> dict:
  """results.{csv,jsonl}, the plots and report.{md,html} in the sweep's workdir, rendered from
  the trials' rows as an experiment README is (render.py)."""
  from lmresearch.studies import render
  table = rows(trials, exp.report_spec())
  write_rows(workdir, table)
  r = render.render(exp, table, workdir)
  done = sum(row['status'] == 'done' for row in table)
  failed = [row for row in table if row['status'] == 'failed']
  lines = [f'# Sweep: {exp.spec}', '',
           f'`{command}` — {len(table)} trials: {done} done, {len(failed)} failed, '
           f'{len(table) - done - len(failed)} not run.', '',
           'Each trial is one run of the experiment config with its overrides; a metric is the '
           "last value logged in its metrics.jsonl (a stage run) or its report.json's value (a "
           'pipeline run).', '', r['title'][2:], '', r['block']]
  if failed:
    lines += ['', '## Failed trials', ''] + [f'- {row["trial"]}: {row.get("error", "")}'
                                               for row in failed]
  md = '\n'.join(lines) + '\n'
  fileio.write_text(os.path.join(workdir, 'report.md'), md)
  fileio.write_text(os.path.join(workdir, 'report.html'), _html(md))
  return {'rows': table, **r}


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

"""The stage-by-stage report: report.md, report.html (plots embedded) and report.json.

Input is the pipeline's measured results (see pipeline.py); nothing here computes a number.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Optional

from lmresearch.core import fileio
from lmresearch.training.metrics import read_metrics

STAGE_COLUMNS = (('heldout_loss', 'held-out loss'), ('answer_accuracy', 'answer accuracy'),
                 ('reward_mean', 'reward (RM, normalized)'), ('sampled_reward_mean', 'sampled reward'),
                 ('sampled_accuracy', 'sampled accuracy'), ('sampled_padded_share', 'sampled padded share'),
                 ('win_rate_vs_previous', 'win rate vs previous'),
                 ('exact_win_rate_vs_previous', 'win rate vs previous (exact)'),
                 ('sampled_win_rate_vs_previous', 'sampled win rate vs previous'),
                 ('labeler_quality', 'labeler quality'),
                 ('sampled_labeler_quality', 'sampled labeler quality'),
                 ('degenerate_share', 'degenerate share'),
                 ('sampled_degenerate_share', 'sampled degenerate share'), ('kl_to_sft', 'KL to SFT'))
RM_KINDS = ('concise', 'terse', 'padded', 'rude', 'wrong', 'wrong_terse', 'wrong_padded',
            'rude_wrong', 'non_answer', 'off_topic', 'cut_off', 'echo', 'empty', 'garbage', 'repeated')


def _fmt(v):
  if v is None:
    return '–'
  return f'{v:.3f}' if isinstance(v, float) else str(v)


def _md_table(header, rows):
  out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  out += ['| ' + ' | '.join(_fmt(c) for c in r) + ' |' for r in rows]
  return '\n'.join(out)


def _html_table(header, rows):
  head = ''.join(f'<th>{html.escape(h)}</th>' for h in header)
  body = ''.join('<tr>' + ''.join(f'<td>{html.escape(_fmt(c))}</td>' for c in r) + '</tr>' for r in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def stage_table(results):
  header = ['stage'] + [label for _, label in STAGE_COLUMNS]
  rows = [[name] + [m.get(k) for k, _ in STAGE_COLUMNS] for name, m in results['stages'].items()]
  return header, rows


def claims_table(results):
  header = ['claim', 'measure', 'value', '95% interval', 'n', 'criterion', 'verdict']
  rows = [[c['claim'], c['measure'], c['value'], f"[{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]", c['n'],
           c['criterion'], c['verdict'].upper() if c['verdict'] == 'holds' else c['verdict']]
          for c in results.get('claims', [])]
  return header, rows


def reward_model_table(results):
  """The reward model's held-out reward and pairwise accuracy per kind of reply, degenerate ones
  included, and its mean reward of each stage's correct, wrong and degenerate greedy answers."""
  rm = results.get('reward_model') or {}
  by_kind = rm.get('by_kind', {})
  header = ['reply', 'RM reward (mean)', 'pairs ranked right', 'replies']
  rows = [[k, by_kind[k]['reward_mean'], by_kind[k]['pair_accuracy'], by_kind[k]['count']]
          for k in sorted(by_kind, key=lambda k: RM_KINDS.index(k) if k in RM_KINDS else 99)]
  for stage, m in results['stages'].items():
    for outcome, v in m.get('reward_by_outcome', {}).items():
      rows.append([f'{stage} greedy answers: {outcome}', v['reward_mean'], None, v['count']])
  return header, rows


def shown(text: str) -> str:
  """An answer as the side-by-side shows it: nothing at all is written, not left blank."""
  return repr(text) if text.strip() else '(empty)'


def prompting_table(results):
  methods = results['prompting_methods']
  header = ['model', 'method', 'all', '1-step', '2-step', '3-step']
  rows = []
  for model, by_method in results['prompting_by_steps'].items():
    for method in methods:
      r = by_method.get(method)
      if r is not None:
        rows.append([model, method, r['all'], r.get('1'), r.get('2'), r.get('3')])
  return header, rows


def plot_curves(workdir: str, runs: dict, out_dir: str) -> list[str]:
  """PNG plots of each stage's logged curves; returns their file names."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  panels = [('pretraining / SFT loss', [('pretrain', 'train/loss'), ('pretrain', 'eval/loss'),
                                        ('sft', 'train/loss'), ('sft', 'eval/loss')]),
            ('reward model', [('reward', 'reward/accuracy'), ('reward', 'eval/reward/accuracy'),
                              ('dpo', 'dpo/margin')]),
            ('RL', [('ppo', 'ppo/reward_mean'), ('ppo', 'ppo/kl'), ('grpo', 'grpo/accuracy'),
                    ('grpo', 'eval/grpo/accuracy')])]
  names = []
  for title, series in panels:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    drawn = 0
    for stage, key in series:
      rows = [r for r in read_metrics(runs.get(stage, '')) if key in r] if stage in runs else []
      if rows:
        ax.plot([r['step'] for r in rows], [r[key] for r in rows], marker='.', label=f'{stage}: {key}')
        drawn += 1
    if drawn:
      ax.set_title(title)
      ax.set_xlabel('step')
      ax.legend(fontsize=7)
      ax.grid(alpha=0.3)
      name = title.split()[0].replace('/', '') + '.png'
      fig.tight_layout()
      _save(fig, out_dir, name)
      names.append(name)
    plt.close(fig)
  return names


def _save(fig, out_dir: str, name: str) -> None:
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=110)
  fileio.write_bytes(fileio.join(out_dir, name), buf.getvalue())


def plot_stages(results: dict, out_dir: str) -> Optional[str]:
  """Bar chart of each stage's answer accuracy and gold labeler quality, greedy and sampled."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  stages = results['stages']
  if not stages:
    return None
  names = list(stages)
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  for ax, (key, label) in zip(axes, (('accuracy', 'answer accuracy'), ('labeler_quality', 'gold labeler quality'))):
    greedy_key = 'answer_accuracy' if key == 'accuracy' else key
    x = range(len(names))
    for off, k, lab in ((-0.2, greedy_key, 'greedy'), (0.2, f'sampled_{key}', 'sampled (T=1)')):
      vals = [stages[n].get(k) for n in names]
      ax.bar([i + off for i in x], [v if v is not None else 0 for v in vals], 0.4, label=lab)
    ax.set_xticks(list(x))
    ax.set_xticklabels(names)
    ax.set_title(label)
    ax.grid(alpha=0.3, axis='y')
  axes[0].set_ylim(0, 1)
  axes[1].set_ylim(0, 4)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  name = 'stages.png'
  _save(fig, out_dir, name)
  plt.close(fig)
  return name


def write(workdir: str, results: dict, runs: dict) -> dict:
  """Writes report.{md,html,json} into workdir; returns the JSON object."""
  bars = plot_stages(results, workdir)
  plots = ([bars] if bars else []) + plot_curves(workdir, runs, workdir)
  ch, cr = claims_table(results)
  sh, sr = stage_table(results)
  rh, rr = reward_model_table(results)
  ph, pr = prompting_table(results)
  reused = results.get('reused_stages', [])
  wall = f"Wall time: {results['wall_seconds']:.0f} s."
  if reused:   # their models were trained by the upstream run, and measured again by this one
    wall += (f" The stages {', '.join(reused)} were reused from an upstream run: with them the "
             f"pipeline takes {results['pipeline_seconds']:.0f} s.")
  md = ['# lmresearch pipeline report', '',
        f"{wall} Everything below was measured by this run.", '',
        '## Claims this run tests', '', _md_table(ch, cr), '',
        '## Stages', '', _md_table(sh, sr), '', results.get('stage_notes', ''), '']
  md += [f'![{bars}]({bars})', ''] if bars else []
  md += ['## The reward model, per kind of reply (held-out, noise-free)', '', _md_table(rh, rr), '',
         '## Prompting (answer accuracy on the embedded world\'s word problems)', '',
         _md_table(ph, pr), '', '## The same prompts, answered by each model', '']
  for ex in results['examples']:
    md.append(f"**Prompt:** {ex['prompt']}\n")
    for model, text in ex['answers'].items():
      md.append(f'- *{model}*: {shown(text)}')
    md.append('')
  curves = [p for p in plots if p != bars]   # the bar chart already sits beside the stage table
  md += ['## Curves', ''] + [f'![{p}]({p})' for p in curves]
  fileio.write_text(fileio.join(workdir, 'report.md'), '\n'.join(md) + '\n')

  def img(name):
    png = fileio.read_bytes(fileio.join(workdir, name))
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}">'

  imgs = ''.join(img(p) for p in curves)
  examples = ''.join(
      f"<h4>{html.escape(ex['prompt'])}</h4><ul>" +
      ''.join(f'<li><b>{html.escape(m)}</b>: {html.escape(shown(t))}</li>' for m, t in ex['answers'].items()) +
      '</ul>' for ex in results['examples'])
  page = (f'<!doctype html><meta charset="utf-8"><title>lmresearch report</title>'
          f'<style>body{{font-family:sans-serif;max-width:70em;margin:auto}}table{{border-collapse:collapse}}'
          f'td,th{{border:1px solid #ccc;padding:3px 8px}}img{{max-width:32%}}</style>'
          f'<h1>lmresearch pipeline report</h1><p>Wall time: {results["wall_seconds"]:.0f} s.</p>'
          f'<h2>Claims this run tests</h2>{_html_table(ch, cr)}'
          f'<h2>Stages</h2>{_html_table(sh, sr)}<p>{html.escape(results.get("stage_notes", ""))}</p>'
          f'{img(bars) if bars else ""}'
          f'<h2>The reward model, per kind of reply</h2>{_html_table(rh, rr)}'
          f'<h2>Prompting</h2>{_html_table(ph, pr)}<h2>Side by side</h2>{examples}'
          f'<h2>Curves</h2>{imgs}')
  fileio.write_text(fileio.join(workdir, 'report.html'), page)

  machine = {'wall_seconds': results['wall_seconds'], 'stages': results['stages'],
             'reward_model_accuracy': results.get('reward_model_accuracy'),
             'reward_model': results.get('reward_model'), 'claims': results.get('claims', []),
             'claim_values': results.get('claim_values', {}),
             'stage_seconds': results.get('stage_seconds', {}),
             'reused_stages': results.get('reused_stages', []),
             'pipeline_seconds': results.get('pipeline_seconds', results['wall_seconds']),
             'prompting': {m: {k: v['all'] for k, v in by.items()}
                           for m, by in results['prompting_by_steps'].items()},
             'prompting_by_steps': results['prompting_by_steps'], 'plots': plots}
  if results.get('best_of_n'):
    machine['best_of_n'] = results['best_of_n']
  fileio.write_json(fileio.join(workdir, 'report.json'), machine, indent=2)
  return machine

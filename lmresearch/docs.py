"""Every number a reader sees in the READMEs, rendered from the results that ship:

  python -m lmresearch.docs            re-render the blocks of README.md and docs/*.md, and every
                                       experiment README
  python -m lmresearch.docs --check    change nothing; exit 1 naming the first stale line

The blocks (between `<!-- BEGIN name ... -->` and `<!-- END name -->`, in README.md or a docs
page; a block may sit in several pages; BENCH * are the benchmarks' figures, docs/bench/*.json):
  DEFAULT RUN   the default run's claims, stages and prompting tables, from
                experiments/pipeline_seeds/report.json (seed 0 of the main job)
  SEEDS         the claims on every whole-pipeline seed, from experiments/pipeline_seeds/results.csv
  RECIPES       the RLHF claims per seed under each recipe tried (pipeline_seeds/history/*.csv)
  EXPERIMENTS   each experiment's paper, verdict count, seeds and trial time, from its results.csv
Each experiment README is rendered by studies/render.py. tests/test_docs.py runs the check.
"""
from __future__ import annotations

import json
import os
import re
import sys

from absl import app, flags

from lmresearch.evals import claims as claims_lib
from lmresearch.evals import stats
from lmresearch.evals.report import RM_KINDS
from lmresearch.studies import render, trials as trials_lib

flags.DEFINE_bool('check', False, 'Change nothing; exit 1 if a README differs from its data.')
FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join('experiments', 'pipeline_seeds')


def experiments() -> list[str]:
  base = os.path.join(ROOT, 'experiments')
  return sorted(d for d in os.listdir(base) if os.path.isfile(os.path.join(base, d, 'config.py')))


def _load(name: str):
  return trials_lib.load_experiment(os.path.join('experiments', name, 'config.py'))


def _rendered(name: str) -> dict:
  path = os.path.join(ROOT, 'experiments', name, 'results.csv')
  table = render.read_csv(path) if os.path.exists(path) else []   # not run yet
  return render.render(_load(name), table, None)


# ---- blocks --------------------------------------------------------------------------------

def experiments_block() -> list[str]:
  rows = []
  for name in experiments():
    if name == os.path.basename(SEEDS):
      continue
    r = _rendered(name)
    title = r['title'].split(': ')[0][2:]
    rows.append([f'[`{name}`](experiments/{name}/README.md)', title,
                 render.verdicts.summary(r['claims']), str(r['seeds']),
                 f'{r["trial_seconds"] / 60:.0f} min'])
  return render.md_table(['experiment', 'claim tested (paper, figure)', 'verdicts', 'seeds',
                          'trial time'], rows)


def _claims_rows(found: list[dict]) -> list[list[str]]:
  out = []
  for c in found:
    v = stats.verdict((c['value'], *c['ci95']), c['criterion'])
    out.append([c['claim'], c['measure'], f'{render.number(c["value"])} '
                f'[{render.number(c["ci95"][0])}, {render.number(c["ci95"][1])}]', str(c['n']),
                c['criterion'], f'**{v}**' if v == 'holds' else v])
  return out


def _pair(m: dict, a: str, b: str, pct: bool = False) -> str:
  f = (lambda x: '–' if x is None else f'{100 * x:.1f}%') if pct else \
      (lambda x: '–' if x is None else render.number(x, 2 if abs(x) >= 1 else 3))
  return f'{f(m.get(a))} / {f(m.get(b))}'


def default_run_block() -> list[str]:
  path = os.path.join(ROOT, SEEDS, 'report.json')
  if not os.path.exists(path):
    return ['(no default run recorded yet: `experiments/pipeline_seeds/report.json`)']
  rep = json.load(open(path))
  by_id = {c.id: c for c in claims_lib.PIPELINE}
  found = [{**c, 'claim': by_id[c['id']].claim, 'measure': by_id[c['id']].measure,
            'criterion': by_id[c['id']].criterion} for c in rep['claims'] if c.get('id') in by_id]
  out = ['**Claims** (95% intervals over the run\'s questions: t for means, Wilson for shares; '
         'the verdict rule is `evals/stats.py`\'s):', '']
  out += render.md_table(['claim', 'measure', 'value [95% interval]', 'n', 'criterion',
                          'verdict'], _claims_rows(found))
  rows = []
  for name, m in rep['stages'].items():
    rows.append([name, render.number(m.get('heldout_loss')),
                 _pair(m, 'answer_accuracy', 'sampled_accuracy'),
                 _pair(m, 'sampled_padded_share', 'sampled_padded_share', pct=True).split(' / ')[0],
                 _pair(m, 'degenerate_share', 'sampled_degenerate_share', pct=True),
                 _pair(m, 'reward_mean', 'sampled_reward_mean'),
                 _pair(m, 'win_rate_vs_previous', 'sampled_win_rate_vs_previous') + ' / ' +
                 _pair(m, 'exact_win_rate_vs_previous', 'exact_win_rate_vs_previous').split(' / ')[0],
                 _pair(m, 'labeler_quality', 'sampled_labeler_quality'),
                 render.number(m.get('kl_to_sft'))])
  out += ['', '**Stages** (greedy / sampled at T = 1):', '']
  out += render.md_table(['stage', 'held-out loss', 'answer accuracy', 'padded samples',
                          'degenerate', 'reward (RM)', 'win rate vs previous (RM / RM sampled / '
                          'exact)', 'gold quality', 'KL to SFT'], rows)
  methods = [m for m in ('direct', 'instruction', 'few_shot', 'cot') if m in
             rep['prompting_by_steps'].get('base', {})]
  sc = sorted((m for m in rep['prompting_by_steps'].get('base', {}) if m.startswith('self_')),
              key=lambda m: int(m.split('@')[1]))
  header = ['model, word problems'] + [m.replace('self_consistency@', 'SC@') for m in methods + sc]
  rows = []
  for model, by in rep['prompting_by_steps'].items():
    for steps in ('all', '3'):
      rows.append([f'{model}, {"all" if steps == "all" else "3-step"}']
                  + [render.number(by[m].get(steps)) for m in methods + sc])
  out += ['', '**Prompting** (answer accuracy by method):', ''] + render.md_table(header, rows)
  rm = rep.get('reward_model') or {}
  if rm.get('by_kind'):
    kinds = sorted(rm['by_kind'], key=lambda k: RM_KINDS.index(k) if k in RM_KINDS else 99)
    out += ['', f'**The reward model** on held-out noise-free rankings: pairwise accuracy '
            f'{render.number(rm.get("accuracy"))} over all pairs; per kind of reply:', '']
    out += render.md_table(['reply'] + kinds,
                           [['mean reward'] + [render.number(rm['by_kind'][k]['reward_mean'], 2)
                                               for k in kinds],
                            ['pairs ranked right'] + [render.number(rm['by_kind'][k]['pair_accuracy'])
                                                      for k in kinds]])
  secs = rep.get('stage_seconds', {})
  if secs:
    parts = ', '.join(f'{k} {v:.0f} s' for k, v in secs.items())
    out += ['', f'Wall time of the run: {rep.get("pipeline_seconds", rep["wall_seconds"]):.0f} s '
            'of stage and evaluation time '
            f'({parts}; evaluation the rest).']
  return out


def seeds_block() -> list[str]:
  path = os.path.join(ROOT, SEEDS, 'results.csv')
  if not os.path.exists(path):
    return ['(no seeds recorded yet: `experiments/pipeline_seeds/results.csv`)']
  table = render.read_csv(path)
  found = render.verdicts.evaluate(table, _load(os.path.basename(SEEDS)).report_spec()['claims'])
  per_seed = [f for f in found if f['where']]
  seeds = sorted({f['where'] for f in per_seed})
  overall = {f['claim'].replace(' (over seeds)', ''): f for f in found if not f['where']}
  rows = []
  for c in claims_lib.PIPELINE:
    cells = []
    for s in seeds:
      f = next((f for f in per_seed if f['claim'] == c.claim and f['where'] == s), None)
      cells.append('–' if f is None else f'{render.number(f["value"])} '
                   f'[{render.number(f["ci95"][0])}, {render.number(f["ci95"][1])}] {f["verdict"]}')
    o = overall.get(c.claim)
    rows.append([c.claim, c.criterion] + cells + ['–' if o is None else
                                                  f'{render.number(o["value"])} [{render.number(o["ci95"][0])}, '
                                                  f'{render.number(o["ci95"][1])}] {o["verdict"]}'])
  header = ['claim', 'criterion'] + [s.replace('seed=', 'seed ') for s in seeds] + ['over seeds']
  return ['Each seed\'s value, its 95% interval (over that run\'s questions) and verdict; the last '
          'column judges the seeds together: Student\'s t over the runs\' values, widened where it '
          'is narrower than the runs\' own sampling error of their mean (seeds that all give 0 '
          'have no spread, but their questions still do).', ''] + \
      render.md_table(header, rows)


# The recipes the whole-pipeline seeds were run with, oldest first: (label, results file).
RECIPES = (('PPO-ptx, γ 0.3', os.path.join(SEEDS, 'history', 'ptx_0.3.csv')),
           ('PPO, γ 0, KL price 3.0', os.path.join(SEEDS, 'history', 'kl_3.csv')),
           ('PPO, γ 0, KL price 2.0, 32 rollouts a step', os.path.join(SEEDS, 'history', 'ppo_b32.csv')),
           ('PPO, γ 0, KL price 2.0, 64 rollouts a step (today)', os.path.join(SEEDS, 'results.csv')))
RECIPE_CLAIMS = ('rlhf_gold_preferred', 'rlhf_keeps_accuracy')


def recipe_block() -> list[str]:
  """The RLHF claims on every seed under each recipe, from each recipe's results file."""
  by_id = {c.id: c for c in claims_lib.PIPELINE}
  rows = []
  for label, rel in RECIPES:
    path = os.path.join(ROOT, rel)
    if not os.path.exists(path):
      continue
    for r in render.read_csv(path):
      cells = []
      for cid in RECIPE_CLAIMS:
        v, lo, hi = (float(r[f'claim_values.{cid}.{k}']) for k in ('value', 'lo', 'hi'))
        cells.append(f'{render.number(v)} [{render.number(lo)}, {render.number(hi)}] '
                     f'{stats.verdict((v, lo, hi), by_id[cid].criterion)}')
      rows.append([label, r['trial'].replace('seed=', 'seed ')] + cells +
                  [render.number(float(r['stages.rlhf.kl_to_sft'])),
                   render.number(float(r['stages.rlhf.sampled_padded_share']))])
  return ['Each recipe\'s whole-pipeline seeds. The PPO-ptx runs were made on another machine and '
          'code version, so their seeds are not the same base or SFT models as today\'s (a '
          'comparison of recipes, not a paired one); the KL-3.0 and the 64-rollout runs retrained '
          'only PPO on the 32-rollout seeds\' pretraining, SFT and reward model (paired with them '
          'by seed: on this machine a seed\'s stages are the same bit for bit, so each is that '
          'seed\'s whole pipeline).', ''] + \
      render.md_table(
      ['recipe', 'seed', f'{by_id[RECIPE_CLAIMS[0]].claim} ({by_id[RECIPE_CLAIMS[0]].criterion})',
       f'{by_id[RECIPE_CLAIMS[1]].claim} ({by_id[RECIPE_CLAIMS[1]].criterion})', 'KL to SFT',
       'RLHF padded share'], rows)


def _bench(name: str):
  path = os.path.join(ROOT, 'docs', 'bench', f'{name}.json')
  return json.load(open(path)) if os.path.exists(path) else None


def _machine(m: dict) -> str:
  return f'measured {m["date"]} on {m["cpus"]} CPU cores ({m["cpu"]})'


def convert_block() -> list[str]:
  b = _bench('convert')
  if b is None:
    return ['(not measured yet: `python scripts/bench_convert.py --out=docs/bench/convert.json`)']
  rows = [[r['model'], f'{r["params"] / 1e6:,.0f}M ({r["source_dtype"]})', f'{r["model_gb"]:.2f}',
           f'{r["largest_tensor_gb"]:.2f}', f'{r["import_s"]:.1f}', f'{r["import_peak_rss_gb"]:.2f}',
           f'{r["export_s"]:.1f}', f'{r["export_peak_rss_gb"]:.2f}', f'{r["bound_gb"]:.2f}',
           *['yes' if r[f'{k}_peak_rss_gb'] <= r['bound_gb'] else '**no**'
             for k in ('import', 'export')]] for r in b['rows']]
  return [f'`python scripts/bench_convert.py`, {_machine(b["machine"])}; random checkpoints of the '
          'published shapes, each conversion its own process'
          + (f', run {b["rows"][0]["repeats"]} times (peak: the highest; seconds: the median)'
             if b['rows'][0].get('repeats', 1) > 1 else '')
          + (f', the params sharded over {b["machine"]["devices"]} host devices (fsdp)'
             if b['machine'].get('devices', 1) > 1 else ', on one host device')
          + '; the bound is the model\'s bytes as placed (fp32) + its largest tensor + the '
          'overhead (the same command\'s peak on a one-layer model: '
          f'{b["rows"][0]["overhead_gb"]:.2f} GB).', ''] + render.md_table(
      ['model', 'params', 'model GB', 'largest tensor GB', 'import s', 'import peak RSS GB',
       'export s', 'export peak RSS GB', 'bound GB', 'import within', 'export within'], rows) + [
      '', convert_verdict(b['rows'])]


def convert_verdict(rows: list) -> str:
  """One sentence: which conversions stayed within the bound on their worst run."""
  over = [f'{r["model"]} {k} ({r[f"{k}_peak_rss_gb"]:.2f} GB over {r["bound_gb"]:.2f})'
          for r in rows for k in ('import', 'export') if r[f'{k}_peak_rss_gb'] > r['bound_gb']]
  if not over:
    return ('**Every conversion stayed within the bound on every run** (the highest of '
            f'{rows[0].get("repeats", 1)} runs is the one shown).')
  return f'**Over the bound on its worst run: {"; ".join(over)}.**'


def lora_block() -> list[str]:
  b = _bench('lora')
  if b is None:
    return ['(not measured yet: `python scripts/bench_lora.py --out=docs/bench/lora.json`)']
  rows = [[k.replace('_', ' '), f'{r["params_trained"]:,.0f} of {r["params"]:,.0f}',
           f'{r["optimizer_state_mb"]:.1f}', f'{r["checkpoint_mb"]:.1f}',
           '–' if r['step_s'] is None else f'{r["step_s"]:.3f}', f'{r["peak_rss_gb"]:.2f}']
          for k, r in b['results'].items()]
  return [f'`python scripts/bench_lora.py`, rank {b["rank"]} on every projection, '
          f'{_machine(b["machine"])}:', ''] + render.md_table(
      ['run', 'params trained', 'optimizer state MB', 'checkpoint MB', 'step s (median)',
       'peak RSS GB'], rows)


def train_block() -> list[str]:
  b = _bench('train')
  if b is None:
    return ['(not measured yet: `python scripts/bench.py --sections=train --json=docs/bench/train.json`)']
  rows = []
  found = [r for r in b['train']['rows'] if 'error' not in r]
  for r in found:
    peak = next(x['peak_flops'] for x in found if x['model'] == r['model'] and 'peak_flops' in x)
    eager = next(x for x in found if x['model'] == r['model'] and x['name'] == 'PyTorch eager')
    rows.append([r['model'].replace('_', ' '), r['name'], f'{r["ms_per_iter_median"]:.1f}',
                 f'{r["ms_p25"]:.1f}–{r["ms_p75"]:.1f}', f'{r["tokens_per_sec"]:,.0f}',
                 f'{r["flops_per_step"] / (r["ms_per_iter_median"] / 1e3) / peak:.0%}',
                 f'{r["peak_rss_mb"]:,.0f}', f'{r["tokens_per_sec"] / eager["tokens_per_sec"]:.2f}×'])
  return [f'`python scripts/bench.py --sections=train`, measured {b["date"]} on {b["machine"]}; '
          f'{b["iters"]} timed iterations after {b["warmup"]} warm-up, each row its own process, one '
          'after another in one run. MFU is against the fp32 matmul peak measured in the same run; '
          'the last column is tokens/s over PyTorch eager\'s in this run.', ''] + render.md_table(
      ['model', 'implementation', 'ms/iter (median)', 'IQR', 'tokens/s', 'MFU', 'peak RSS MB',
       'vs PyTorch eager'], rows)


def generate_block() -> list[str]:
  b = _bench('generate')
  if b is None:
    return ['(not measured yet: `python scripts/bench.py --sections=generate --json=docs/bench/generate.json`)']
  g, rows = b['generate'], []
  for r in g['rows']:
    if not (r.get('jax') and r.get('torch')):
      rows.append([r['shape'].replace('_', ' '), str(r['batch'])] + ['failed'] * 7)
      continue
    ours, theirs = (r['batch'] * g['new'] / r[fw]['s'] for fw in ('jax', 'torch'))
    bound = r['copy_bandwidth'] / (4 * r['params']) * r['batch']
    rows.append([r['shape'].replace('_', ' '), str(r['batch']), f'{ours:,.0f}', f'{theirs:,.0f}',
                 f'{ours / theirs:.2f}×', f'{r["jax"]["ttft_s"] * 1e3:.1f}',
                 f'{r["torch"]["ttft_s"] * 1e3:.1f}', 'yes' if r.get('same_tokens') else 'no',
                 f'{ours / bound:.0%}' if r['batch'] == 1 else '–'])
  return [f'`python scripts/bench.py --sections=generate`, measured {b["date"]} on {b["machine"]}; '
          f'random weights written once by our exporter and read by both; prompts of {g["prompt"]} '
          f'tokens, {g["new"]} new tokens, greedy, no stop id; median of the timed calls; "same '
          'tokens": the first row\'s first 16 generated ids agree; the bandwidth bound is the copy '
          f'bandwidth measured in the same run ({g["copy_bandwidth"] / 1e9:.1f} GB/s) over the fp32 '
          'weight bytes read per decode step.', ''] + render.md_table(
      ['shape', 'batch', 'ours tokens/s', 'transformers tokens/s', 'ratio', 'ours TTFT ms',
       'transformers TTFT ms', 'same tokens', 'of bandwidth bound (batch 1)'], rows)


def real_models_block() -> list[str]:
  b = _bench('real_models')
  if b is None:
    return ['(not measured yet: `python scripts/bench_real_models.py --json=docs/bench/real_models.json`)']
  m, rows = b['machine'], []
  names = {'gguf': '`--from_gguf` (our dequantizer)', 'from_hf': '`--from_hf` (transformers\' '
           'dequantized save)'}
  for name, r in b['imports'].items():
    rows.append([names.get(name, name), f'{r["seconds"]:.0f}', f'{r["max_abs_logit_diff"]:.1e}',
                 f'{r["max_abs_logit"]:.1f}', f'{r["mean_kl"]:.1e}', f'{r["argmax_agree"]:.1%}',
                 'yes' if r['greedy_64_after_600']['equal'] else 'no',
                 'yes' if r['banana_24']['equal'] else 'no'])
  banana = next(iter(b['imports'].values()))['banana_24']
  out = [f'`python scripts/bench_real_models.py`, measured {b["date"]} on {m["cores"]} CPU cores '
         f'(jax {m["jax"]}, torch {m["torch"]}, transformers {m["transformers"]}): {b["model"]} '
         f'from {b["file"]}, each import against transformers\' model on the same dequantized '
         'weights, fp32; logits on a 640-token prompt (past the 512-token window).', ''] + \
      render.md_table(['import', 'seconds', 'max logit diff', 'max logit', 'mean KL',
                       'argmax agrees', '64 greedy after 600 equal', '"The banana is" equal'], rows)
  out += ['', f'"The banana is" → ours: *{banana["ours"].strip()}*; transformers: '
          f'*{banana["transformers"].strip()}*']
  s = _bench('serve_real')
  if s is not None:
    out += ['', f'Served (`python scripts/bench_serve.py --only_real`, {s["date"]}): '
            f'{s["slots"]} streams at once, peak RSS **{s["peak_rss_gb"]:.2f} GB** (params '
            f'{s["params_gb"]:.2f} GB in fp32 + the default KV budget {s["kv_cache_gb"]:.2f} GB; '
            f'{s["rss_loaded_gb"]:.2f} GB after loading and one request); context served '
            f'{s["served_context"]:,} of the model\'s {s["model_context"]:,} tokens.']
  return out


def real_prompting_block() -> list[str]:
  """experiments/real_base_prompting: each method's accuracy (per seed where it samples) and the
  experiment's verdicts, from its results.csv."""
  name = 'real_base_prompting'
  path = os.path.join(ROOT, 'experiments', name, 'results.csv')
  if not os.path.exists(path):
    return [f'(not run yet: `python experiments/{name}/run.py --publish`)']
  table = [r for r in render.read_csv(path) if r.get('status') == 'done']
  rows = []
  for method in dict.fromkeys(r['method'] for r in table):
    rs = [r for r in table if r['method'] == method]
    each = ', '.join(f'{render.number(float(r["accuracy"]))} [{render.number(float(r["acc_lo"]))}, '
                     f'{render.number(float(r["acc_hi"]))}]' for r in rs)
    secs = [float(r['seconds_per_question']) for r in rs if r.get('seconds_per_question') not in ('', None)]
    rows.append([method, str(len(rs)), each, f'{sum(secs) / len(secs):.1f}' if secs else '–'])
  r = _rendered(name)
  verdicts = [[c['claim'], c['where'] or 'all', _interval_text(c), c['verdict']] for c in r['claims']]
  return ([f'From `experiments/{name}/results.csv` ({int(float(table[0]["questions"]))} GSM8K test '
           'questions, the same for every method; accuracy with its 95% Wilson interval over the '
           'questions, one entry per seed; seconds per question on 2 CPU cores):', '']
          + render.md_table(['method', 'seeds', 'accuracy [95%]', 's / question'], rows) + ['']
          + render.md_table(['claim', 'rows', 'value [95% interval, paired over questions]',
                             'verdict'], verdicts))


def _interval_text(c: dict) -> str:
  lo, hi = c['ci95']
  return f'{render.number(c["value"])} [{render.number(lo)}, {render.number(hi)}]'


def lm_eval_block() -> list[str]:
  b = _bench('lm_eval')
  if b is None:
    return ['(not measured yet: `python scripts/bench_lm_eval.py --shape=100m --server '
            '--json=docs/bench/lm_eval.json`)']
  hf = b['hf']['seconds']
  met = lambda x, target: 'met' if x >= target else '**not met**'
  rows = [['the harness\'s `hf` backend (transformers)', f'{hf:.1f}', '1.00×', '–', '–']]
  o = b['ours']
  rows.append(['in process (`--lm_eval`, model `lmresearch`)', f'{o["seconds"]:.1f}',
               f'{hf / o["seconds"]:.2f}× ({hf / o["warm_seconds"]:.2f}× compiled)', '≥ 2×',
               met(hf / o['seconds'], 2)])
  if 'server' in b:
    s = b['server']
    warm = f' ({hf / s["warm_seconds"]:.2f}× compiled)' if 'warm_seconds' in s else ''
    rows.append(['`local-completions` through `lmresearch.serve`', f'{s["seconds"]:.1f}',
                 f'{hf / s["seconds"]:.2f}×{warm}', '≥ 1×', met(hf / s['seconds'], 1)])
  kinds = [k for k in ('hf', 'ours', 'server') if 'tasks' in b.get(k, {})]
  per_task = []
  if kinds:
    def cell(k, task):
      r = b[k]
      return f'{r["tasks"][task]:.2f}' + (f' ({r["warm_tasks"][task]:.2f})' if 'warm_tasks' in r else '')
    per_task = ['', 'Seconds per task (compiled, second pass, in brackets):', ''] + render.md_table(
        ['task'] + [{'hf': '`hf`', 'ours': 'in process', 'server': 'server'}[k] for k in kinds],
        [[f'`{t}`'] + [cell(k, t) for k in kinds] for t in b[kinds[0]]['tasks']])

  def close(a, b):
    return a.keys() == b.keys() and all(
        abs(a[t][m] - b[t][m]) <= 1e-3 * max(1.0, abs(b[t][m])) for t in b for m in b[t])
  same = all(close(b[k]['metrics'], b['hf']['metrics']) for k in ('ours', 'server') if k in b)
  return [f'`python scripts/bench_lm_eval.py --shape={b["shape"]} --limit={b["limit"]}'
          f'{" --server" if "server" in b else ""}`, measured {b.get("date", "")} on '
          f'{b["cores"]} CPU cores: a random {b["params"] / 1e6:.0f}M-parameter Llama-shaped model, '
          f'the world tasks (multiple choice, rolling log-likelihood, generation), '
          f'{b["limit"]} documents each, batch size {b["batch_size"]}; one backend at a time, '
          'compiles included. The metrics of every backend '
          + ('agree (to 1e-3).' if same else 'differ (see the JSON).'), ''] + render.md_table(
      ['backend', 'seconds', 'speed vs hf', 'the issue\'s target', ''], rows) + per_task


def serve_block() -> list[str]:
  b = _bench('serve')
  if b is None:
    return ['(not measured yet: `python scripts/bench_serve.py --json=docs/bench/serve.json`)']
  rows, m = [], b['machine']
  program = any('program' in r for r in b['shapes'].values())
  for shape, r in b['shapes'].items():
    one = r['ours'][0]['tokens_per_s']
    hf = {x['streams']: x for x in r['transformers']}
    prog = {x['streams']: x['tokens_per_s'] for x in r.get('program', [])}
    for o in r['ours']:
      h = hf.get(o['streams'])
      p = prog.get(o['streams'])
      rows.append([shape.replace('_', ' '), str(o['streams']), f'{o["tokens_per_s"]:,.0f}',
                   f'{o["tokens_per_s"] / one:.1f}×'] + (
          [f'{p / prog[r["ours"][0]["streams"]]:.1f}×' if p else '–'] if program else []) + [
          f'{o["ttft_median_s"] * 1e3:,.0f}', f'{o["ttft_p99_s"] * 1e3:,.0f}'] + (
          [f'{h["tokens_per_s"]:,.0f}', f'{h["ttft_median_s"] * 1e3:,.0f}',
           f'{o["tokens_per_s"] / h["tokens_per_s"]:.1f}×'] if h else ['–'] * 3))
  return [f'`python scripts/bench_serve.py`, measured {b["date"]} on {m["cores"]} CPU cores '
          f'({m["cpu"]}; jax {m["jax"]}, torch {m["torch"]}, transformers {m["transformers"]}); '
          f'`lmresearch.serve` with {b["slots"]} slots, clients streaming /v1/completions over HTTP '
          f'(prompt {b["prompt"]} tokens, {b["new_tokens"]} new, greedy'
          + ('; plain HTTP/1.1 clients that cost the shared cores little' if b.get('client') == 'raw'
             else '') + '); transformers: '
          '`generate` per request in as many threads as streams. Aggregate tokens/s over the '
          'level\'s wall time; TTFT from request to first streamed token.'
          + (' "Program alone": the engine\'s decode program called in a loop with no server, '
             'its tokens/s at that level\'s row bucket over its tokens/s at one stream\'s (the '
             'most batching can give on this machine).' if program else ''), ''] + render.md_table(
      ['shape', 'streams', 'ours tokens/s', 'vs 1 stream'] + (['program alone vs 1 stream'] if program else [])
      + ['TTFT median ms', 'TTFT p99 ms', 'transformers tokens/s', 'transformers TTFT ms',
         'ours / transformers'], rows) + _burst_table(b)


def _burst_table(b) -> list[str]:
  rows = []
  for shape, r in b['shapes'].items():
    for k, x in sorted(r.get('burst', {}).items(), key=lambda kv: int(kv[0])):
      one, tog = x['one_by_one'], x['together']
      rows.append([shape.replace('_', ' '), k] + [
          f'{one[key] * 1e3:,.0f} / {tog[key] * 1e3:,.0f}' for key in ('ttft_median_s', 'ttft_last_s')]
          + [f'{one["tokens_per_s"]:,.0f} / {tog["tokens_per_s"]:,.0f}'])
  if not rows:
    return []
  return ['', 'Bursts: k requests (32 new tokens each) submitted to the engine at once (no HTTP), '
          'as a request with `n` choices or a batch client sends them, the waiting requests '
          'prefilled one by one / '
          'together (one program for up to 16; the engine\'s way), in the same run, median of '
          'three bursts:', ''] + render.md_table(
      ['shape', 'requests at once', 'TTFT median ms', 'TTFT of the last ms', 'tokens/s'], rows)


def rl_block() -> list[str]:
  b = _bench('rl')
  if b is None:
    return ['(not measured yet: `python scripts/bench.py --sections=rl --json=...`)']
  r = b['rl']
  return [f'`python scripts/bench.py --sections=rl`, measured {b["date"]} on {b["machine"]}; PPO '
          f'on the default shapes, {r["prompts_per_rollout"]} prompts × ≤ {r["max_new_tokens"]} '
          f'tokens, {r["devices"]} devices, medians of the timed steps:', ''] + render.md_table(
      ['rollout s', 'of which generation s', 'generated tokens/s', 'update s (epochs × minibatches)',
       'share: generation', 'share: forwards (policy, reference, value, reward, GAE)',
       'share: update'],
      [[f'{r["rollout_s_median"]:.2f}', f'{r["generation_s_median"]:.2f}',
        f'{r["rollout_tokens_per_s"]:,.0f}',
        f'{r["update_step_s_median"]:.2f} ({r["updates_per_step"]})',
        f'{r["share_generation"]:.0%}', f'{r["share_forwards"]:.0%}', f'{r["share_update"]:.0%}']])


def main_block() -> list[str]:
  b = _bench('main')
  if b is None:
    return ['(not measured yet: `python scripts/bench.py --sections=main --json=...`)']
  m, ref = b['main'], b['main']['reference']['ms_per_iter']
  base = m['baseline']['s'] / (m['baseline']['ref_ms'] / 1e3)
  rows = []
  for mode, r in m['runs'].items():
    norm = r['stage_and_eval_s'] / (ref / 1e3)
    rows.append([mode] + [f'{v["s"]:,.0f} ({v["programs"]:.0f} programs, {v["compile_s"] or 0:.0f} s '
                          'compiling)' for v in r['stages'].values()] +
                [f'{r["eval_s"]:,.0f}', f'{r["stage_and_eval_s"]:,.0f}', f'{norm:,.0f}',
                 f'{norm / base:.0%}'])
  names = list(next(iter(m['runs'].values()))['stages'])
  return [f'`python scripts/bench.py --sections=main`, measured {b["date"]} on {b["machine"]}: '
          'the default pipeline (what `scripts/demo.sh` runs) with an empty compilation cache, '
          'then again with the cache it filled; seconds per stage (programs compiled in its '
          f'training loop, seconds tracing and compiling them). The PyTorch eager reference ran '
          f'at {ref:.1f} ms/iter in the same run (shakespeare_char); "reference iterations" = '
          'stage + evaluation seconds ÷ that, against the issue\'s baseline of '
          f'{m["baseline"]["s"]:,.0f} s at {m["baseline"]["ref_ms"]:.1f} ms/iter '
          f'({base:,.0f}).', ''] + render.md_table(
      ['cache'] + [f'{n} s' for n in names] + ['evaluation s', 'stage + evaluation s',
                                               'reference iterations', 'of the baseline'], rows)


def suite_block() -> list[str]:
  b = _bench('suite')
  if b is None:
    return ['(not measured yet: `python scripts/bench.py --sections=suite --json=docs/bench/suite.json`)']
  s = b['suite']
  goal = 'met' if s['wall_s'] < 15 * 60 and not s['returncode'] else 'not met'
  return [f'`python scripts/bench.py --sections=suite`, measured {b["date"]} on {b["machine"]}: '
          f'`bash scripts/test.sh` took **{s["wall_s"] / 60:.1f} min** of wall time (exit '
          f'{s["returncode"]}; {s.get("passed", 0)} passed, {s.get("skipped", 0)} skipped, '
          f'{s.get("failed", 0)} failed; pytest\'s own count {s["pytest_s"] / 60:.1f} min). The '
          f'PyTorch eager reference ran at {s["reference"]["ms_per_iter"]:.1f} ms/iter in the same '
          f'run. Issue 20\'s goal, under 15 minutes: {goal}. The slowest test phases:', ''
          ] + render.md_table(['seconds', 'phase', 'test'],
                              [[f'{t["s"]:.1f}', t['phase'], f'`{t["test"]}`'] for t in s['slowest']])


BLOCKS = {'REAL MODELS': real_models_block, 'REAL PROMPTING': real_prompting_block, 'BENCH LM EVAL': lm_eval_block, 'DEFAULT RUN': default_run_block, 'SEEDS': seeds_block, 'RECIPES': recipe_block, 'EXPERIMENTS': experiments_block,
          'BENCH CONVERT': convert_block, 'BENCH LORA': lora_block,
          'BENCH TRAIN': train_block, 'BENCH GENERATE': generate_block, 'BENCH SERVE': serve_block,
          'BENCH RL': rl_block, 'BENCH MAIN': main_block, 'BENCH SUITE': suite_block}


PAGES = ['README.md'] + sorted(os.path.join('docs', f) for f in os.listdir(os.path.join(ROOT, 'docs'))
                                if f.endswith('.md'))


def site_links(md: str, page: str) -> str:
  """A block's links as a docs page can hold them: the site builds from docs/ alone (mkdocs
  --strict refuses a link out of it), so a link to a repository file becomes its path in code;
  a link into docs/ becomes relative to the page."""
  def repl(m):
    bang, label, target = m.groups()
    if bang or target.startswith(('http', '#', 'mailto')):
      return m.group(0)
    path, _, anchor = target.partition('#')
    if path.startswith('docs/'):
      return f'[{label}]({os.path.relpath(path, os.path.dirname(page))}{"#" + anchor if anchor else ""})'
    return f'`{path}`' if label.strip('`') == path else f'{label} (`{path}`)'
  return re.sub(r'(!?)\[([^\]]+)\]\(([^)\s]+)\)', repl, md)


def splice_block(text: str, name: str, lines: list[str], page: str = 'README.md') -> str:
  pattern = re.compile(rf'(<!-- BEGIN {name}\b[^>]*-->\n).*?(<!-- END {name} -->)', re.S)
  if not pattern.search(text):
    raise ValueError(f'{page}: no "<!-- BEGIN {name} -->" ... "<!-- END {name} -->" block.')
  body = '\n'.join(lines)
  if page != 'README.md':
    body = site_links(body, page)
  return pattern.sub(lambda m: m.group(1) + body + '\n' + m.group(2), text, count=1)


def refresh(check: bool) -> list[str]:
  """Re-renders (or with check, compares) every README and docs page; returns the differences
  found. Every block is rendered wherever a page holds its markers, and must be in one page at
  least."""
  diffs = []
  cwd = os.getcwd()
  os.chdir(ROOT)   # experiment READMEs name their config by its path from the root
  try:
    for name in experiments():
      d = render.refresh_readme(_load(name), check=check)
      if d:
        diffs.append(d)
    rendered = {name: fn() for name, fn in BLOCKS.items()}
    placed = set()
    for page in PAGES:
      path = os.path.join(ROOT, page)
      old = open(path).read()
      new = old
      for name, lines in rendered.items():
        if f'<!-- BEGIN {name} ' in old or f'<!-- BEGIN {name}:' in old:
          new = splice_block(new, name, lines, page)
          placed.add(name)
      if new != old:
        if check:
          diffs.append(render._first_difference(old, new, path))
        else:
          open(path, 'w').write(new)
    missing = sorted(set(BLOCKS) - placed)
    if missing:
      diffs.append(f'no page holds the block(s) {", ".join(missing)}: add their '
                   '"<!-- BEGIN name -->" ... "<!-- END name -->" markers to README.md or docs/.')
  finally:
    os.chdir(cwd)
  return diffs


def main(argv):
  del argv
  diffs = refresh(FLAGS.check)
  for d in diffs:
    print(d, file=sys.stderr)
  if FLAGS.check and diffs:
    print('Re-render with: python -m lmresearch.docs', file=sys.stderr)
    sys.exit(1)
  if not FLAGS.check:
    print('[docs] README.md, docs/*.md and every experiment README rendered from their results.')


if __name__ == '__main__':
  app.run(main)

"""One benchmark, same run, same machine: our compiled train step against PyTorch.

  python scripts/bench.py                           # every section (today: train)
  python scripts/bench.py --sections=train --iters=100 --warmup=10 --json=docs/bench/train.json

Section `train`: the shakespeare_char preset (GPT-2 style, nanoGPT's recipe) and the default
pipeline's pretraining step (Llama style, 16 x 256 tokens), each at 1 and 2 CPU devices, against
the PyTorch eager reference with the same shape (`scripts/torch_reference.py`, checked to compute
the same function by tests/test_torch_reference.py) and, with --torch_compile, torch.compile of it.
Each measurement is its own process, one after another (never two at once): JAX's device count is
fixed when it starts, and each framework's threads and memory stay its own. Printed per row:
ms/iter median and interquartile range over the timed iterations, tokens/s, MFU against the fp32
matmul peak measured in this run, peak RSS; and ratios of tokens/s measured in this run only.
Section `generate`: our sampler against transformers' generate on the same exported weights.
Section `rl`: PPO's rollout and update (scripts/bench_rl.py) and their shares of a PPO step.
Section `main`: the main job cold and warm (each stage's seconds, programs and compile seconds),
normalised by the PyTorch eager reference's ms/iter measured in the same run.
Section `suite`: `bash scripts/test.sh` (the README's test command) timed whole, its pass and skip
counts and pytest's 15 slowest test phases, with the PyTorch reference's ms/iter of the same run
(how fast this machine is). The accelerator benchmark is scripts/bench_gpu.sh.
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from bench_common import OthersShare, cores, summarize  # noqa: E402

DATA = os.path.join(os.environ.get('LMR_DATA_DIR', os.path.join(ROOT, '..', 'shared', 'data')),
                    'tinyshakespeare', 'input.txt')
MODELS = ('shakespeare_char', 'default')


def stage_config(model: str):
  """The stage config a train-step row times."""
  from lmresearch.training import config as lmc
  if model == 'shakespeare_char':
    c = lmc.config_file('pretrain').get_config('preset=shakespeare_char')
    c.data.path = os.path.abspath(DATA)
    return c
  return lmc.config_file('pipeline').get_config().stages.pretrain


def jax_worker(model: str, devices: int, iters: int, warmup: int) -> dict:
  """Times the trainer's own compiled step (shardings in and out, donated state) on real batches."""
  from lmresearch.runtime import split_cpu
  split_cpu(devices)
  import jax
  from lmresearch.training import config as lmc
  from lmresearch.core import parallel
  from lmresearch.models.transformer import count_params
  from lmresearch.stages import REGISTRY
  from lmresearch.training.metrics import measured_cpu_peak_flops
  from lmresearch.training.trainer import Trainer
  import tempfile
  c = stage_config(model)
  lmc.inherit_model(c)
  lmc.validate(c, devices, REGISTRY)
  with tempfile.TemporaryDirectory() as tmp:
    rules, mesh = parallel.rules_from_config(c), parallel.make_mesh(c.mesh, jax.devices()[:devices])
    stage = REGISTRY[c.stage](c, tmp)
    trainer = Trainer(c, tmp, stage, mesh, rules)
    abstract, shardings = trainer.abstract_state()
    state = trainer.init_state(shardings)
    t0 = time.perf_counter()
    step = trainer.compile_step(shardings)
    it, times, cpu, losses = stage.train_iterator(), [], [], []
    with parallel.activate(mesh, rules):
      for i in range(warmup + iters):
        if i == warmup:
          others = OthersShare().start()
        w0, c0 = time.perf_counter(), time.process_time()
        batch = parallel.put_batch(next(it), lambda nd: parallel.batch_sharding(mesh, rules, nd))
        state, metrics = jax.block_until_ready(step(state, batch))
        losses.append(float(metrics['train/loss']))
        if i == 0:
          compile_s = time.perf_counter() - t0
        if i >= warmup:
          times.append(time.perf_counter() - w0)
          cpu.append(time.process_time() - c0)
    out = summarize(times, cpu, stage.tokens_per_step(), others.stop())
    out.update(framework='jax', jax_version=jax.__version__, params=count_params(abstract.params),
               first_loss=losses[0], last_loss=losses[-1], compile_s=compile_s,
               flops_per_step=stage.flops_per_step(), peak_flops=measured_cpu_peak_flops(),
               vocab=stage.model.cfg.vocab_size, shape=dict(c.model), batch=c.train.batch_size,
               seq_len=c.data.seq_len)
    return out


def run_json(cmd: list) -> dict:
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  if proc.returncode or not lines:
    return {'error': f'exit {proc.returncode}: {proc.stderr.strip()[-600:]}'}
  return json.loads(lines[-1])


def torch_row(jax_res: dict, a, compiled: bool) -> dict:
  c, m = stage_config(jax_res['model']), jax_res['shape']
  t = c.train
  cmd = [sys.executable, os.path.join(ROOT, 'scripts', 'torch_reference.py'),
         '--style', m['style'], '--kv-heads', str(m.get('num_kv_heads', 0)),
         '--data', os.path.abspath(DATA) if jax_res['model'] == 'shakespeare_char' else '',
         '--iters', str(a.iters), '--warmup', str(a.warmup), '--vocab', str(jax_res['vocab']),
         '--layers', str(m['num_layers']), '--heads', str(m['num_heads']), '--embed', str(m['embed_dim']),
         '--mlp', str(m['mlp_dim']), '--context', str(jax_res['seq_len']), '--batch', str(jax_res['batch']),
         '--lr', str(t.lr), '--min-lr', str(t.min_lr), '--lr-warmup', str(t.warmup_steps),
         '--decay-steps', str(t.decay_steps or t.steps), '--b1', str(t.b1), '--b2', str(t.b2),
         '--weight-decay', str(t.weight_decay), '--clip', str(t.clip_norm)]
  return run_json(cmd + (['--compile'] if compiled else []))


def describe_machine() -> str:
  import importlib.metadata as md
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  vers = []
  for pkg in ('jax', 'jaxlib', 'flax', 'optax', 'torch'):
    try:
      vers.append(f'{pkg} {md.version(pkg)}')
    except md.PackageNotFoundError:
      pass
  return f'{cores()} CPU cores ({cpu}), Python {platform.python_version()}, ' + ', '.join(vers)


def section_train(a) -> dict:
  rows = []
  for model in MODELS:
    if model == 'shakespeare_char' and not os.path.exists(DATA):
      print(f'skipping shakespeare_char: {DATA} not found (set LMR_DATA_DIR)', file=sys.stderr)
      continue
    for devices in (1, 2):
      print(f'train: {model}, JAX on {devices} device(s) ...', file=sys.stderr, flush=True)
      r = run_json([sys.executable, os.path.abspath(__file__), '--worker', model, '--devices',
                    str(devices), '--iters', str(a.iters), '--warmup', str(a.warmup)])
      r.update(model=model, devices=devices, name=f'JAX, {devices} device(s)')
      rows.append(r)
    if 'error' in rows[-1]:
      continue
    ref = dict(rows[-1])
    for compiled in ((False, True) if a.torch_compile else (False,)):
      name = 'PyTorch ' + ('torch.compile' if compiled else 'eager')
      print(f'train: {model}, {name} ...', file=sys.stderr, flush=True)
      r = torch_row(ref, a, compiled)
      r.update(model=model, devices=0, name=name, flops_per_step=ref['flops_per_step'])
      rows.append(r)
  return {'rows': rows}


def print_train(res: dict) -> None:
  print(f"\n## Train step ({res['machine']}; {res['iters']} timed iterations after {res['warmup']} warm-up)")
  print(f"{'model':18s}{'implementation':24s}{'ms/iter':>9s}{'IQR':>14s}{'tokens/s':>10s}{'MFU':>7s}"
        f"{'RSS MB':>8s}  loss first -> last")
  for r in res['train']['rows']:
    if 'error' in r:
      print(f"{r['model']:18s}{r['name']:24s}  failed: {r['error'][-200:]}")
      continue
    peak = next(x['peak_flops'] for x in res['train']['rows'] if x['model'] == r['model'] and 'peak_flops' in x)
    mfu = r['flops_per_step'] / (r['ms_per_iter_median'] / 1e3) / peak
    iqr = f"{r['ms_p25']:.1f}-{r['ms_p75']:.1f}" if 'ms_p25' in r else '-'
    print(f"{r['model']:18s}{r['name']:24s}{r['ms_per_iter_median']:9.1f}{iqr:>14s}"
          f"{r['tokens_per_sec']:10,.0f}{mfu:7.1%}{r['peak_rss_mb']:8.0f}  "
          f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}")
  for model in MODELS:
    rows = {r['name']: r for r in res['train']['rows'] if r['model'] == model and 'error' not in r}
    eager = rows.get('PyTorch eager')
    if not eager:
      continue
    ratios = ', '.join(f"{n}: {r['tokens_per_sec'] / eager['tokens_per_sec']:.2f}x"
                       for n, r in rows.items() if n != 'PyTorch eager')
    print(f"{model}: tokens/s over PyTorch eager (same run): {ratios}")


# ---- generation ---------------------------------------------------------------------------------
GEN_SHAPES = {   # name: (style, model keys); max_len covers prompt 64 + 128 new tokens
  'default': dict(style='llama', num_layers=4, num_heads=4, embed_dim=128, mlp_dim=512, vocab=512),
  'gpt2_style_default': dict(style='gpt2', num_layers=4, num_heads=4, embed_dim=128, mlp_dim=512,
                               vocab=512),
  'gpt2_124m': dict(style='gpt2', num_layers=12, num_heads=12, embed_dim=768, mlp_dim=3072,
                      vocab=50257, max_len=1024),
}
PROMPT, NEW = 64, 128


def make_hf_dir(shape: str, out: str) -> None:
  """A random checkpoint of `shape` in our model, written as a Hugging Face directory by our
  exporter (the same weights for both frameworks)."""
  import jax
  import numpy as np
  from lmresearch.convert import hf_model_type
  from lmresearch.models import hf
  from lmresearch.models.transformer import ModelConfig, Transformer
  m = dict(GEN_SHAPES[shape])
  vocab, max_len = m.pop('vocab'), m.pop('max_len', 256)
  model = dict(m, num_kv_heads=0, max_len=max_len, norm_eps=1e-5, rope_theta=10000.0, head_size=0,
                 qkv_bias=False, tie_embeddings=False)
  cfg = ModelConfig(vocab_size=vocab, **model)
  params = Transformer(cfg).init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))['params']
  params = jax.tree.map(np.asarray, __import__('flax').linen.unbox(params))
  flat = {tuple(getattr(k, 'key', k) for k in path): leaf
      for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  model['hf_model_type'] = hf_model_type(model)
  os.makedirs(out, exist_ok=True)
  hf.export_params(lambda path, layer: flat[path], model, vocab, out, 'float32')
  cfg_json = hf.FAMILIES[model['hf_model_type']].hf_config(model, vocab, {
    'bos_token_id': 1, 'eos_token_id': 2, 'pad_token_id': 0})
  with open(os.path.join(out, 'config.json'), 'w') as f:
    json.dump(cfg_json, f)


def prompts(batch: int, vocab: int):
  import numpy as np
  return np.random.default_rng(0).integers(3, vocab, (batch, PROMPT)).astype(np.int64)


def gen_worker_jax(hf_dir: str, batches: list, repeats: int) -> dict:
  """Our sampler (`batched.generate`, greedy, no stop ids) on the imported checkpoint."""
  from lmresearch.runtime import split_cpu
  split_cpu(1)   # generation on one device using both cores (a serving process's shape)
  import jax
  import jax.numpy as jnp
  from lmresearch.models import hf
  from lmresearch.models.transformer import ModelConfig, Transformer
  hf_cfg = hf.read_config(hf_dir)
  model = hf.family(hf_cfg).model_config(hf_cfg)
  vocab = int(hf_cfg['vocab_size'])
  cfg = ModelConfig.from_config(model, vocab)
  lm = Transformer(cfg)
  from lmresearch.core import parallel
  mesh = parallel.make_mesh({'data': 1, 'fsdp': 1, 'tensor': 1}, jax.devices()[:1])
  rules = parallel.DEFAULT_RULES
  with parallel.activate(mesh, rules):
    abstract, shardings = parallel.abstract_and_shardings(
      lambda: lm.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params'], mesh, rules)
    params = hf.import_params(hf_dir, dict(model, vocab_size=vocab), abstract, shardings, vocab)
    from lmresearch.generation import batched
    out = {}
    for b in batches:
      ids = prompts(b, vocab).tolist()
      run = lambda n: batched.generate(lm, params, ids, max_new_tokens=n, temperature=0.0,
                                              stop_ids=())
      jax.block_until_ready(run(NEW)['tokens']), jax.block_until_ready(run(1)['tokens'])  # compile
      total, first = [], []
      for _ in range(repeats):
        t0 = time.perf_counter()
        res = run(NEW)
        jax.block_until_ready(res['tokens'])
        total.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(run(1)['tokens'])
        first.append(time.perf_counter() - t0)
      out[b] = {'s': sorted(total)[len(total) // 2], 'ttft_s': sorted(first)[len(first) // 2],
                      'first_row': [int(x) for x in res['completions'][0][:16]]}
  return out


def gen_worker_torch(hf_dir: str, batches: list, repeats: int) -> dict:
  """transformers' generate on the same checkpoint: greedy, NEW tokens (no stop id)."""
  import torch
  from transformers import AutoModelForCausalLM
  torch.set_num_threads(cores())
  model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  model.generation_config.eos_token_id = None   # no stop id, as ours: exactly n tokens, none masked
  vocab = model.config.vocab_size
  out = {}
  for b in batches:
    ids = torch.from_numpy(prompts(b, vocab))
    mask = torch.ones_like(ids)
    run = lambda n: model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                       do_sample=False, pad_token_id=0)
    with torch.no_grad():
      run(2)
      total, first = [], []
      for _ in range(repeats):
        t0 = time.perf_counter()
        res = run(NEW)
        total.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run(1)
        first.append(time.perf_counter() - t0)
    out[b] = {'s': sorted(total)[len(total) // 2], 'ttft_s': sorted(first)[len(first) // 2],
                  'first_row': res[0, PROMPT:PROMPT + 16].tolist()}
  return out


def copy_bandwidth() -> float:
  """Bytes/s of a large array copy (read + write counted once each), the memory-bound reference."""
  import numpy as np
  a = np.ones(64 << 20, np.float32)   # 256 MB
  b = np.empty_like(a)
  best = 0.0
  for _ in range(5):
    t0 = time.perf_counter()
    np.copyto(b, a)
    best = max(best, 2 * a.nbytes / (time.perf_counter() - t0))
  return best


def section_generate(a) -> dict:
  import tempfile
  from safetensors import safe_open
  rows, batches = [], [int(x) for x in a.gen_batches.split(',')]
  bw = copy_bandwidth()
  for shape in a.gen_shapes.split(','):
    with tempfile.TemporaryDirectory() as tmp:
      print(f'generate: {shape}: writing a random checkpoint ...', file=sys.stderr, flush=True)
      make_hf_dir(shape, tmp)
      with safe_open(os.path.join(tmp, 'model.safetensors'), 'numpy') as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
      res = {}
      for fw in ('jax', 'torch'):
        print(f'generate: {shape}: {fw} ...', file=sys.stderr, flush=True)
        res[fw] = run_json([sys.executable, os.path.abspath(__file__), '--gen_worker', fw,
                  '--gen_dir', tmp, '--gen_batches', a.gen_batches,
                  '--gen_repeats', str(a.gen_repeats)])
      for b in batches:
        row = {'shape': shape, 'batch': b, 'params': params, 'copy_bandwidth': bw}
        for fw in ('jax', 'torch'):
          r = res[fw].get(str(b)) if 'error' not in res[fw] else None
          row[fw] = r
          if r is None:
            row[fw + '_error'] = res[fw].get('error', 'missing')
        if row['jax'] and row['torch']:
          row['same_tokens'] = row['jax']['first_row'] == row['torch']['first_row']
        rows.append(row)
  return {'rows': rows, 'copy_bandwidth': bw, 'prompt': PROMPT, 'new': NEW}


def print_generate(res: dict) -> None:
  g = res['generate']
  print(f"\n## Generation ({res['machine']}; prompt {g['prompt']} tokens, {g['new']} new, greedy; "
          f"copy bandwidth {g['copy_bandwidth'] / 1e9:.1f} GB/s)")
  print(f"{'shape':20s}{'batch':>6s}{'ours tok/s':>12s}{'HF tok/s':>10s}{'ratio':>7s}{'ours TTFT ms':>14s}"
          f"{'HF TTFT ms':>12s}{'same tokens':>13s}{'of bw bound':>13s}")
  for r in g['rows']:
    if not (r['jax'] and r['torch']):
      print(f"{r['shape']:20s}{r['batch']:6d}  failed: {r.get('jax_error', '')[-150:]} {r.get('torch_error', '')[-150:]}")
      continue
    ours, theirs = r['batch'] * g['new'] / r['jax']['s'], r['batch'] * g['new'] / r['torch']['s']
    bound = r['copy_bandwidth'] / (4 * r['params']) * r['batch']   # fp32 weights read once per step
    of_bound = f'{ours / bound:.0%}' if r['batch'] == 1 else '-'
    print(f"{r['shape']:20s}{r['batch']:6d}{ours:12,.0f}{theirs:10,.0f}{ours / theirs:6.2f}x"
          f"{r['jax']['ttft_s'] * 1e3:14.1f}{r['torch']['ttft_s'] * 1e3:12.1f}"
          f"{str(r['same_tokens']):>13s}{of_bound:>13s}")


# ---- RL -----------------------------------------------------------------------------------------
def section_rl(a) -> dict:
  """bench_rl.py in its own process: PPO on the default shapes (the pipeline's SFT and reward runs
  under --rl_runs, else stand-ins of the same shapes), rollout and update times and their shares."""
  import tempfile
  out = os.path.join(tempfile.mkdtemp(), 'rl.json')
  subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'bench_rl.py'), '--runs',
                  a.rl_runs, '--iters', str(a.rl_iters), '--new', str(a.rl_new), '--json', out],
                 check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
  return json.load(open(out))


def print_rl(res: dict) -> None:
  r = res['rl']
  print(f"\nPPO ({r['prompts_per_rollout']} prompts x <= {r['max_new_tokens']} tokens, "
        f"{r['devices']} devices): rollout {r['rollout_s_median']:.2f} s "
        f"({r['rollout_tokens_per_s']:,.0f} generated tokens/s), of which generation "
        f"{r['generation_s_median']:.2f} s; update {r['update_step_s_median']:.2f} s")
  print(f"share of a PPO step: generation {r['share_generation']:.0%}, forwards (policy, "
        f"reference, value, reward, GAE) {r['share_forwards']:.0%}, update {r['share_update']:.0%}")


# ---- the main job ------------------------------------------------------------------------------
def reference(a) -> tuple:
  """The machine's speed in this run: our shakespeare_char step (2 devices) and the PyTorch eager
  reference of the same shape, each its own process."""
  ref_jax = run_json([sys.executable, os.path.abspath(__file__), '--worker', 'shakespeare_char',
                      '--devices', '2', '--iters', str(a.iters), '--warmup', str(a.warmup)])
  ref_jax['model'] = 'shakespeare_char'
  return ref_jax, torch_row(ref_jax, a, False)


# The baseline: the main job's stage + evaluation time where the PyTorch eager reference
# (shakespeare_char) took 86.0 ms/iter: 1,997 s, i.e. 23,221 reference iterations.
BASELINE_S, BASELINE_REF_MS = 1997.0, 86.0


def section_main(a) -> dict:
  """`python -m lmresearch.pipeline` on the default config (what scripts/demo.sh runs) twice:
  cold (an empty compilation cache) and warm (the cache the cold run filled), each stage's
  seconds, compile seconds and programs; and, in the same run, the PyTorch eager reference's
  ms/iter on shakespeare_char, which normalises the job's time across machines."""
  import tempfile
  ref_jax, ref = reference(a)
  cache = tempfile.mkdtemp(prefix='lmr-cache-')
  runs = {}
  for mode in ('cold', 'warm'):
    wd = tempfile.mkdtemp(prefix=f'lmr-main-{mode}-')
    print(f'main job, {mode} compilation cache ...', file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, '-m', 'lmresearch.pipeline', '--config=configs/pipeline.py',
                    f'--workdir={wd}'], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, LMR_COMPILATION_CACHE=cache))
    wall = time.perf_counter() - t0
    report = json.load(open(os.path.join(wd, 'report.json')))
    stages = {}
    for name, sec in report['stage_seconds'].items():
      rows = [json.loads(l) for l in open(os.path.join(wd, name, 'metrics.jsonl'))]
      last = [r for r in rows if 'perf/programs' in r][-1:] or [{}]
      stages[name] = {'s': sec, 'programs': last[0].get('perf/programs'),
                      'compile_s': last[0].get('perf/compile_s')}
    runs[mode] = {'wall_s': wall, 'stage_and_eval_s': report['wall_seconds'], 'stages': stages,
                  'eval_s': report['wall_seconds'] - sum(report['stage_seconds'].values())}
  ref_ms = ref.get('ms_per_iter_median')
  return {'reference': {'model': 'shakespeare_char', 'framework': 'PyTorch eager',
                        'ms_per_iter': ref_ms, 'jax_ms_per_iter': ref_jax.get('ms_per_iter_median')},
          'runs': runs, 'baseline': {'s': BASELINE_S, 'ref_ms': BASELINE_REF_MS}}


def print_main(res: dict) -> None:
  m, ref = res['main'], res['main']['reference']['ms_per_iter']
  print(f"\n## The main job (PyTorch eager reference in this run: {ref:.1f} ms/iter)")
  for mode, r in m['runs'].items():
    per = ', '.join(f"{k} {v['s']:.0f} s ({v['programs']} programs, {v['compile_s'] or 0:.0f} s "
                    "compiling)" for k, v in r['stages'].items())
    norm = r['stage_and_eval_s'] / (ref / 1e3)
    base = BASELINE_S / (BASELINE_REF_MS / 1e3)
    print(f"{mode}: {r['stage_and_eval_s']:.0f} s of stage + evaluation time ({per}; evaluation "
          f"{r['eval_s']:.0f} s) = {norm:,.0f} reference iterations; the issue's baseline "
          f"{base:,.0f}: {norm / base:.0%} of it")


def parse_pytest(text: str) -> dict:
  """pytest's own figures from its output: the counts and seconds of its last summary line and
  the --durations table (seconds, phase, test id), slowest first."""
  import re
  summary = [l for l in text.splitlines() if re.search(r'\b(passed|failed|error)\b.* in [\d.]+s', l)]
  out = {'slowest': [], 'pytest_s': None}
  if summary:
    last = summary[-1]
    for kind in ('passed', 'failed', 'skipped', 'errors', 'error', 'deselected'):
      m = re.search(rf'(\d+) {kind}\b', last)
      if m:
        out['errors' if kind == 'error' else kind] = int(m.group(1))
    out['pytest_s'] = float(re.search(r' in ([\d.]+)s', last).group(1))
  table = text.split('slowest', 1)[1] if 'slowest' in text else ''
  for m in re.finditer(r'^([\d.]+)s (call|setup|teardown)\s+(\S+)$', table, re.M):
    out['slowest'].append({'s': float(m.group(1)), 'phase': m.group(2), 'test': m.group(3)})
  return out


def section_suite(a) -> dict:
  """`bash scripts/test.sh` as the README's quick start runs it (its own setup included), timed
  whole; and, in the same run, the PyTorch eager reference's ms/iter (the machine's speed)."""
  _, ref = reference(a)
  print('the test suite (bash scripts/test.sh) ...', file=sys.stderr, flush=True)
  t0 = time.perf_counter()
  proc = subprocess.run(['bash', 'scripts/test.sh'] + a.suite_args.split(), cwd=ROOT,
                        capture_output=True, text=True)
  wall = time.perf_counter() - t0
  res = parse_pytest(proc.stdout)
  res.update(wall_s=wall, returncode=proc.returncode, args=a.suite_args,
             reference={'model': 'shakespeare_char', 'framework': 'PyTorch eager',
                        'ms_per_iter': ref.get('ms_per_iter_median')})
  if proc.returncode:
    print(proc.stdout[-5000:], proc.stderr[-2000:], file=sys.stderr)
  return res


def print_suite(res: dict) -> None:
  s = res['suite']
  print(f"\n## The test suite: {s['wall_s'] / 60:.1f} min wall (exit {s['returncode']}; "
        f"{s.get('passed', 0)} passed, {s.get('skipped', 0)} skipped, {s.get('failed', 0)} failed; "
        f"PyTorch eager reference {s['reference']['ms_per_iter']:.1f} ms/iter)")
  for t in s['slowest']:
    print(f"{t['s']:8.1f} s  {t['phase']:8s} {t['test']}")


# --sections: name -> (measure(args) -> figures, print(results)), run in the order asked.
SECTIONS = {'train': (section_train, print_train), 'generate': (section_generate, print_generate),
            'rl': (section_rl, print_rl), 'main': (section_main, print_main),
            'suite': (section_suite, print_suite)}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--sections', default='train,generate,rl',
                 help='comma-separated: train, generate, rl, main (the main job, cold and warm: '
                      'about twice its run time), suite (bash scripts/test.sh, timed)')
  p.add_argument('--iters', type=int, default=100, help='timed iterations per row')
  p.add_argument('--warmup', type=int, default=10, help='untimed iterations first (the first compiles)')
  p.add_argument('--torch_compile', action='store_true', help='also time torch.compile of the reference')
  p.add_argument('--json', help='also write every figure to this JSON file')
  p.add_argument('--gen_shapes', default='default,gpt2_style_default,gpt2_124m',
                 help='generation: model shapes (' + ', '.join(GEN_SHAPES) + ')')
  p.add_argument('--gen_batches', default='1,8,64', help='generation: batch sizes')
  p.add_argument('--gen_repeats', type=int, default=3, help='generation: timed calls per batch')
  p.add_argument('--rl_runs', default='runs/demo', help='rl: a pipeline workdir (sft/, reward/)')
  p.add_argument('--rl_iters', type=int, default=5, help='rl: timed PPO steps')
  p.add_argument('--rl_new', type=int, default=96, help='rl: max new tokens (the pipeline\'s)')
  p.add_argument('--suite_args', default='', help='suite: extra pytest arguments (e.g. "-k docs")')
  p.add_argument('--worker', choices=MODELS, help=argparse.SUPPRESS)
  p.add_argument('--gen_worker', choices=('jax', 'torch'), help=argparse.SUPPRESS)
  p.add_argument('--gen_dir', help=argparse.SUPPRESS)
  p.add_argument('--devices', type=int, default=1, help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.gen_worker:
    batches = [int(x) for x in a.gen_batches.split(',')]
    fn = gen_worker_jax if a.gen_worker == 'jax' else gen_worker_torch
    print(json.dumps(fn(a.gen_dir, batches, a.gen_repeats)), flush=True)
    return
  if a.worker:
    print(json.dumps(jax_worker(a.worker, a.devices, a.iters, a.warmup)), flush=True)
    return
  sections = [s for s in a.sections.split(',') if s]
  unknown = set(sections) - set(SECTIONS)
  if unknown:
    p.error(f'--sections: unknown {sorted(unknown)} (available: {", ".join(SECTIONS)})')
  res = {'machine': describe_machine(), 'date': time.strftime('%Y-%m-%d'), 'iters': a.iters,
         'warmup': a.warmup}
  for name in sections:
    measure, show = SECTIONS[name]
    res[name] = measure(a)
    show(res)
  if a.json:
    with open(a.json, 'w') as f:
      json.dump(res, f, indent=1)
    print(f'wrote {a.json}')


if __name__ == '__main__':
  main()

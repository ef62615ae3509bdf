"""Speed (and, with --full, quality) of the shakespeare_char preset on this machine: JAX vs PyTorch.

  python scripts/bench_pretrain.py                          # 100 timed iterations after 10 warmup
  python scripts/bench_pretrain.py --iters 5 --warmup 2     # a quick check (~1 min)
  python scripts/bench_pretrain.py --devices 2 --full       # CPU split in 2 devices; + 2000-iter run

JAX: the trainer's own step (`Trainer.compile_step`: shardings in and out, donated state) on the
sharded state the trainer builds, fed real batches from the stage. PyTorch: the eager reference
`scripts/torch_reference.py`, which computes the same function (tests/test_torch_reference.py); it
runs first, alone, in a subprocess, so each framework's memory and threads are its own. Every
figure and ratio printed is measured in this run on this machine; nothing is divided by a number
measured elsewhere (machines here differ 2-3x between sessions). --full trains the whole preset
through `lmresearch.stages.launch.run` and reports the validation loss by step.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from bench_common import OthersShare, cores, summarize  # noqa: E402

DATA = os.path.join(os.environ.get('LMR_DATA_DIR', os.path.join(ROOT, '..', 'shared', 'data')),
                    'tinyshakespeare', 'input.txt')
p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('--iters', type=int, default=100, help='timed iterations')
p.add_argument('--warmup', type=int, default=10, help='untimed iterations first (the first compiles)')
p.add_argument('--devices', type=int, default=1, help='split the CPU into N JAX devices, with a '
               'data-parallel mesh over them (the trainer\'s default is one per core)')
p.add_argument('--full', action='store_true', help='also train the 2000-iteration preset, report val loss')
p.add_argument('--full-steps', type=int, default=0, help='with --full: stop after N steps (a smoke test)')
p.add_argument('--data', default=os.path.normpath(DATA), help='tinyshakespeare input.txt')
p.add_argument('--no-torch', action='store_true', help='skip the PyTorch reference')
p.add_argument('--json', metavar='OUT', help='also write the results as JSON to OUT')
a = p.parse_args()
if min(a.iters, a.warmup, a.devices) < 1:
  p.error('--iters, --warmup and --devices must be >= 1')
if not os.path.exists(a.data):
  sys.exit(f'error: {a.data} not found: pass --data or set LMR_DATA_DIR to the shared data folder.')

from lmresearch.runtime import split_cpu  # noqa: E402
split_cpu(a.devices)   # before JAX starts
import jax  # noqa: E402
from lmresearch.training import config as lmc  # noqa: E402
from lmresearch.core import parallel
get_config = lmc.config_file('pretrain').get_config
from lmresearch.models.transformer import count_params  # noqa: E402
from lmresearch.stages.pretrain import PretrainStage  # noqa: E402
from lmresearch.training.metrics import measured_cpu_peak_flops, read_metrics  # noqa: E402
from lmresearch.training.trainer import Trainer  # noqa: E402

config = get_config('preset=shakespeare_char')
config.data.path = os.path.abspath(a.data)
devices = jax.devices()[:a.devices]
if len(devices) < a.devices:
  sys.exit(f'error: --devices {a.devices}, but JAX has {len(devices)} (XLA_FLAGS set elsewhere?)')
try:
  lmc.validate(config, a.devices)
except lmc.ConfigError as e:
  sys.exit(f'error: {e}')
tmp = tempfile.TemporaryDirectory(prefix='bench_pretrain_')   # removed at exit
workdir = tmp.name
stage = PretrainStage(config, workdir)   # tokenizer and packed data, on the host
m, t, vocab = config.model, config.train, stage.model.cfg.vocab_size
res = {'cores': cores(), 'devices': a.devices, 'iters': a.iters, 'warmup': a.warmup}

# ---- PyTorch eager reference: first and alone -----------------------------------------------------
if not a.no_torch:
  print('running the PyTorch reference ...', file=sys.stderr, flush=True)
  cmd = [sys.executable, os.path.join(ROOT, 'scripts', 'torch_reference.py'), '--data', a.data,
         '--iters', str(a.iters), '--warmup', str(a.warmup), '--vocab', str(vocab),
         '--layers', str(m.num_layers), '--heads', str(m.num_heads), '--embed', str(m.embed_dim),
         '--mlp', str(m.mlp_dim), '--context', str(config.data.seq_len), '--batch', str(t.batch_size),
         '--lr', str(t.lr), '--min-lr', str(t.min_lr), '--lr-warmup', str(t.warmup_steps),
         '--decay-steps', str(t.decay_steps or t.steps), '--b1', str(t.b1), '--b2', str(t.b2),
         '--weight-decay', str(t.weight_decay), '--clip', str(t.clip_norm),
         '--val-fraction', str(config.data.val_fraction)]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  if proc.returncode or not lines:
    print(f'torch reference failed (exit {proc.returncode}; torch==2.13.0 installed?):\n'
          f'{proc.stderr.strip()[-800:]}', file=sys.stderr)
  else:
    res['torch'] = json.loads(lines[-1])

# ---- JAX: the trainer's step on the trainer's state -------------------------------------------------
print('running the JAX step ...', file=sys.stderr, flush=True)
rules = parallel.rules_from_config(config)
mesh = parallel.make_mesh(config.mesh, devices)
trainer = Trainer(config, workdir, stage, mesh, rules)
abstract, shardings = trainer.abstract_state()
state = trainer.init_state(shardings)
step_fn = trainer.compile_step(shardings)
data_iter = stage.train_iterator()
times, cpu_times, losses = [], [], []
with parallel.activate(mesh, rules):
  for it in range(a.warmup + a.iters):
    if it == a.warmup:
      others = OthersShare().start()
    t0, c0 = time.perf_counter(), time.process_time()
    batch = parallel.put_batch(next(data_iter), lambda nd: parallel.batch_sharding(mesh, rules, nd))
    state, metrics = jax.block_until_ready(step_fn(state, batch))
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    losses.append(float(metrics['train/loss']))
    if it == 0:
      res['compile_s'] = dt
    if it >= a.warmup:
      times.append(dt)
      cpu_times.append(dc)
flops, peak = stage.flops_per_step(), measured_cpu_peak_flops()
res['jax'] = {'framework': 'jax', 'jax_version': jax.__version__, 'params': count_params(abstract.params),
              'first_loss': losses[0], 'last_loss': losses[-1],
              **summarize(times, cpu_times, stage.tokens_per_step(), others.stop())}
res.update(flops_per_step=flops, cpu_peak_flops=peak)

# ---- report: same-run figures and ratios only -------------------------------------------------------
print(f"\nshakespeare_char (vocab {vocab}, {res['jax']['params']:,} params, {flops / 1e9:.3f} GFLOP/step) "
      f"on {res['cores']} CPU cores; JAX mesh of {a.devices} device(s); {a.iters} timed iterations "
      f"after {a.warmup} warmup; CPU fp32 matmul peak measured now: {peak / 1e9:.1f} GFLOP/s")
print(f"{'':18s}{'ms/iter median':>15s}{'min':>7s}{'CPU ms/iter':>12s}{'tokens/s':>10s}{'MFU':>8s}"
      f"{'peak RSS MB':>12s}{'loss first -> last':>20s}")
rows = [('JAX (lmresearch)', res['jax'])] + ([('PyTorch eager', res['torch'])] if 'torch' in res else [])
for name, r in rows:
  r['mfu'] = flops / (r['ms_per_iter_median'] / 1e3) / peak
  print(f"{name:18s}{r['ms_per_iter_median']:15.1f}{r['ms_per_iter_min']:7.1f}"
        f"{r['cpu_ms_per_iter_median']:12.1f}{r['tokens_per_sec']:10,.0f}{r['mfu']:8.2%}"
        f"{r['peak_rss_mb']:12.0f}{r['first_loss']:11.3f} -> {r['last_loss']:.3f}")
  if (r['others_cpu_frac'] or 0) > 0.1:
    print(f"  WARNING: other processes used {r['others_cpu_frac']:.0%} of the CPU while {name} was "
          "timed; its wall-clock figures are pessimistic (CPU ms/iter is less sensitive).")
print(f"JAX compile {res['compile_s']:.1f} s")
if 'torch' in res:
  res['jax_over_torch'] = res['jax']['tokens_per_sec'] / res['torch']['tokens_per_sec']
  print(f"JAX / PyTorch tokens/s (same run): {res['jax_over_torch']:.2f}x "
        f"(torch {res['torch']['torch_version']}, {res['torch']['threads']} threads)")

# ---- --full: the whole recipe through the real entry point ------------------------------------------
if a.full:
  from lmresearch.stages.launch import run
  config.train.steps = a.full_steps or config.train.steps
  config.train.eval_every = min(config.train.eval_every, config.train.steps)
  print(f'training the preset for {config.train.steps} steps ...', file=sys.stderr, flush=True)
  t0, full_dir = time.time(), os.path.join(workdir, 'full')
  run(config, full_dir, devices=devices)
  rows = read_metrics(full_dir)
  evals = {int(r['step']): r['eval/loss'] for r in rows if 'eval/loss' in r}
  step_ms = [r['perf/step_time_s'] * 1e3 for r in rows if 'perf/step_time_s' in r]
  res['full'] = {'steps': config.train.steps, 'wall_s': time.time() - t0, 'eval_losses': evals,
                 'trainer_ms_per_iter_mean': sum(step_ms) / max(1, len(step_ms))}
  print(f"full run: {config.train.steps} steps in {res['full']['wall_s']:.0f} s, trainer "
        f"{res['full']['trainer_ms_per_iter_mean']:.1f} ms/iter mean; val loss by step: "
        + ', '.join(f'{s}: {v:.4f}' for s, v in evals.items()))
if a.json:
  with open(a.json, 'w') as f:
    json.dump(res, f, indent=2)
  print(f'wrote {a.json}')

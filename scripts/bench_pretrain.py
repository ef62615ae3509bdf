"""Speed (and, with --full, quality) of the shakespeare_char preset on this CPU, against PyTorch.

Measures the code the trainer runs: the stage's `loss_fn` inside `make_train_step`, jitted with
the trainer's shardings and donation, on the state that `Trainer.abstract_state()/init_state()`
build on a 1-device mesh, fed real batches from the stage's `train_iterator()`. Each iteration
(next batch -> device -> step -> block_until_ready) is timed; the median is reported, with
tokens/s, MFU (model FLOPs / this CPU's measured fp32 matmul peak) and the peak RSS of the process.

When torch is importable, `scripts/torch_reference.py` runs a nanoGPT-equivalent eager step of the
same shape in a subprocess, run first and alone (the JAX step has not been built yet), so each
framework's memory and threads are its own; then the JAX/torch tokens/s ratio is printed.

  .venv/bin/python scripts/bench_pretrain.py --iters 30             # quick speed check
  .venv/bin/python scripts/bench_pretrain.py --full --json out.json # + the 2000-step training run
  .venv/bin/python scripts/bench_pretrain.py --no-torch --data /path/to/input.txt

--full trains the complete preset through `lmresearch.launch.run` in a temporary workdir
(eval every 500 steps) and reports the final eval/loss and the trainer's mean ms/iter.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# nanoGPT's own CPU run of this recipe on this machine (README "I only have a macbook" command).
NANOGPT = {'ms_per_iter_median': 112.6, 'tokens_per_sec': 12 * 64 / 0.1126, 'val_loss_2000': 1.886}
TARGET = {'speedup_vs_nanogpt': 1.5, 'ms_per_iter_max': 75.0, 'val_loss_max': 1.89}
DATA_DIR = os.environ.get('LMR_DATA_DIR', os.path.join(ROOT, '..', 'shared', 'data'))
DEFAULT_DATA = os.path.normpath(os.path.join(DATA_DIR, 'tinyshakespeare', 'input.txt'))


def cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


class CpuShare:
  """Fraction of the machine's CPU that OTHER processes used between start() and stop():
  busy time from /proc/stat minus this process's own CPU time (Linux; None elsewhere)."""

  @staticmethod
  def _snap():
    with open('/proc/stat') as f:
      fields = [int(x) for x in f.readline().split()[1:9]]
    busy = sum(v for i, v in enumerate(fields) if i not in (3, 4, 7))   # not idle/iowait/steal
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), busy / os.sysconf('SC_CLK_TCK'), r.ru_utime + r.ru_stime

  def start(self):
    try:
      self.s0 = self._snap()
    except (OSError, ValueError):
      self.s0 = None
    return self

  def stop(self):
    if self.s0 is None:
      return None
    (w0, b0, o0), (w1, b1, o1) = self.s0, self._snap()
    return max(0.0, ((b1 - b0) - (o1 - o0)) / ((w1 - w0) * (os.cpu_count() or 1)))


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--iters', type=int, default=100, help='timed iterations (default 100)')
  p.add_argument('--warmup', type=int, default=10, help='untimed iterations first, incl. compile (default 10)')
  p.add_argument('--full', action='store_true',
                 help='also train the whole 2000-step preset with the real trainer and report eval/loss')
  p.add_argument('--full-steps', type=int, default=0,
                 help='with --full: stop after N steps (smoke test; default the preset\'s 2000)')
  p.add_argument('--data', default=DEFAULT_DATA, help=f'tinyshakespeare input.txt (default {DEFAULT_DATA})')
  p.add_argument('--no-torch', action='store_true', help='skip the PyTorch reference')
  p.add_argument('--torch-threads', type=int, default=0,
                 help='torch.set_num_threads for the reference (default: all cores)')
  p.add_argument('--json', metavar='OUT', help='also write the results as JSON to OUT')
  p.add_argument('--devices', type=int, default=1,
                 help='experimental: N simulated CPU devices (XLA_FLAGS='
                      '--xla_force_host_platform_device_count=N) and a data-parallel mesh over them; '
                      'the default 1 measures the single-device step. NB: with --full, the trainer '
                      'at this commit deadlocks in eval on >1 simulated device (all-reduce '
                      'rendezvous; Trainer._evaluate dispatches 100 eval steps unblocked)')
  p.add_argument('--preset', default='preset=shakespeare_char', help='configs/pretrain.py argument')
  a = p.parse_args(argv)
  if a.devices < 1:
    p.error('--devices must be >= 1')
  if a.iters < 1 or a.warmup < 1:
    p.error('--iters and --warmup must be >= 1 (the first iteration compiles)')
  return a


# ---- PyTorch reference (a subprocess) ----------------------------------------------------------
def start_torch(a, config, vocab, data_ok):
  if a.no_torch:
    return None, 'skipped (--no-torch)'
  if importlib.util.find_spec('torch') is None:
    return None, 'skipped: torch is not importable (pip install torch==2.13.0, the [bench] extra)'
  m, t = config.model, config.train
  cmd = [sys.executable, os.path.join(ROOT, 'scripts', 'torch_reference.py'),
         '--iters', str(a.iters), '--warmup', str(a.warmup), '--vocab', str(vocab),
         '--layers', str(m.num_layers), '--heads', str(m.num_heads), '--embed', str(m.embed_dim),
         '--mlp', str(m.mlp_dim), '--context', str(config.data.seq_len), '--batch', str(t.batch_size),
         '--lr', str(t.lr), '--min-lr', str(t.min_lr), '--lr-warmup', str(t.warmup_steps),
         '--decay-steps', str(t.decay_steps or t.steps), '--b1', str(t.b1), '--b2', str(t.b2),
         '--weight-decay', str(t.weight_decay), '--clip', str(t.clip_norm),
         '--val-fraction', str(config.data.val_fraction), '--threads', str(a.torch_threads),
         '--data', a.data if data_ok else '']
  return cmd, None


def run_torch(cmd):
  proc = subprocess.run(cmd, capture_output=True, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  if proc.returncode or not lines:
    return None, f'torch reference failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}'
  return json.loads(lines[-1]), None


# ---- JAX: the trainer's own step -----------------------------------------------------------------
def random_iterator(config, vocab, seed=0):
  import numpy as np
  rng = np.random.default_rng(seed)
  b, t = config.train.batch_size, config.data.seq_len
  while True:
    toks = rng.integers(0, vocab, (b, t + 1), dtype=np.int32)
    yield {'inputs': toks[:, :-1], 'targets': toks[:, 1:],
           'segment_ids': np.ones((b, t), np.int32),
           'positions': np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy(),
           'weights': np.ones((b, t), np.float32)}


def bench_jax(a, config, data_ok, workdir):
  import jax
  from lmresearch import parallel
  from lmresearch.stages.pretrain import PretrainStage
  from lmresearch.training.metrics import measured_cpu_peak_flops
  from lmresearch.training.trainer import Trainer, make_train_step

  rules = parallel.rules_from_config(config)
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:a.devices])
  if data_ok:
    stage = PretrainStage(config, workdir)
    data_iter = stage.train_iterator()
  else:
    stage = PretrainStage.abstract(config)
    data_iter = random_iterator(config, stage.model.cfg.vocab_size)
  trainer = Trainer(config, workdir, stage, mesh, rules)
  abstract, shardings = trainer.abstract_state()
  state = trainer.init_state(shardings)
  batch_sharding = lambda ndim: parallel.batch_sharding(mesh, rules, ndim)
  with parallel.activate(mesh, rules):
    step_fn = jax.jit(make_train_step(stage.loss_fn, trainer.optimizer, config.train.grad_accum,
                                      trainer.schedule),
                      in_shardings=(shardings, None), out_shardings=(shardings, None),
                      donate_argnums=(0,))
    times, cpu_times, data_times, losses = [], [], [], []
    compile_s = None
    for i in range(a.warmup + a.iters):
      if i == a.warmup:
        share = CpuShare().start()
      t0, c0 = time.perf_counter(), time.process_time()
      batch = parallel.put_batch(next(data_iter), batch_sharding)
      t1 = time.perf_counter()
      state, metrics = step_fn(state, batch)
      jax.block_until_ready((state, metrics))
      t2, c2 = time.perf_counter(), time.process_time()
      if i == 0:
        compile_s = t2 - t1
      if i >= a.warmup:
        times.append(t2 - t0)
        cpu_times.append(c2 - c0)
        data_times.append(t1 - t0)
        if i == a.warmup or i == a.warmup + a.iters - 1:
          losses.append(float(metrics['train/loss']))
  others = share.stop()
  peak = measured_cpu_peak_flops()
  med = statistics.median(times)
  tokens = stage.tokens_per_step()
  from lmresearch.models.transformer import count_params
  return {
      'framework': 'jax', 'jax_version': jax.__version__, 'backend': jax.default_backend(),
      'devices': a.devices,
      'data': 'text' if data_ok else 'random tokens (no data file)',
      'iters': a.iters, 'warmup': a.warmup, 'params': count_params(abstract.params),
      'vocab': stage.model.cfg.vocab_size,
      'compile_s': compile_s,
      'ms_per_iter_median': med * 1e3,
      'ms_per_iter_mean': statistics.fmean(times) * 1e3,
      'ms_per_iter_min': min(times) * 1e3,
      'cpu_ms_per_iter_median': statistics.median(cpu_times) * 1e3,
      'others_cpu_frac': others,
      'data_ms_median': statistics.median(data_times) * 1e3,
      'tokens_per_sec': tokens / med,
      'flops_per_step': stage.flops_per_step(),
      'cpu_peak_flops': peak,
      'mfu': stage.flops_per_step() / med / peak,
      'peak_rss_mb': peak_rss_mb(),
      'first_loss': losses[0], 'last_loss': losses[-1],
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def full_run(config, workdir):
  """The complete preset through the real entry point; reads the trainer's metrics.jsonl."""
  from lmresearch.launch import run
  from lmresearch.training.metrics import read_metrics
  t0 = time.time()
  summary = run(config, workdir)
  rows = read_metrics(workdir)
  evals = [r for r in rows if 'eval/loss' in r]
  step_times = [r['perf/step_time_s'] for r in rows if 'perf/step_time_s' in r]
  return {
      'steps': int(summary.get('step', 0)),
      'final_eval_loss': evals[-1]['eval/loss'] if evals else None,
      'eval_losses': {int(r['step']): r['eval/loss'] for r in evals},
      'final_train_loss': rows[-1].get('train/loss') if rows else None,
      'trainer_ms_per_iter_mean': statistics.fmean(step_times) * 1e3 if step_times else None,
      'trainer_ms_per_iter_median': statistics.median(step_times) * 1e3 if step_times else None,
      'trainer_tokens_per_sec_mean': statistics.fmean(
          [r['perf/tokens_per_sec'] for r in rows if 'perf/tokens_per_sec' in r] or [0.0]),
      'wall_s': time.time() - t0,
  }


# ---- report ---------------------------------------------------------------------------------------
def report(res) -> None:
  j, t, full = res['jax'], res.get('torch'), res.get('full')
  print()
  print(f"shakespeare_char on {res['cores']} CPU cores ({j['backend']}, {j['devices']} device mesh), "
        f"{j['iters']} timed iterations after {j['warmup']} warmup, data: {j['data']}")
  print(f"model: {j['params']:,} params (vocab {j['vocab']}), {j['flops_per_step'] / 1e9:.3f} GFLOP/step; "
        f"CPU fp32 matmul peak (measured) {j['cpu_peak_flops'] / 1e9:.1f} GFLOP/s")
  hdr = (f"{'':22s}{'ms/iter median':>15s}{'min':>7s}{'CPU ms/iter':>12s}{'tokens/s':>10s}"
         f"{'MFU':>8s}{'peak RSS MB':>12s}")
  print(hdr)
  rows = [('JAX (lmresearch)', j)] + ([('PyTorch eager', t)] if t else [])
  for name, r in rows:
    print(f"{name:22s}{r['ms_per_iter_median']:15.1f}{r['ms_per_iter_min']:7.1f}"
          f"{r['cpu_ms_per_iter_median']:12.1f}{r['tokens_per_sec']:10,.0f}{r['mfu']:8.2%}"
          f"{r['peak_rss_mb']:12.0f}")
  print(f"{'nanoGPT (reference)':22s}{NANOGPT['ms_per_iter_median']:15.1f}{'':7s}{'':12s}"
        f"{NANOGPT['tokens_per_sec']:10,.0f}")
  for name, r in rows:
    if r.get('others_cpu_frac') is not None and r['others_cpu_frac'] > 0.1:
      print(f"WARNING: other processes used {r['others_cpu_frac']:.0%} of the CPU while {name} was "
            "timed: its wall-clock figures are pessimistic ('CPU ms/iter', the process's own CPU "
            "time, is less sensitive to that). Rerun on an idle machine for the real numbers.")
  print(f"JAX: compile {j['compile_s']:.1f} s, mean {j['ms_per_iter_mean']:.1f} ms, "
        f"min {j['ms_per_iter_min']:.1f} ms, data+transfer {j['data_ms_median']:.2f} ms/iter; "
        f"loss {j['first_loss']:.3f} -> {j['last_loss']:.3f}")
  if t:
    print(f"torch: {t['torch_version']}, {t['threads']} threads, mean {t['ms_per_iter_mean']:.1f} ms; "
          f"loss {t['first_loss']:.3f} -> {t['last_loss']:.3f}")
    print(f"JAX / torch tokens/s: {res['jax_over_torch']:.2f}x")
  else:
    print(f"torch: {res['torch_note']}")
  speedup = j['tokens_per_sec'] / NANOGPT['tokens_per_sec']
  ok = j['ms_per_iter_median'] <= TARGET['ms_per_iter_max']
  print(f"JAX / nanoGPT tokens/s: {speedup:.2f}x (target >= {TARGET['speedup_vs_nanogpt']}x, "
        f"<= {TARGET['ms_per_iter_max']:.0f} ms/iter: {'met' if ok else 'NOT met'})")
  if full:
    fl = full['final_eval_loss']
    ok = fl is not None and fl <= TARGET['val_loss_max']
    print(f"full run: {full['steps']} steps in {full['wall_s']:.0f} s, eval/loss by step "
          + ', '.join(f'{s}: {v:.3f}' for s, v in full['eval_losses'].items()))
    print(f"  final eval/loss {fl if fl is None else round(fl, 4)} (nanoGPT {NANOGPT['val_loss_2000']}, "
          f"target <= {TARGET['val_loss_max']}: {'met' if ok else 'NOT met'}); trainer "
          f"{full['trainer_ms_per_iter_mean']:.1f} ms/iter mean "
          f"({full['trainer_tokens_per_sec_mean']:,.0f} tokens/s)")


def main(argv=None):
  a = parse_args(argv)
  if a.devices > 1:   # must precede the first jax import
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={a.devices}').strip()
  from configs.pretrain import get_config   # imports jax.numpy; torch runs in its own process
  config = get_config(a.preset)
  data_ok = os.path.exists(a.data)
  if not data_ok:
    print(f'NOTE: data file {a.data} not found (set --data or LMR_DATA_DIR); the speed figures use '
          'random tokens' + ('; --full needs the data and is skipped' if a.full else '') + '.',
          file=sys.stderr, flush=True)
  config.data.path = os.path.abspath(a.data)
  import jax
  from lmresearch import config as lmc
  if len(jax.devices()) < a.devices:
    raise SystemExit(f'--devices {a.devices}: only {len(jax.devices())} JAX devices '
                     '(XLA_FLAGS was set before this script could add the device count?)')
  try:
    lmc.validate(config, a.devices)   # e.g. batch_size must split over the devices
  except lmc.ConfigError as e:
    raise SystemExit(f'error: {e}') from None

  # Vocab as the JAX model will have it (char vocab + specials, padded), so both models match.
  from lmresearch import tokenizers
  from lmresearch.stages.pretrain import padded_vocab
  if data_ok:
    with open(a.data, encoding='utf-8') as f:
      chars = len(set(f.read()))
    vocab = padded_vocab(len(tokenizers.SPECIALS) + chars, config.model)
  else:
    config.data.vocab_size = 65 + len(tokenizers.SPECIALS)
    vocab = padded_vocab(config.data.vocab_size, config.model)

  res = {'cores': cores(), 'nanogpt': NANOGPT, 'target': TARGET}
  cmd, res['torch_note'] = start_torch(a, config, vocab, data_ok)
  if cmd:   # first, alone on the CPU
    print('running the PyTorch reference ...', file=sys.stderr, flush=True)
    res['torch'], res['torch_note'] = run_torch(cmd)

  print('running the JAX step ...', file=sys.stderr, flush=True)
  with tempfile.TemporaryDirectory(prefix='bench_pretrain_') as wd:
    res['jax'] = bench_jax(a, config, data_ok, wd)
  j, t = res['jax'], res.get('torch')
  if t:
    t['mfu'] = j['flops_per_step'] / (t['ms_per_iter_median'] / 1e3) / j['cpu_peak_flops']
    res['jax_over_torch'] = j['tokens_per_sec'] / t['tokens_per_sec']
  res['jax_over_nanogpt'] = j['tokens_per_sec'] / NANOGPT['tokens_per_sec']

  if a.full and data_ok:
    print(f'training the full preset ({config.train.steps} steps) ...', file=sys.stderr, flush=True)
    config.train.eval_every = 500
    if a.full_steps:
      config.train.steps = a.full_steps
      config.train.eval_every = min(500, a.full_steps)
    with tempfile.TemporaryDirectory(prefix='bench_pretrain_full_') as wd:
      res['full'] = full_run(config, wd)

  report(res)
  if a.json:
    with open(a.json, 'w') as f:
      json.dump(res, f, indent=2)
    print(f'wrote {a.json}')


if __name__ == '__main__':
  main()

"""The accelerator benchmark (issue 20): what this codebase does on a GPU or TPU, in one table.

  bash scripts/bench_gpu.sh                  # on the accelerator host: installs jax for it, runs this
  bash scripts/bench_gpu.sh --tiny           # anywhere, CPU included: the same script end to end,
                                             # tiny shapes, seconds (tests/test_bench_gpu.py)

Three figures, measured one after another in this process (the main job in a child process, first,
before this one holds device memory):
  main    the main job: `python -m lmresearch.pipeline` on the default config (what
          scripts/demo.sh runs), wall seconds per stage and for evaluation.
  train   the gpt2_124m preset's shape (12 x 768, context 1024, bf16, its remat and scanned layers)
          on random tokens, data-parallel over every device at --batch sequences per device: the
          trainer's own compiled step (Trainer.compile_step), ms/step median, tokens/s, and MFU
          against the chip's dense bf16 spec peak (training.metrics.PEAK_FLOPS; on a CPU, the fp32
          matmul peak measured here). Issue 20's goal: MFU >= 50%.
  sample  our sampler (`batched.generate`, greedy) on that shape with random weights, batch 64,
          prompts of 64 tokens, 128 new tokens: generated tokens/s and time to first token.
Random tokens and weights: the accelerator host needs no data or checkpoint (nor internet).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The main job runs in a child process on the same device: this process must not take the
# accelerator's memory up front (JAX's default on GPU is 75% of it).
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

PROMPT, NEW = 64, 128
TINY_MODEL = dict(num_layers=2, num_heads=2, embed_dim=64, mlp_dim=256, max_len=256,
                  vocab_size=512, dtype='float32')


def section_main(a) -> dict:
  cfg = 'configs/pipeline.py' + (':size=smoke' if a.tiny else '')
  extra = (['--config.run=pretrain,sft', '--config.eval.prompting=False',
            '--config.eval.rm_rankings=0'] if a.tiny else [])
  with tempfile.TemporaryDirectory(prefix='lmr-bench-main-') as wd:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, '-m', 'lmresearch.pipeline', f'--config={cfg}',
                           f'--workdir={wd}'] + extra, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
      raise SystemExit(f'the main job failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}')
    report = json.load(open(os.path.join(wd, 'report.json')))
  stages = report['stage_seconds']
  return {'config': ' '.join([cfg] + extra), 'wall_s': wall, 'stages_s': stages,
          'eval_s': report['wall_seconds'] - sum(stages.values())}


def model_config(a):
  from lmresearch.training import config as lmc
  c = lmc.config_file('pretrain').get_config('preset=gpt2_124m')
  if a.tiny:
    c.model.update(**TINY_MODEL)
    c.data.update(seq_len=128, vocab_size=TINY_MODEL['vocab_size'])
  return c


def section_train(a) -> dict:
  import jax
  import numpy as np
  from lmresearch.training import config as lmc
  from lmresearch.core import parallel
  from lmresearch.stages import REGISTRY
  from lmresearch.stages.pretrain import PretrainStage
  from lmresearch.training import metrics
  from lmresearch.training.trainer import Trainer
  n = jax.device_count()
  c = model_config(a)
  c.train.update(batch_size=a.batch * n, grad_accum=1, log_every=1, eval_every=0)
  c.mesh.update(data=n, fsdp=1, tensor=1)
  lmc.inherit_model(c)
  lmc.validate(c, n, REGISTRY)
  stage = PretrainStage.abstract(c)   # no tokenizer, no data: random tokens below
  mesh, rules = parallel.make_mesh(c.mesh, jax.devices()), parallel.rules_from_config(c)
  with tempfile.TemporaryDirectory() as tmp:
    trainer = Trainer(c, tmp, stage, mesh, rules)
    abstract, shardings = trainer.abstract_state()
    state = trainer.init_state(shardings)
    step = trainer.compile_step(shardings)
    b, t = c.train.batch_size, c.data.seq_len
    toks = np.random.default_rng(0).integers(0, stage.model.cfg.vocab_size, (b, t + 1), np.int32)
    batch = {'inputs': toks[:, :-1], 'targets': toks[:, 1:],
             'segment_ids': np.ones((b, t), np.int32),
             'positions': np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy(),
             'weights': np.ones((b, t), np.float32)}
    times = []
    with parallel.activate(mesh, rules):
      batch = parallel.put_batch(batch, lambda nd: parallel.batch_sharding(mesh, rules, nd))
      t0 = time.perf_counter()
      for i in range(a.warmup + a.iters):
        w0 = time.perf_counter()
        state, m = jax.block_until_ready(step(state, batch))
        if i == 0:
          compile_s = time.perf_counter() - t0
        if i >= a.warmup:
          times.append(time.perf_counter() - w0)
    loss = float(m['train/loss'])
  med = statistics.median(times)
  flops, peak = stage.flops_per_step(), metrics.peak_flops(a.peak_tflops * 1e12)
  return {'shape': 'gpt2_124m' if not a.tiny else 'tiny', 'dtype': c.model.dtype, 'devices': n,
          'batch': b, 'seq_len': t, 'ms_per_step': med * 1e3,
          'ms_p25': statistics.quantiles(times, n=4)[0] * 1e3 if len(times) > 1 else med * 1e3,
          'ms_p75': statistics.quantiles(times, n=4)[2] * 1e3 if len(times) > 1 else med * 1e3,
          'tokens_per_s': b * t / med, 'flops_per_step': flops, 'peak_flops': peak,
          'mfu': flops / med / peak if peak else None, 'compile_s': compile_s, 'last_loss': loss,
          'iters': a.iters}


def section_sample(a) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import linen as nn
  from lmresearch.core import parallel
  from lmresearch.generation import batched
  from lmresearch.models.transformer import ModelConfig, Transformer
  c = model_config(a)
  vocab = c.model.vocab_size or c.data.vocab_size
  lm = Transformer(ModelConfig.from_config(c.model, vocab))
  mesh = parallel.make_mesh({'data': 1, 'fsdp': 1, 'tensor': 1}, jax.devices()[:1])
  rules = parallel.DEFAULT_RULES
  init = lambda: lm.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params']
  ids = np.random.default_rng(0).integers(3, vocab, (a.sample_batch, PROMPT)).tolist()
  with parallel.activate(mesh, rules):
    _, shardings = parallel.abstract_and_shardings(init, mesh, rules)
    params = jax.jit(lambda: nn.unbox(init()), out_shardings=shardings)()
    gen = lambda n: jax.block_until_ready(batched.generate(
        lm, params, ids, max_new_tokens=n, temperature=0.0, stop_ids=())['tokens'])
    gen(NEW), gen(1)   # compile both
    total, first = [], []
    for _ in range(a.sample_repeats):
      t0 = time.perf_counter()
      gen(NEW)
      total.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      gen(1)
      first.append(time.perf_counter() - t0)
  s = statistics.median(total)
  return {'batch': a.sample_batch, 'prompt': PROMPT, 'new_tokens': NEW, 'dtype': c.model.dtype,
          'tokens_per_s': a.sample_batch * NEW / s, 'ttft_ms': statistics.median(first) * 1e3}


def describe() -> dict:
  import importlib.metadata as md
  import jax
  d = jax.devices()[0]
  return {'date': time.strftime('%Y-%m-%d'), 'platform': d.platform, 'device_kind': d.device_kind,
          'devices': jax.device_count(), 'jax': jax.__version__, 'jaxlib': md.version('jaxlib')}


def table(res: dict) -> list[str]:
  m, t, s = res.get('main'), res.get('train'), res.get('sample')
  rows = []
  if t:
    mfu = f"{t['mfu']:.1%}" if t['mfu'] is not None else 'no spec peak for this chip (--peak_tflops)'
    rows.append([f"train step, {t['shape']} shape, {t['dtype']}, {t['batch']} x {t['seq_len']} tokens "
                 f"on {t['devices']} device(s)",
                 f"{t['ms_per_step']:.1f} ms/step (IQR {t['ms_p25']:.1f}-{t['ms_p75']:.1f}), "
                 f"{t['tokens_per_s']:,.0f} tokens/s, MFU {mfu} of {t['peak_flops'] / 1e12:,.1f} "
                 'TFLOP/s (goal >= 50%)'])
  if s:
    rows.append([f"sampler, batch {s['batch']}, prompt {s['prompt']}, {s['new_tokens']} new tokens, "
                 f"greedy, {s['dtype']}",
                 f"{s['tokens_per_s']:,.0f} tokens/s, time to first token {s['ttft_ms']:.1f} ms"])
  if m:
    per = ', '.join(f'{k} {v:.0f} s' for k, v in m['stages_s'].items())
    rows.append([f"main job ({m['config']})",
                 f"{m['wall_s']:.0f} s wall ({per}, evaluation {m['eval_s']:.0f} s)"])
  mach = res['machine']
  head = (f"bench_gpu, {mach['date']}: {mach['devices']} x {mach['device_kind']} "
          f"({mach['platform']}), jax {mach['jax']}, jaxlib {mach['jaxlib']}")
  return [head, '', '| benchmark | figure |', '| --- | --- |'] + [f'| {a} | {b} |' for a, b in rows]


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--tiny', action='store_true', help='tiny shapes and the smoke pipeline (CPU check)')
  p.add_argument('--sections', default='main,train,sample')
  p.add_argument('--batch', type=int, default=16, help='train: sequences per device')
  p.add_argument('--iters', type=int, default=50)
  p.add_argument('--warmup', type=int, default=5)
  p.add_argument('--sample_batch', type=int, default=64)
  p.add_argument('--sample_repeats', type=int, default=3)
  p.add_argument('--peak_tflops', type=float, default=0.0,
                 help='the chip\'s dense bf16 peak, where PEAK_FLOPS does not know it')
  p.add_argument('--json', default='', help='also write every figure here')
  a = p.parse_args()
  if a.tiny:
    a.batch, a.iters, a.warmup, a.sample_batch, a.sample_repeats = 2, 3, 1, 4, 1
  sections = a.sections.split(',')
  unknown = set(sections) - {'main', 'train', 'sample'}
  if unknown:
    p.error(f'--sections: unknown {sorted(unknown)} (main, train, sample)')
  res = {}
  if 'main' in sections:   # first: a child process, before this one opens the device
    print('main job ...', file=sys.stderr, flush=True)
    res['main'] = section_main(a)
  from lmresearch.runtime import split_cpu
  split_cpu(1)   # on a CPU host, one device (an accelerator host lists its chips regardless)
  res['machine'] = describe()
  if 'train' in sections:
    print('train step ...', file=sys.stderr, flush=True)
    res['train'] = section_train(a)
  if 'sample' in sections:
    print('sampler ...', file=sys.stderr, flush=True)
    res['sample'] = section_sample(a)
  print('\n'.join(table(res)))
  if a.json:
    with open(a.json, 'w') as f:
      json.dump(res, f, indent=1)


if __name__ == '__main__':
  main()

"""Prepared-corpus data path: memory flat in the corpus size, loader throughput vs a step's need.

  python scripts/bench_data.py                      # ~20 MB and ~2.1 GB prepared corpora
  python scripts/bench_data.py --copies 4 --steps 10   # a quick check

1. Writes a ~20 MB JSONL corpus (documents of the embedded world, several world seeds), trains a
   BPE tokenizer on a sample, and prepares it (`lmresearch.data.prepare`): prepare's tokens/s.
2. The large corpus is that prepared directory's shards copied --copies times (real files, one
   meta.json listing them all): ≥2 GB of token ids on disk. The reader's memory and I/O do not
   depend on what the ids are, and tokenizing 2 GB on this machine would take most of an hour.
3. Peak RSS of the same pretraining run (tiny model, --steps steps, global shuffle) on each corpus,
   polled every 50 ms: the difference is what the corpus size costs in memory.
4. Loader throughput at the gpt2_124m preset's batch (512 x 1024 tokens, one process): grain's
   shuffled iterator over the large corpus, tokens/s. Against it, the tokens/s a step needs at
   that batch when the step is as fast as the hardware allows (100% MFU, spec-sheet bf16 peak).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from bench_common import OthersShare, cores  # noqa: E402

GPT2_BATCH, GPT2_SEQ, GPT2_FLOPS_PER_STEP = 512, 1024, 448.467e12   # scripts/dry_run_presets.py
PEAKS = {'v4-8 (4 chips x 275 TFLOP/s)': 4 * 275e12, 'v5p-8 (4 chips x 459 TFLOP/s)': 4 * 459e12}


def make_corpus(path: str, target_mb: float) -> int:
  from lmresearch.data import world
  n, seed = 0, 0
  with open(path, 'w') as f:
    while f.tell() < target_mb * 1e6:
      for doc in world.corpus(seed, 5000):
        f.write(json.dumps({'text': doc}) + '\n')
        n += 1
      seed += 1
  return n


def replicate(small: str, big: str, copies: int) -> dict:
  with open(os.path.join(small, 'meta.json')) as f:
    meta = json.load(f)
  os.makedirs(os.path.join(big, 'train'), exist_ok=True)
  shutil.copy(os.path.join(small, 'tokenizer.json'), big)
  shards = []
  for c in range(copies):
    for s in meta['splits']['train']['shards']:
      name = f'train/copy{c:03d}-{os.path.basename(s["file"])}'
      shutil.copy(os.path.join(small, s['file']), os.path.join(big, name))
      shards.append({**s, 'file': name})
  meta['splits']['train'] = {'tokens': sum(s['tokens'] for s in shards),
                             'docs': sum(s['docs'] for s in shards), 'shards': shards}
  meta['splits']['validation']['shards'] = [
      {**s, 'file': os.path.join(small, s['file'])} for s in meta['splits']['validation']['shards']]
  with open(os.path.join(big, 'meta.json'), 'w') as f:
    json.dump(meta, f)
  return meta


def disk_mb(directory: str) -> float:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(directory) for f in fs) / 1e6


def peak_rss(cmd) -> tuple[float, int]:
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  p, peak = psutil.Process(proc.pid), 0
  while proc.poll() is None:
    try:
      peak = max(peak, p.memory_info().rss)
    except psutil.NoSuchProcess:
      break
    time.sleep(0.05)
  err = proc.stderr.read()
  if proc.returncode:
    raise SystemExit(f'{" ".join(cmd)} failed:\n{err[-2000:]}')
  return peak / 1e6, proc.returncode


def loader_tokens_per_sec(directory: str, batches: int, threads: int) -> float:
  from lmresearch.data import packing, prepared
  ds = prepared.PreparedDataset(directory, 'train', GPT2_SEQ, 1)
  it = packing.train_iterator(ds, GPT2_BATCH, seed=0, threads=threads)
  next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * GPT2_BATCH * GPT2_SEQ / (time.perf_counter() - t)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--corpus_mb', type=float, default=20)
  ap.add_argument('--copies', type=int, default=450)
  ap.add_argument('--steps', type=int, default=40)
  ap.add_argument('--batches', type=int, default=20)
  ap.add_argument('--keep', default='', help='directory to keep the corpora in (default: temporary)')
  args = ap.parse_args()
  from lmresearch.text import tokenizers
  from lmresearch.data import prepare, world
  import ml_collections
  root = args.keep or tempfile.mkdtemp(prefix='lmr-bench-data-')
  os.makedirs(root, exist_ok=True)
  print(f'cores: {cores()}  workdir: {root}')
  jsonl = os.path.join(root, 'corpus.jsonl')
  docs = make_corpus(jsonl, args.corpus_mb)
  tok = tokenizers.train_tokenizer('bpe', world.corpus(0, 5000), 512)
  tok.save(root)
  dc = ml_collections.ConfigDict(dict(source='jsonl', path=jsonl, text_key='text',
                                      val_fraction=0.01))
  small = os.path.join(root, 'small')
  others = OthersShare().start()
  t = time.perf_counter()
  meta = prepare.prepare(dc, root, small, workers=1, progress=False)
  secs = time.perf_counter() - t
  tokens = meta['splits']['train']['tokens'] + meta['splits']['validation']['tokens']
  print(f'prepare: {os.path.getsize(jsonl) / 1e6:.1f} MB JSONL, {docs} documents -> {tokens:,} '
        f'tokens in {secs:.1f} s = {tokens / secs:,.0f} tokens/s in one worker '
        f'(other processes used {others.stop() or 0:.0%} of the CPU)')
  big = os.path.join(root, 'big')
  replicate(small, big, args.copies)
  print(f'corpora on disk: small {disk_mb(small):,.1f} MB, big {disk_mb(big):,.1f} MB '
        f'({args.copies} copies of the small one\'s shards)')
  run = [sys.executable, '-m', 'lmresearch.main', '--config=configs/pretrain.py',
         f'--config.train.steps={args.steps}', '--config.train.eval_every=0',
         '--config.checkpoint.every=0', '--config.data.source=prepared', '--cpu_devices=1']
  rss = {}
  for name, d in (('small', small), ('big', big)):
    rss[name], _ = peak_rss(run + [f'--config.data.path={d}', f'--workdir={root}/run-{name}'])
    print(f'pretraining {args.steps} steps on {name}: peak RSS {rss[name]:,.0f} MB')
  print(f'peak RSS difference (big - small): {rss["big"] - rss["small"]:+,.0f} MB '
        f'(target: under 100 MB)')
  for threads in sorted({1, cores()}):
    others = OthersShare().start()
    tps = loader_tokens_per_sec(big, args.batches, threads)
    print(f'loader, config.data.read_threads={threads}: {tps:,.0f} tokens/s in one process at batch '
          f'{GPT2_BATCH} x {GPT2_SEQ} (shuffled rows of the big corpus; other processes used '
          f'{others.stop() or 0:.0%} of the CPU)')
    for name, peak in PEAKS.items():
      step = GPT2_FLOPS_PER_STEP / peak
      need = GPT2_BATCH * GPT2_SEQ / step
      print(f'  gpt2_124m step on {name} at 100% MFU: {step:.3f} s -> needs {need:,.0f} '
            f'tokens/s; loader margin {tps / need:.1f}x (target: >= 10x)')
  if not args.keep:
    shutil.rmtree(root)


if __name__ == '__main__':
  main()

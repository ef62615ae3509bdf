"""LoRA against full fine-tuning, measured in one run on this machine: the optimizer state's bytes,
a checkpoint's bytes, the step time and the peak RSS of SFT, on the default model and on a
gpt2_124m-shaped one; and PPO's peak RSS with LoRA (one copy of each model) vs full (two).

  python scripts/bench_lora.py [--rank=8] [--steps=12] [--out=docs/bench/lora.json]

Every run is its own process (its peak RSS is its own, GNU time's maximum resident set size);
step time is the median of the run's logged perf/step_time_s (compilation excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL_DATA = ['--config.data.synthetic.num_docs=400', '--config.train.log_every=1',
              '--config.train.eval_every=0', '--config.checkpoint.use_async=False']
GPT2 = ['--config.model.style=gpt2', '--config.model.num_layers=12', '--config.model.num_heads=12',
        '--config.model.embed_dim=768', '--config.model.mlp_dim=3072', '--config.model.max_len=1024',
        '--config.model.vocab_size=50304', '--config.data.seq_len=256', '--config.train.batch_size=4']


def run(args: list[str], workdir: str) -> dict:
  env = {**os.environ, 'PYTHONPATH': ROOT}
  out = subprocess.run(['/usr/bin/time', '-v', sys.executable, '-m', 'lmresearch.main', *args,
                        f'--workdir={workdir}'], env=env, capture_output=True, text=True, cwd=ROOT)
  if out.returncode:
    raise RuntimeError(' '.join(args) + '\n' + out.stderr[-3000:])
  kb = next(int(line.split(':')[1]) for line in out.stderr.splitlines()
            if 'Maximum resident set size' in line)
  from lmresearch.training.metrics import read_metrics
  rows = read_metrics(workdir)
  times = [r['perf/step_time_s'] for r in rows if 'perf/step_time_s' in r]
  ckpts = os.path.join(workdir, 'checkpoints')
  last = max((d for d in os.listdir(ckpts) if d.isdigit()), key=int)
  ckpt_bytes = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in
                   os.walk(os.path.join(ckpts, last)) for f in fs)
  counts = rows[0]
  return {'peak_rss_gb': kb / 1e6, 'step_s': float(np.median(times)) if times else None,
          'checkpoint_mb': ckpt_bytes / 1e6, 'params_trained': counts.get('model/params_trained'),
          'params': counts.get('model/params'),
          # AdamW keeps two moments per trained param (fp32): what the optimizer state holds
          'optimizer_state_mb': 2 * 4 * counts.get('model/params_trained', 0) / 1e6}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--rank', type=int, default=8)
  ap.add_argument('--steps', type=int, default=12)
  ap.add_argument('--out', default='')
  a = ap.parse_args()
  lora = [f'--config.lora.rank={a.rank}', '--config.lora.alpha=16',
          '--config.lora.targets=query,key,value,out,gate,up,down']
  steps = [f'--config.train.steps={a.steps}', f'--config.checkpoint.every={a.steps}']
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for shape, extra in (('default', []), ('gpt2_124m', GPT2)):
      base = os.path.join(tmp, f'{shape}_base')
      run([f'--config={ROOT}/configs/pretrain.py', '--config.train.steps=2',
           '--config.checkpoint.every=2', *SMALL_DATA, *extra], base)
      sft = [f'--config={ROOT}/configs/sft.py', f'--config.init_from={base}', *SMALL_DATA, *steps,
             *[x for x in extra if 'model' not in x]]
      for name, more in (('full', []), (f'lora_r{a.rank}', lora)):
        results[f'sft_{shape}_{name}'] = run(sft + more, os.path.join(tmp, f'{shape}_sft_{name}'))
        print(json.dumps({f'sft_{shape}_{name}': results[f'sft_{shape}_{name}']}), flush=True)
    base, sft = os.path.join(tmp, 'default_base'), os.path.join(tmp, 'default_sft_full')
    rm = os.path.join(tmp, 'rm')
    run([f'--config={ROOT}/configs/reward.py', f'--config.init_from={sft}', *SMALL_DATA,
         '--config.train.steps=2', '--config.checkpoint.every=2', '--config.reward.norm_samples=8',
         '--config.reward.norm_max_new_tokens=8'], rm)
    ppo = [f'--config={ROOT}/configs/ppo.py', f'--config.init_from={sft}', f'--config.reward_from={rm}',
           *SMALL_DATA, '--config.train.steps=4', '--config.checkpoint.every=4']
    for name, more in (('full', []), (f'lora_r{a.rank}', lora)):
      results[f'ppo_default_{name}'] = run(ppo + more, os.path.join(tmp, f'ppo_{name}'))
      print(json.dumps({f'ppo_default_{name}': results[f'ppo_default_{name}']}), flush=True)
  machine = {'cpus': os.cpu_count(), 'cpu': platform.processor() or platform.machine(),
             'date': time.strftime('%Y-%m-%d')}
  print(f'\n{machine}')
  print('| run | params trained | optimizer state MB | checkpoint MB | step s | peak RSS GB |')
  print('| --- | --- | --- | --- | --- | --- |')
  for k, r in results.items():
    step = '–' if r['step_s'] is None else f"{r['step_s']:.3f}"
    print(f"| {k} | {r['params_trained']:,.0f} of {r['params']:,.0f} | {r['optimizer_state_mb']:.1f} | "
          f"{r['checkpoint_mb']:.1f} | {step} | {r['peak_rss_gb']:.2f} |")
  if a.out:
    os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
    with open(a.out, 'w') as f:
      json.dump({'machine': machine, 'rank': a.rank, 'results': results}, f, indent=2)


if __name__ == '__main__':
  main()

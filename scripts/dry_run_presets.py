"""The pod presets' per-device figures from `--dry_run`, as docs/pods.md's table.

  python scripts/dry_run_presets.py                       # every preset, loss in chunks and whole
  python scripts/dry_run_presets.py --presets llama_1b    # one

Each row is one `lmresearch.main --dry_run` process on a simulated CPU mesh of the preset's own
device count: it lowers and compiles one train step and reports parameters, training FLOPs per step
and XLA's memory estimate per device (temporaries, and the sharded arguments: params + optimizer
state + batch). These are compile-time figures for the CPU backend; a TPU compile lays memory out
differently, so read them as the shape of the cost, and check on the slice.
"""
import argparse
import re
import subprocess
import sys

PRESETS = ('gpt2_124m', 'llama_1b', 'llama3_8b')


def dry_run(preset: str, loss_chunk: int | None) -> dict:
  cmd = [sys.executable, '-m', 'lmresearch.main', f'--config=configs/pretrain.py:preset={preset}',
         '--workdir=/tmp/lmr-dry-run', '--dry_run']
  if loss_chunk is not None:
    cmd.append(f'--config.train.loss_chunk={loss_chunk}')
  out = subprocess.run(cmd, capture_output=True, text=True)
  line = [ln for ln in out.stdout.splitlines() if ln.startswith('dry run:')]
  if out.returncode or not line:
    raise SystemExit(f'{" ".join(cmd)} failed:\n{out.stderr[-2000:]}')
  fields = dict(re.findall(r"(\w+)=(\{[^}]*\}|\S+)", line[0]))
  return fields


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--presets', nargs='*', default=PRESETS)
  args = ap.parse_args()
  print('| preset | mesh | params | TFLOPs/step | loss | temporaries GB/device | '
        'arguments GB/device |')
  print('|---|---|---|---|---|---|---|')
  for preset in args.presets:
    for chunk, label in ((0, 'whole'), (None, 'chunked (preset)')):
      f = dry_run(preset, chunk)
      mesh = ' '.join(f'{k}={v}' for k, v in re.findall(r"'(\w+)': (\d+)", f['mesh']) if v != '1')
      print(f"| {preset} | {mesh} | {int(f['params']) / 1e9:.3f} B | "
            f"{float(f['flops_per_step']) / 1e12:,.0f} | {label} | "
            f"{int(f['temp_bytes_per_device']) / 1e9:.1f} | "
            f"{int(f['argument_bytes_per_device']) / 1e9:.2f} |", flush=True)


if __name__ == '__main__':
  main()

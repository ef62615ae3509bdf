"""Import and export of Hugging Face checkpoints: wall time and peak RSS, against the bound

    peak RSS <= the model's bytes (as placed) + its largest tensor + a fixed overhead,

where the overhead is the peak RSS of the same command's process on a model of one layer's
worth (Python, JAX, the libraries, compiled code), measured in the same run. Each conversion
runs in its own process, so its peak is its own.

  python scripts/bench_convert.py [--only=gpt2_124m,llama_1b] [--repeat=3] [--out=docs/bench/convert.json]

A conversion's peak moves between runs of the same command (by several percent on 1B: thread
timing in Orbax and tensorstore), so each is run --repeat times; the table shows the highest
peak (a bound must hold every time) and the JSON also the lowest.

The checkpoints are random (no download), in the published shapes: GPT-2 small (124M, fp32) and
Llama 3.2 1B (1.24B, bf16 as released; imported into fp32 params).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPES = {
    'gpt2_124m': ('gpt2', dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12,
                               n_positions=1024), 'float32'),
    'llama_1b': ('llama', dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                               num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                               head_dim=64, max_position_embeddings=2048, tie_word_embeddings=True,
                               rms_norm_eps=1e-5, rope_theta=500000.0), 'bfloat16'),
    'tiny': ('llama', dict(vocab_size=1000, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=256), 'float32'),
}


def write_checkpoint(kind: str, cfg: dict, dtype: str, out: str) -> dict:
  """A random checkpoint of our family files' tensor list, written as save_pretrained would."""
  import ml_dtypes
  from lmresearch.models import hf
  fam = hf.FAMILIES[kind]
  hf_cfg = {'model_type': kind, 'architectures': [fam.ARCHITECTURE], **cfg}
  model = fam.model_config(hf_cfg)
  vocab = cfg['vocab_size']
  shapes = {}
  for t in fam.tensors(model):
    shapes[t.name] = _hf_shape(t.name, kind, model, vocab)
  rng = np.random.default_rng(0)
  np_dtype = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16}[dtype]
  os.makedirs(out, exist_ok=True)
  tensors, files, size, biggest = {}, [], 0, 0
  for name, shape in shapes.items():
    x = (rng.standard_normal(shape, np.float32) * 0.02).astype(np_dtype)
    biggest = max(biggest, int(np.prod(shape)))
    tensors[name] = x
    size += x.nbytes
    if size > (1 << 30):
      files.append(_flush(tensors, out, len(files)))
      tensors, size = {}, 0
  if tensors:
    files.append(_flush(tensors, out, len(files)))
  weight_map = {k: f for f, keys in files for k in keys}
  with open(os.path.join(out, 'model.safetensors.index.json'), 'w') as f:
    json.dump({'metadata': {}, 'weight_map': weight_map}, f)
  with open(os.path.join(out, 'config.json'), 'w') as f:
    json.dump({**hf_cfg, 'torch_dtype': dtype}, f)
  _tokenizer(out)
  n = sum(int(np.prod(s)) for s in shapes.values())
  return {'params': n, 'largest_tensor_params': biggest}


def _flush(tensors, out, k):
  from lmresearch.models.hf.writer import StreamingWriter
  name = f'model-{k:05d}.safetensors'
  w = StreamingWriter(os.path.join(out, name), {'format': 'pt'})
  for key, x in tensors.items():
    w.add(key, x)
  w.close()
  return name, list(tensors)


def _hf_shape(name: str, kind: str, m: dict, vocab: int) -> tuple:
  e, f = m['embed_dim'], m['mlp_dim']
  h, kvh = m['num_heads'], m.get('num_kv_heads') or m['num_heads']
  hd = m.get('head_size') or e // h
  if kind == 'gpt2':
    table = {'wte': (vocab, e), 'wpe': (m['max_len'], e), 'c_attn.weight': (e, 3 * e),
             'c_attn.bias': (3 * e,), 'attn.c_proj.weight': (e, e), 'c_fc.weight': (e, f),
             'c_fc.bias': (f,), 'mlp.c_proj.weight': (f, e)}
    for k, v in table.items():
      if k in name:
        return v
    return (e,)
  table = {'embed_tokens': (vocab, e), 'lm_head': (vocab, e), 'q_proj': (h * hd, e),
           'k_proj': (kvh * hd, e), 'v_proj': (kvh * hd, e), 'o_proj': (e, h * hd),
           'gate_proj': (f, e), 'up_proj': (f, e), 'down_proj': (e, f)}
  for k, v in table.items():
    if k in name:
      return v
  return (e,)


def _tokenizer(out):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(['hello world ' * 50], trainers.BpeTrainer(
      vocab_size=300, special_tokens=['<|end|>'], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.save(os.path.join(out, 'tokenizer.json'))
  with open(os.path.join(out, 'tokenizer_config.json'), 'w') as f:
    json.dump({'eos_token': '<|end|>', 'tokenizer_class': 'PreTrainedTokenizerFast'}, f)


def measure(args: list[str], devices: int = 1) -> tuple[float, float]:
  """(wall seconds, peak RSS in GB) of one command in its own process (GNU time's maximum
  resident set size), on `devices` host devices."""
  env = {**os.environ, 'PYTHONPATH': ROOT,
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
  t = time.perf_counter()
  out = subprocess.run(['/usr/bin/time', '-v', sys.executable, '-m', 'lmresearch.convert', *args],
                       env=env, capture_output=True, text=True, cwd=ROOT)
  wall = time.perf_counter() - t
  if out.returncode:
    raise RuntimeError(out.stderr[-2000:])
  kb = next(int(line.split(':')[1]) for line in out.stderr.splitlines()
            if 'Maximum resident set size' in line)
  return wall, kb / 1e6


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--only', default='gpt2_124m,llama_1b')
  ap.add_argument('--out', default='')
  ap.add_argument('--tmp', default=tempfile.gettempdir())
  ap.add_argument('--repeat', type=int, default=3, help='runs of each conversion (the highest peak counts)')
  ap.add_argument('--devices', type=int, default=len(os.sched_getaffinity(0)),
                  help='host devices (default: one per core, as `convert` runs): the params are '
                       'sharded over them (fsdp), so export gathers each tensor from its shards')
  a = ap.parse_args()
  rows = []
  with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
    base = os.path.join(tmp, 'tiny')
    write_checkpoint(*SHAPES['tiny'][:1], SHAPES['tiny'][1], SHAPES['tiny'][2], base)
    _, overhead = measure([f'--from_hf={base}', f'--workdir={tmp}/tiny_run'], a.devices)
    for name in a.only.split(','):
      kind, cfg, dtype = SHAPES[name]
      src = os.path.join(tmp, name)
      info = write_checkpoint(kind, cfg, dtype, src)
      ins, outs = [], []
      for _ in range(max(1, a.repeat)):
        shutil.rmtree(f'{tmp}/{name}_run', ignore_errors=True)
        ins.append(measure([f'--from_hf={src}', f'--workdir={tmp}/{name}_run'], a.devices))
        shutil.rmtree(f'{tmp}/{name}_out', ignore_errors=True)
        outs.append(measure([f'--to_hf={tmp}/{name}_out', f'--workdir={tmp}/{name}_run'], a.devices))
      wall_in, rss_in = statistics.median(w for w, _ in ins), max(r for _, r in ins)
      wall_out, rss_out = statistics.median(w for w, _ in outs), max(r for _, r in outs)
      model_gb = info['params'] * 4 / 1e9   # fp32 params as placed
      largest_gb = info['largest_tensor_params'] * 4 / 1e9
      bound = model_gb + largest_gb + overhead
      rows.append({'model': name, 'params': info['params'], 'source_dtype': dtype,
                   'model_gb': model_gb, 'largest_tensor_gb': largest_gb, 'overhead_gb': overhead,
                   'import_s': wall_in, 'import_peak_rss_gb': rss_in, 'export_s': wall_out,
                   'export_peak_rss_gb': rss_out, 'bound_gb': bound, 'repeats': len(ins),
                   'import_peak_rss_gb_min': min(r for _, r in ins),
                   'export_peak_rss_gb_min': min(r for _, r in outs),
                   'within_bound': rss_in <= bound and rss_out <= bound})
      print(json.dumps(rows[-1]), flush=True)
  machine = {'cpus': os.cpu_count(), 'cpu': platform.processor() or platform.machine(),
             'python': platform.python_version(), 'date': time.strftime('%Y-%m-%d'),
             'devices': a.devices}
  print(f'\n{machine}')
  print('| model | params | import s | import peak RSS GB | export s | export peak RSS GB | bound GB |')
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for r in rows:
    print(f"| {r['model']} | {r['params'] / 1e6:.0f}M | {r['import_s']:.1f} | "
          f"{r['import_peak_rss_gb']:.2f} | {r['export_s']:.1f} | {r['export_peak_rss_gb']:.2f} | "
          f"{r['bound_gb']:.2f} |")
  if a.out:
    os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
    with open(a.out, 'w') as f:
      json.dump({'machine': machine, 'rows': rows}, f, indent=2)


if __name__ == '__main__':
  main()

"""Hugging Face checkpoints in and out: one small file per family (gpt2, llama, mistral, qwen2,
qwen3, gemma2, gemma3) maps config.json to our config.model and names every tensor (layout.py);
this file reads and writes the safetensors, a slice or a tensor at a time.

  import: config.json -> our model config; each param placed straight into its shards
          (jax.make_array_from_callback: a device's callback reads only the rows it holds)
  export: our model config -> config.json; one param gathered at a time and streamed into
          model.safetensors (or shards of at most `max_shard_bytes` and their index; writer.py)
A model_type or an option we do not implement is a one-line ConfigError naming the key; keys that
change nothing (names, token ids, dtype, ...) are accepted and recorded (keys.py).
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable, Optional

import jax
import numpy as np

from lmresearch.core.errors import ConfigError
from lmresearch.models.hf import gemma2, gemma3, gpt2, keys, layout, llama, mistral, qwen2, qwen3

FAMILIES = {m.MODEL_TYPE: m for m in (gpt2, llama, mistral, qwen2, qwen3, gemma2, gemma3)}
# Tensors a checkpoint may hold that carry no weights of the model (buffers of old versions).
HARMLESS = re.compile(r'.*(rotary_emb\.inv_freq|attn\.bias|attn\.masked_bias)$')


def read_config(hf_dir: str) -> dict:
  path = os.path.join(hf_dir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: --from_hf names a directory as save_pretrained '
                            'writes it (config.json + *.safetensors).')
  with open(path) as f:
    return json.load(f)


def family(hf: dict, where: str = 'config.json'):
  kind = hf.get('model_type')
  if kind not in FAMILIES:
    raise ConfigError(f'{where}: model_type={kind!r}: lmresearch imports '
                      f'{", ".join(sorted(FAMILIES))}.')
  return FAMILIES[kind]


def model_config(hf: dict, where: str = 'config.json'):
  """config.json -> (the family module, our config.model keys, the keys accepted as changing
  nothing, with their values)."""
  fam = family(hf, where)
  neutral = keys.check(hf, fam.READ, fam.FIXED, where)
  return fam, fam.model_config(hf), neutral


class Reader:
  """The safetensors of an HF directory, opened per read (so no mapping stays resident)."""

  def __init__(self, hf_dir: str):
    self.dir = hf_dir
    index = os.path.join(hf_dir, 'model.safetensors.index.json')
    if os.path.exists(index):
      with open(index) as f:
        self.files = json.load(f)['weight_map']
    else:
      single = os.path.join(hf_dir, 'model.safetensors')
      if not os.path.exists(single):
        raise FileNotFoundError(f'{hf_dir}: no model.safetensors or model.safetensors.index.json '
                                '(only safetensors checkpoints are read; save_pretrained writes '
                                'them by default).')
      from safetensors import safe_open
      with safe_open(single, 'flax') as f:
        self.files = {k: 'model.safetensors' for k in f.keys()}

  def shape(self, name: str) -> list[int]:
    from safetensors import safe_open
    with safe_open(os.path.join(self.dir, self.files[name]), 'flax') as f:
      return list(f.get_slice(name).get_shape())

  def rows(self, name: str, r0: int, r1: int, cols: Optional[tuple] = None) -> np.ndarray:
    """hf[name][r0:r1] (and columns c0:c1), as float32 on the host: only that block is read."""
    from safetensors import safe_open
    with jax.default_device(jax.devices('cpu')[0]), \
        safe_open(os.path.join(self.dir, self.files[name]), 'flax') as f:
      s = f.get_slice(name)
      block = s[r0:r1] if cols is None else s[r0:r1, cols[0]:cols[1]]
      return np.asarray(block, np.float32)


def _tree_paths(tree) -> dict:
  return {tuple(getattr(k, 'key', k) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _parts_by_leaf(tensors, scanned: bool) -> dict:
  """our leaf path -> [(layer or None, tensor, part), ...] (one per layer for a stacked leaf)."""
  out: dict = {}
  for t in tensors:
    for p in t.parts:
      path, layer = layout.our_path(p.path, scanned)
      out.setdefault(path, []).append((layer, t, p))
  for v in out.values():
    v.sort(key=lambda x: -1 if x[0] is None else x[0])
  return out


def check_tensors(reader: Reader, tensors, hf_dir: str) -> None:
  names = {t.name for t in tensors}
  missing = sorted(names - set(reader.files))
  if missing:
    raise ConfigError(f'{hf_dir}: tensor {missing[0]} is missing ({len(missing)} missing): the '
                      'checkpoint does not match its config.json.')
  extra = sorted(n for n in set(reader.files) - names if not HARMLESS.match(n)
                 and n != 'lm_head.weight')   # a tied head saved anyway
  if extra:
    raise ConfigError(f'{hf_dir}: tensor {extra[0]} is not part of the model lmresearch builds '
                      f'from config.json ({len(extra)} such tensors); refusing to drop weights.')


def import_params(hf_dir: str, model: dict, abstract, shardings, hf_vocab: int, reader=None):
  """The HF checkpoint as our params (the tree of `abstract`, placed with `shardings`); each
  device's callback reads only the HF rows its shard needs. `reader`: another source of HF
  tensors with Reader's files/shape/rows (a GGUF: gguf_file.GGUFFile); hf_dir then names it."""
  fam = FAMILIES[model['hf_model_type']] if 'hf_model_type' in model else family(read_config(hf_dir))
  tensors = fam.tensors(model)
  reader = reader if reader is not None else Reader(hf_dir)
  check_tensors(reader, tensors, hf_dir)
  by_leaf = _parts_by_leaf(tensors, bool(model.get('scan_layers')))
  leaves, shards = _tree_paths(abstract), _tree_paths(shardings)
  unmapped = sorted('/'.join(map(str, p)) for p in leaves if p not in by_leaf)
  if unmapped:
    raise ConfigError(f'no HF tensor maps to our param {unmapped[0]}: the family file names '
                      'every tensor of the model.')
  out = {}
  for path, leaf in leaves.items():
    entries = by_leaf[path]

    def block(entry, shape, index):
      _, t, p = entry
      if t.axis == 0 and len(t.parts) > 1:   # this part's rows of a concatenated tensor
        read = lambda r0, r1, cols: reader.rows(t.name, p.start + r0, p.start + r1, cols)
      elif t.axis == 1 and len(t.parts) > 1:   # ... or its columns (GPT-2's c_attn)
        read = lambda r0, r1, cols: reader.rows(t.name, r0, r1,
                                                (p.start + cols[0], p.start + cols[1]))
      else:
        read = lambda r0, r1, cols: reader.rows(t.name, r0, r1, cols)
      return layout.read_block(p, shape, index, read, hf_vocab)

    def callback(index, entries=entries, shape=leaf.shape, dtype=leaf.dtype):
      if entries[0][0] is None:   # one HF tensor
        return block(entries[0], shape, index).astype(dtype)
      l0, l1, _ = index[0].indices(shape[0])   # a stacked leaf: one HF tensor per layer
      return np.stack([block(entries[i], shape[1:], index[1:]) for i in range(l0, l1)]).astype(dtype)

    out[path] = jax.make_array_from_callback(leaf.shape, shards[path], callback)
  return _unflatten(abstract, out)


def _unflatten(like, by_path: dict):
  paths = list(_tree_paths(like))
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like),
                                      [by_path[p] for p in paths])


def export_params(fetch: Callable[[tuple, Optional[int]], np.ndarray], model: dict, hf_vocab: int,
                  out_dir: str, dtype: str = 'float32', max_shard_bytes: int = 2 << 30) -> list[str]:
  """Writes model.safetensors (or shards and their index) from `fetch(our path, layer)`, which
  returns one param (one layer of a stacked one) whole on the host. Returns the files written."""
  import ml_dtypes
  from lmresearch.models.hf.writer import StreamingWriter
  fam = FAMILIES[model['hf_model_type']]
  np_dtype = {'float32': np.float32, 'float16': np.float16, 'bfloat16': ml_dtypes.bfloat16}[dtype]
  scanned = bool(model.get('scan_layers'))
  shards, writer, keys, size = [], None, [], 0

  def flush():
    nonlocal writer, keys, size
    if writer is not None:
      writer.close()
      shards.append((os.path.basename(writer.path), keys))
      writer, keys, size = None, [], 0

  for t in fam.tensors(model):
    pieces = []
    for p in t.parts:
      path, layer = layout.our_path(p.path, scanned)
      pieces.append(layout.to_hf(p, np.asarray(fetch(path, layer), np.float32), hf_vocab))
    tensor = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=t.axis)
    del pieces
    nbytes = tensor.size * np.dtype(np_dtype).itemsize
    if size and size + nbytes > max_shard_bytes:
      flush()
    if writer is None:
      writer = StreamingWriter(os.path.join(out_dir, f'part-{len(shards):05d}.safetensors'),
                               {'format': 'pt'})
    # On disk now, cast and made contiguous slab by slab: the host holds one tensor at a time.
    writer.add(t.name, tensor, np_dtype)
    keys.append(t.name)
    size += nbytes
    del tensor
  flush()
  return _name_shards(shards, out_dir)


def _name_shards(shards, out_dir: str) -> list[str]:
  """HF's names: model.safetensors alone, or model-0000k-of-0000n.safetensors + the index."""
  if len(shards) == 1:
    os.replace(os.path.join(out_dir, shards[0][0]), os.path.join(out_dir, 'model.safetensors'))
    return ['model.safetensors']
  n, weight_map, names = len(shards), {}, []
  for k, (tmp, keys) in enumerate(shards):
    name = f'model-{k + 1:05d}-of-{n:05d}.safetensors'
    os.replace(os.path.join(out_dir, tmp), os.path.join(out_dir, name))
    weight_map.update({key: name for key in keys})
    names.append(name)
  total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in names)
  with open(os.path.join(out_dir, 'model.safetensors.index.json'), 'w') as f:
    json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map}, f, indent=2)
  return names + ['model.safetensors.index.json']

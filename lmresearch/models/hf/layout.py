"""How a Hugging Face checkpoint's tensors map onto our params, both ways, a slice at a time.

A family file (gpt2.py, llama.py, ...) lists, for every HF tensor, the params of ours it holds
(`Part`s: our path within one layer, and how the layout differs). Our params are
  kernels [in..., out...] (Linear weights transposed), attention kernels split by head
  ([embed, heads, head_dim] in, [heads, head_dim, embed] out), the vocabulary padded to a
  multiple for sharding, and with scan_layers one stacked leaf [layers, ...] per layer param.
Import reads, for one device's shard of one param, only the rows of the HF tensor that shard
needs (a contiguous range along the HF tensor's first axis), so no process holds a whole matrix
it does not own; export gathers one param at a time.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

# How our param's layout relates to the HF tensor's (h = heads of that projection, d = head_dim):
#   same        ours == hf
#   T           ours == hf.T                            (Linear [out, in] -> kernel [in, out])
#   heads_in    hf [h*d, E]   -> ours [E, h, d]         (q/k/v Linear)
#   heads_bias  hf [h*d]      -> ours [h, d]
#   heads_out   hf [E, h*d]   -> ours [h, d, E]         (o_proj Linear)
#   cols_heads  hf [E, h*d]   -> ours [E, h, d]         (GPT-2 Conv1D c_attn, [in, out] already)
#   rows_heads  hf [h*d, E]   -> ours [h, d, E]         (GPT-2 Conv1D c_proj)
#   vocab_rows  hf [V, E]     -> ours [V_pad, E]        (embeddings: padding rows are zero)
#   vocab_T     hf [V, E]     -> ours [E, V_pad]        (an untied head)
KINDS = ('same', 'T', 'heads_in', 'heads_bias', 'heads_out', 'cols_heads', 'rows_heads',
         'vocab_rows', 'vocab_T')


@dataclasses.dataclass(frozen=True)
class Part:
  path: tuple            # our param's path; ('layer', i, ...) marks a per-layer param
  kind: str
  heads: int = 0
  start: int = 0         # where this part starts along the HF tensor's concatenated axis
  size: int = 0          # and its extent there (0: the whole tensor)


@dataclasses.dataclass(frozen=True)
class Tensor:
  name: str
  parts: tuple           # Parts concatenated along `axis` of the HF tensor (GPT-2's c_attn: q, k, v)
  axis: int = 0


def _rng(s: slice, n: int) -> tuple[int, int]:
  start, stop, _ = s.indices(n)
  return start, stop


def read_block(part: Part, shape: Sequence[int], index: Sequence[slice],
               read: Callable[[int, int, Optional[tuple]], np.ndarray], hf_vocab: int = 0) -> np.ndarray:
  """The block `index` of our param (shape `shape`, one layer's) from the HF tensor, reading only
  that block of it: `read(r0, r1, (c0, c1) or None)` returns rows [r0, r1) (and columns
  [c0, c1) of a matrix) of this part of the tensor."""
  k = part.kind
  idx = [_rng(s, n) for s, n in zip(index, shape)]
  if k == 'same':
    return read(*idx[0], idx[1] if len(shape) == 2 else None)
  if k == 'T':
    return read(*idx[1], idx[0]).T
  if k in ('vocab_rows', 'vocab_T'):   # ids past the HF vocabulary are padding: zeros
    (v0, v1), cols = (idx[0], idx[1]) if k == 'vocab_rows' else (idx[1], idx[0])
    out = np.zeros((v1 - v0, cols[1] - cols[0]), np.float32)
    if v0 < hf_vocab:
      got = read(v0, min(v1, hf_vocab), cols)
      out[:len(got)] = got
      out = out.astype(got.dtype)
    return out if k == 'vocab_rows' else out.T
  if k in ('heads_in', 'rows_heads'):   # HF rows are (head, head_dim) pairs; columns E
    (a0, a1), (b0, b1), e = (idx[1], idx[2], idx[0]) if k == 'heads_in' else (idx[0], idx[1], idx[2])
    d = shape[2] if k == 'heads_in' else shape[1]
    block = read(a0 * d, a1 * d, e).reshape(a1 - a0, d, -1)[:, b0:b1]   # [h', d', E']
    return block.transpose(2, 0, 1) if k == 'heads_in' else block
  if k == 'heads_bias':
    d = shape[1]
    return read(idx[0][0] * d, idx[0][1] * d, None).reshape(-1, d)[:, slice(*idx[1])]
  if k in ('heads_out', 'cols_heads'):   # HF rows are E; columns (head, head_dim) pairs
    e, (a0, a1), (b0, b1) = ((idx[2], idx[0], idx[1]) if k == 'heads_out'
                             else (idx[0], idx[1], idx[2]))
    d = shape[1] if k == 'heads_out' else shape[2]
    block = read(*e, (a0 * d, a1 * d))
    block = block.reshape(block.shape[0], a1 - a0, d)[:, :, b0:b1]   # [E', h', d']
    return block.transpose(1, 2, 0) if k == 'heads_out' else block
  raise ValueError(f'layout kind {k!r}: expected one of {KINDS}.')


def to_hf(part: Part, ours: np.ndarray, hf_vocab: int = 0) -> np.ndarray:
  """Our whole param (one layer's) in the HF tensor's layout (this part's columns)."""
  k = part.kind
  if k == 'same':
    return ours
  if k == 'T':
    return ours.T
  if k == 'vocab_rows':
    return ours[:hf_vocab]
  if k == 'vocab_T':
    return ours[:, :hf_vocab].T
  if k == 'heads_in':      # [E, h, d] -> [h*d, E]
    return ours.transpose(1, 2, 0).reshape(-1, ours.shape[0])
  if k == 'heads_bias':
    return ours.reshape(-1)
  if k == 'heads_out':     # [h, d, E] -> [E, h*d]
    return ours.transpose(2, 0, 1).reshape(ours.shape[2], -1)
  if k == 'cols_heads':    # [E, h, d] -> [E, h*d]
    return ours.reshape(ours.shape[0], -1)
  if k == 'rows_heads':    # [h, d, E] -> [h*d, E]
    return ours.reshape(-1, ours.shape[2])
  raise ValueError(f'layout kind {k!r}: expected one of {KINDS}.')


def our_path(path: tuple, scanned: bool) -> tuple[tuple, Optional[int]]:
  """('layer', i, 'attn', ...) -> our tree path and the layer index (stacked under 'layers' with
  scan_layers, 'layer_<i>' otherwise); other paths are returned as they are."""
  if path and path[0] == 'layer':
    i = path[1]
    return (('layers',) + path[2:], i) if scanned else ((f'layer_{i}',) + path[2:], None)
  return path, None

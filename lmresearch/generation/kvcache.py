"""The KV cache as generation lays it out: the model's attention reads the cache it is given
(`decode=KV_CACHE`), and this module decides where each chunk's keys and values go and what a
query may attend. Three layouts, told apart by the cache index the caller made:

  one index for every row      the batched sampler (generation/batched.py): a left-padded prompt
                               block, then one slot per step for all rows; `kv_mask` hides pads
  an index per row ([rows])    the serving engine's slots (generation/engine.py): row r's chunk
                               goes to slots i[r], i[r] + 1, ...; a step may carry only the first
                               b rows and read only the first L slots (its length bucket)
  a tuple of row blocks        the engine's slots in blocks, each [block rows, kv_heads, slots,
                               head_dim] with its own index, attended block by block

Every layout keeps keys and values as [batch, kv_heads, slots, head_dim], the layout attention
reads, so a decode step transposes only its own chunk, never the whole cache. (MaxText's
inference/kvcache.py and nanochat's Engine own their caches the same way.)
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lmresearch.models.transformer import in_window


@dataclasses.dataclass(frozen=True)
class KVCache:
  """What `decode=` takes: the layout object the attention layers call (hashable, so it can be a
  static argument of a jitted function)."""

  def update(self, module, k, v, kv_mask, window=0):
    return update(module, k, v, kv_mask, window)


KV_CACHE = KVCache()


def update(module, k, v, kv_mask, window=0):
  """Writes this chunk's keys/values at the cache index; returns the whole cache, its mask and
  whether it is heads-first. The cache is kept as [batch, kv_heads, slots, head_dim], the layout
  attention reads, so a decode step transposes only its own chunk, never the whole cache."""
  initialized = module.has_variable('cache', 'cached_key')
  kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)            # [b, kvh, chunk, d]
  ck = module.variable('cache', 'cached_key', jnp.zeros, kt.shape, k.dtype)
  cv = module.variable('cache', 'cached_value', jnp.zeros, vt.shape, v.dtype)
  index = module.variable('cache', 'cache_index', lambda: jnp.zeros((), jnp.int32))
  if not initialized:   # the init call only sizes the cache
    return k, v, None, False
  i = index.value
  if isinstance(i, tuple) or i.ndim == 1:   # an index per row: the engine's slots (or blocks)
    return _update_rows(k, v, ck, cv, index, kv_mask, window)
  chunk, cache_len = k.shape[1], ck.value.shape[2]
  ck.value = jax.lax.dynamic_update_slice(ck.value, kt, (0, 0, i, 0))
  cv.value = jax.lax.dynamic_update_slice(cv.value, vt, (0, 0, i, 0))
  index.value = i + chunk
  # Query j of this chunk sits in slot i + j: it sees filled slots up to and including itself.
  slots = jnp.arange(cache_len)[None, :]
  causal = slots <= (i + jnp.arange(chunk))[:, None]                     # [chunk, cache_len]
  if kv_mask is None:
    kv_mask = jnp.ones((k.shape[0], cache_len), jnp.bool_)
  mask = causal[None, None] & kv_mask[:, None, None, :].astype(bool)   # [b, 1, chunk, cache_len]
  if not (isinstance(window, int) and window == 0):
    # The window counts positions, not slots: a row may hold pads between a shared prompt
    # prefix and its own tokens (the sampler's prefix sharing); a slot's position is the
    # number of real slots before it.
    pos = jnp.cumsum(kv_mask.astype(jnp.int32), axis=-1) - 1                # [b, cache_len]
    q_pos = jax.lax.dynamic_slice_in_dim(pos, i, chunk, axis=1)             # [b, chunk]
    mask = mask & in_window(q_pos[:, None, :, None], pos[:, None, None, :], window)
  return ck.value, cv.value, mask, True

def _update_rows(k, v, ck, cv, index, kv_mask, window=0):
  """`update` with a cache index per row ([rows]): row r's chunk goes to slots i[r],
  i[r] + 1, ... (each row holds one sequence from slot 0, so its slot is its position). The
  chunk may come for the first b <= rows rows only, and kv_mask's length L may be shorter than
  the cache: then only those rows' first L slots are attended (the serving engine's buckets:
  a step reads what is live, and writes only its new keys and values into the whole cache).

  The cache may also be a tuple of row blocks (each [block rows, kv_heads, slots, head_dim]
  with its own [block rows] index): the chunk's rows fill the blocks in order, and keys, values
  and mask come back per block, for attention block by block. XLA:CPU copies any slice of the
  cache into a buffer of its own before the attention dots read it, and those copies were the
  largest share of a 16-row decode step (docs/benchmarks.md, serving); a whole block at the
  whole length is read where it lies."""
  if not isinstance(ck.value, tuple):
    ck.value, cv.value, index.value, keys, values, mask = _rows(
        k, v, ck.value, cv.value, index.value, kv_mask, window)
    return keys, values, mask, True
  out, lo = [], 0
  for kb, vb, ib in zip(ck.value, cv.value, index.value):
    hi = min(k.shape[0], lo + kb.shape[0])
    out.append(_rows(k[lo:hi], v[lo:hi], kb, vb, ib,
                          None if kv_mask is None else kv_mask[lo:hi], window))
    lo = hi
  assert lo == k.shape[0], (lo, k.shape)   # the caller passes the blocks the rows fill
  ck.value, cv.value, index.value, keys, values, mask = (tuple(x) for x in zip(*out))
  return keys, values, mask, True

def _rows(k, v, ck, cv, index, kv_mask, window=0):
  """One per-row cache (arrays): the updated cache and index, and what the chunk attends."""
  b, chunk = k.shape[:2]
  rows_all, cache_len = ck.shape[0], ck.shape[2]
  length = cache_len if kv_mask is None else kv_mask.shape[1]
  i = index[:b]
  q_slot = i[:, None] + jnp.arange(chunk)[None, :]                       # [b, chunk]
  rows = jnp.arange(b)[:, None]
  # Advanced indices around a slice put their dims first: [b, chunk, kvh, d], k's own layout.
  ck = ck.at[rows, :, q_slot, :].set(k, mode='drop')
  cv = cv.at[rows, :, q_slot, :].set(v, mode='drop')
  index = index.at[:b].add(chunk) if b < rows_all else i + chunk
  keys, values = ck, cv
  if b < rows_all or length < cache_len:
    keys = jax.lax.slice(keys, (0, 0, 0, 0), (b,) + keys.shape[1:2] + (length,) + keys.shape[3:])
    values = jax.lax.slice(values, (0, 0, 0, 0),
                           (b,) + values.shape[1:2] + (length,) + values.shape[3:])
  slots = jnp.arange(length)[None, None, :]
  mask = slots <= q_slot[:, :, None]                                      # [b, chunk, length]
  if kv_mask is not None:
    mask = mask & kv_mask[:, None, :].astype(bool)
  mask = mask & in_window(q_slot[:, :, None], slots, window)
  return ck, cv, index, keys, values, mask[:, None]



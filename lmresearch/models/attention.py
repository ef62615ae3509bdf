"""Scaled dot-product attention: JAX's own, or a CPU path with batch-leading dots.

`jax.nn.dot_product_attention` writes attention as einsums over [batch, length, heads, head_dim]
operands ('BTNH,BSNH->BNTS') and leaves the backward pass to autodiff. Profiled on XLA:CPU (the
default pipeline's pretraining step, 4 layers, 16 x 256 tokens), attention took about a third of
the step for a fifth of its FLOPs: transposes of every operand, a softmax backward that reduces
over the whole [t, s] score matrix, and work on the causally masked half.

The 'einsum' path:
  - moves heads next to batch once ([blocks, b, kv_heads, group, rows, d]: the query heads that
    share a key/value head sit together, so grouped-query attention copies no keys), and back once;
  - has its own backward (`jax.custom_vjp`): four dots and FlashAttention's identity
    dS = P * (dP - rowsum(dO * O)), whose row sum runs over [t, d] instead of [t, s];
  - on self-attention over a whole sequence (training, scoring; not a decode step), cuts the
    queries into row blocks and gives block i only the keys up to its end: the causal mask makes
    the rest zero, so its scores are never computed (4 blocks: 5/8 of the work);
  - normalizes the output rows ((e @ V) / rowsum(e)) rather than the [t, s] probabilities.
Same function as JAX's: the same masking constant, fp32 logits and softmax (tests compare them).

  attention_impl=''        'einsum' when the default backend is the CPU, JAX's choice elsewhere
  attention_impl='einsum'  always this path
  attention_impl='xla' | 'cudnn'   jax.nn.dot_product_attention with that implementation
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

BIG_NEGATIVE = -0.7 * float(np.finfo(np.float32).max)   # jax.nn's masking constant for fp32 logits
# Causal query blocks: at least MIN_ROWS rows each, at most MAX_BLOCKS of them (chosen on the
# default 256-token pretraining step, 2 CPU devices: 1 block 404 ms/step, 2: 396, 4: 376, 8: 382).
MIN_ROWS, MAX_BLOCKS = 64, 4


def implementation(name: str) -> str:
  """The implementation `name` resolves to ('' picks by backend, at trace time)."""
  if name:
    return name
  return 'einsum' if jax.default_backend() == 'cpu' else ''


def dot_product_attention(q, k, v, mask, impl: str = '', causal: bool = False,
                          kv_heads_first: bool = False, softcap: float = 0.0):
  """q [b, t, h, d], k/v [b, s, kv_heads, d] (or [b, kv_heads, s, d] with kv_heads_first: the KV
  cache's layout), mask broadcastable to [b, 1, t, s] (True = attend) or None -> [b, t, h, d].
  `causal`: the mask already holds the causal one (query i sees keys <= i, t == s), so key blocks
  past a query block may be skipped. `softcap` > 0: scores -> cap * tanh(scores / cap) before
  the mask (Gemma 2), on the plain path below (autodiff's backward)."""
  if softcap:
    return capped_attention(q, k, v, mask, softcap, kv_heads_first)
  impl = implementation(impl)
  if impl != 'einsum':
    if kv_heads_first:
      k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl or None)
  if kv_heads_first:
    return einsum_attention(q, k, v, mask, 1, kv_heads_first=True)
  t, s = q.shape[1], k.shape[1]
  blocks = 1
  if causal and t == s:
    blocks = max(1, min(MAX_BLOCKS, t // MIN_ROWS))
    while t % blocks:
      blocks -= 1
  return einsum_attention(q, k, v, mask, blocks)


def capped_attention(q, k, v, mask, cap: float, kv_heads_first: bool = False):
  """Attention with soft-capped scores, written plainly (fp32 scores and softmax, as above)."""
  if kv_heads_first:
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  b, t, h, d = q.shape
  kvh = k.shape[2]
  qg = q.reshape(b, t, kvh, h // kvh, d)
  scores = jnp.einsum('btkgd,bskd->bkgts', qg, k, preferred_element_type=jnp.float32)
  scores = jnp.tanh(scores * jnp.float32(d ** -0.5) / cap) * jnp.float32(cap)
  if mask is not None:
    m = jnp.broadcast_to(mask, (mask.shape[0], 1, t, k.shape[1]))[:, :, None]   # [b, 1, 1, t, s]
    scores = jnp.where(m, scores, jnp.float32(BIG_NEGATIVE))
  p = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum('bkgts,bskd->btkgd', p.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return out.reshape(b, t, h, d).astype(q.dtype)


def einsum_attention(q, k, v, mask, blocks: int = 1, kv_heads_first: bool = False):
  b, t, h, d = q.shape
  if kv_heads_first:
    kvh, s = k.shape[1], k.shape[2]
    kt, vt = k, v
  else:
    s, kvh = k.shape[1], k.shape[2]
    kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)             # [b, kvh, s, d]
  g, rows = h // kvh, t // blocks
  # Query blocks on a leading axis: [blocks, b, kvh, g, rows, d], each block one contiguous slab.
  qb = q.reshape(b, blocks, rows, kvh, g, d).transpose(1, 0, 3, 4, 2, 5)
  if mask is None:
    mask = jnp.ones((1, 1, t, s), jnp.bool_)
  mask = jnp.broadcast_to(mask, (mask.shape[0], 1, t, s))
  mask = mask.reshape(mask.shape[0], 1, 1, blocks, rows, s).transpose(3, 0, 1, 2, 4, 5)
  out = _attend(qb, kt, vt, mask, blocks)                                # [blocks, b, kvh, g, rows, d]
  return out.transpose(1, 0, 4, 2, 3, 5).reshape(b, t, h, d)


def _keys(i: int, blocks: int, rows: int, s: int) -> int:
  """How many keys query block i sees: up to its last row when blocked (causal), else all."""
  return (i + 1) * rows if blocks > 1 else s


def _forward(q, k, v, mask, blocks):
  """Per block: unnormalized probabilities e = exp(scores - max) and r = 1 / rowsum(e); the output
  is (e @ v) * r, so the [rows, keys] matrix is never divided (only [rows, d] is scaled)."""
  scale = jnp.float32(q.shape[-1] ** -0.5)
  outs, saved = [], []
  for i in range(blocks):
    cols = _keys(i, blocks, q.shape[4], k.shape[2])
    logits = jnp.einsum('bkgqd,bksd->bkgqs', q[i], k[:, :, :cols], preferred_element_type=jnp.float32)
    logits = jnp.where(mask[i][..., :cols], logits * scale, jnp.float32(BIG_NEGATIVE))
    e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    r = 1.0 / jnp.sum(e, axis=-1, keepdims=True)
    o = jnp.einsum('bkgqs,bksd->bkgqd', e.astype(v.dtype), v[:, :, :cols],
                   preferred_element_type=jnp.float32)
    outs.append((o * r).astype(q.dtype))
    saved.append((e, r))
  return jnp.stack(outs), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attend(q, k, v, mask, blocks):
  return _forward(q, k, v, mask, blocks)[0]


def _attend_fwd(q, k, v, mask, blocks):
  out, saved = _forward(q, k, v, mask, blocks)
  return out, (q, k, v, out, saved)


def _attend_bwd(blocks, res, d_out):
  """With P = e * r: dV = e^T (dO * r); dS = P * (dP - rowsum(dO * O)) * scale, where the row sum
  (the softmax backward's reduction) runs over d, not over the keys (FlashAttention's identity)."""
  q, k, v, out, saved = res
  scale = jnp.float32(q.shape[-1] ** -0.5)
  dq, dk, dv = [], jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32)
  for i, (e, r) in enumerate(saved):
    cols = _keys(i, blocks, q.shape[4], k.shape[2])
    do = d_out[i].astype(jnp.float32)
    delta = jnp.sum(do * out[i].astype(jnp.float32), axis=-1, keepdims=True)
    dv_i = jnp.einsum('bkgqs,bkgqd->bksd', e, do * r, preferred_element_type=jnp.float32)
    dp = jnp.einsum('bkgqd,bksd->bkgqs', do, v[:, :, :cols].astype(jnp.float32))
    ds = (e * ((dp - delta) * (r * scale))).astype(q.dtype)
    dq.append(jnp.einsum('bkgqs,bksd->bkgqd', ds, k[:, :, :cols], preferred_element_type=jnp.float32))
    dk_i = jnp.einsum('bkgqs,bkgqd->bksd', ds, q[i], preferred_element_type=jnp.float32)
    if cols == k.shape[2]:
      dk, dv = dk + dk_i, dv + dv_i
    else:
      dk, dv = dk.at[:, :, :cols].add(dk_i), dv.at[:, :, :cols].add(dv_i)
  return jnp.stack(dq).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_attend.defvjp(_attend_fwd, _attend_bwd)

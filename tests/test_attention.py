"""The CPU attention path (models/attention.py) computes JAX's attention, and the faster step the
old step's losses."""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmresearch.models.attention import dot_product_attention, einsum_attention

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inputs(b, t, s, h, kvh, d, seed=0):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((b, s, kvh, d)), jnp.float32) for _ in range(2))
  return q, k, v, jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32)


def _value_and_grads(f, q, k, v, g):
  return jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(f(q, k, v) * g), argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize('heads,kv_heads,blocks', [(4, 4, 1), (4, 4, 4), (4, 2, 2), (6, 1, 4)])
def test_einsum_attention_and_its_backward_equal_jax_with_causal_and_document_masks(heads, kv_heads, blocks):
  b, t, d = 3, 128, 16
  q, k, v, g = _inputs(b, t, t, heads, kv_heads, d)
  seg = np.repeat(np.arange(4), t // 4)[None].repeat(b, 0)
  seg[1] = 0   # one row a single document
  seg = jnp.asarray(seg)
  mask = jnp.tril(jnp.ones((t, t), bool))[None, None] & (seg[:, :, None] == seg[:, None, :])[:, None]
  ref = _value_and_grads(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask), q, k, v, g)
  ours = _value_and_grads(lambda q, k, v: einsum_attention(q, k, v, mask, blocks), q, k, v, g)
  for a, r in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(r))))


def test_a_decode_step_over_a_partly_filled_cache_equals_jax():
  # One query per row against 24 cache slots, some of them padding (every row sees at least one).
  b, t, s, h, kvh, d = 4, 1, 24, 4, 2, 8
  q, k, v, _ = _inputs(b, t, s, h, kvh, d, seed=1)
  kv_mask = np.ones((b, s), bool)
  kv_mask[0, :5] = kv_mask[2, 10:] = False
  mask = jnp.asarray(kv_mask)[:, None, None, :]
  ref = jax.nn.dot_product_attention(q, k, v, mask=mask)
  ours = dot_product_attention(q, k, v, mask, 'einsum', causal=False)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
  # The KV cache's own layout, [b, kv_heads, slots, d], read as it is (both implementations).
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  for impl in ('einsum', 'xla'):
    ours = dot_product_attention(q, kh, vh, mask, impl, kv_heads_first=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_the_default_picks_the_einsum_path_on_cpu_and_blocks_only_self_attention():
  from lmresearch.models import attention
  assert attention.implementation('') == ('einsum' if jax.default_backend() == 'cpu' else '')
  assert attention.implementation('xla') == 'xla'
  calls = []
  real = attention.einsum_attention
  try:
    attention.einsum_attention = lambda q, k, v, mask, blocks: calls.append(blocks) or real(q, k, v, mask, blocks)
    q, k, v, _ = _inputs(1, 256, 256, 2, 2, 8)
    dot_product_attention(q, k, v, None, 'einsum', causal=True)
    dot_product_attention(q, k, v, None, 'einsum', causal=False)
    q, k, v, _ = _inputs(1, 192, 192, 2, 2, 8)
    dot_product_attention(q, k, v, None, 'einsum', causal=True)
  finally:
    attention.einsum_attention = real
  assert calls == [4, 1, 3]


@pytest.mark.parametrize('case', ['llama_default', 'gpt2_style'])
def test_the_faster_step_gives_the_old_steps_first_20_losses(case):
  """tests/data/step_losses.json: recorded by `scripts/step_losses.py` with the step as it was
  before the attention path and the 2-d matmuls (commit ac08534)."""
  sys.path.insert(0, os.path.join(ROOT, 'scripts'))
  from step_losses import losses
  old = json.load(open(os.path.join(ROOT, 'tests', 'data', 'step_losses.json')))[case]
  np.testing.assert_allclose(losses(case, len(old)), old, rtol=1e-4)

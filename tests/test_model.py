"""The transformer: causality, KV-cache decoding = full forward, both families, scan/remat."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from lmresearch.models.transformer import ModelConfig, Transformer
from lmresearch.generation.kvcache import KV_CACHE

STYLES = [dict(style='gpt2'), dict(style='llama', num_kv_heads=2)]


def make(**kw):
  cfg = ModelConfig(**{**dict(vocab_size=64, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64,
                              max_len=32), **kw})
  model = Transformer(cfg)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))['params'])
  return model, params


@pytest.mark.parametrize('kw', STYLES + [dict(style='llama', scan_layers=True, remat='full')])
def test_changing_a_future_token_never_changes_earlier_logits(kw):
  model, params = make(**kw)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, 64)
  changed = tokens.at[:, 10].set((tokens[:, 10] + 7) % 64)
  a = model.apply({'params': params}, tokens)
  b = model.apply({'params': params}, changed)
  np.testing.assert_array_equal(a[:, :10], b[:, :10])
  assert not np.allclose(a[:, 10:], b[:, 10:])


def test_segments_do_not_attend_to_each_other():
  model, params = make(style='llama', num_kv_heads=2)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (1, 16), 0, 64)
  seg = jnp.array([[1] * 8 + [2] * 8])
  pos = jnp.array([list(range(8)) * 2])
  packed = model.apply({'params': params}, tokens, pos, seg)
  alone = model.apply({'params': params}, tokens[:, 8:])
  np.testing.assert_allclose(packed[:, 8:], alone, atol=1e-5)


@pytest.mark.parametrize('kw', STYLES + [dict(style='llama', scan_layers=True)])
def test_kv_cache_decoding_matches_full_forward(kw):
  model, params = make(**kw)
  tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 12), 0, 64)
  full = model.apply({'params': params}, tokens)
  cache = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 12), jnp.int32), decode=KV_CACHE)['cache']
  logits, upd = model.apply({'params': params, 'cache': cache}, tokens[:, :5], decode=KV_CACHE,
                            mutable=['cache'])
  steps = [logits]
  for t in range(5, 12):
    pos = jnp.full((2, 1), t)
    logits, upd = model.apply({'params': params, 'cache': upd['cache']}, tokens[:, t:t + 1], pos,
                              decode=KV_CACHE, mutable=['cache'])
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=2e-5, rtol=1e-5)


def test_parameters_carry_logical_axis_names():
  cfg = ModelConfig(vocab_size=64, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_len=32,
                    style='llama', scan_layers=True)
  boxed = jax.eval_shape(Transformer(cfg).init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
  specs = nn.get_partition_spec(boxed['params'])
  flat = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  names = {jax.tree_util.keystr(p): tuple(s) for p, s in flat}
  assert names["['embed']['embedding']"] == ('vocab', 'embed')
  assert names["['layers']['attn']['query']['kernel']"] == ('layers', 'embed', 'heads', 'kv')
  assert names["['layers']['mlp']['down']['kernel']"] == ('layers', 'mlp', 'embed')
  assert all(len(s) > 0 for s in names.values())


@pytest.mark.parametrize('kw', STYLES)
def test_a_loss_made_in_chunks_of_positions_equals_the_whole_loss_and_its_gradient(kw):
  from lmresearch.models.logprobs import chunked_nll_sums, nll_sums
  from lmresearch.models.transformer import unembed
  model, params = make(**kw)
  tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 17), 0, 64)
  x, y = tokens[:, :-1], tokens[:, 1:]
  w = (jax.random.uniform(jax.random.PRNGKey(4), (2, 16)) > 0.3).astype(jnp.float32)

  def whole(p):
    return nll_sums(model.apply({'params': p}, x), y, w)

  def chunked(p, chunk):
    hidden = model.apply({'params': p}, x, return_hidden=True)
    return chunked_nll_sums(hidden, lambda h: unembed(model.cfg, p, h), y, w, chunk)

  ref = whole(params)
  assert ref[0] > 0 and ref[2] >= 0
  for chunk in (4, 8, 16):
    np.testing.assert_allclose(chunked(params, chunk), ref, rtol=1e-5)
  g_ref = jax.grad(lambda p: whole(p)[0])(params)
  g = jax.grad(lambda p: chunked(p, 4)[0])(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g, g_ref)

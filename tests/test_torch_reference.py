"""The PyTorch reference of scripts/bench_pretrain.py computes the same function as our model.

The same weights go into `scripts/torch_reference.py`'s GPT and into our Transformer with the
shakespeare_char preset (GPT-2 style, fp32); logits and loss must agree to 1e-4, so the benchmark
compares equal work. Weights are perturbed away from their init (non-zero biases, LayerNorm scales
off 1) so that every parameter's mapping matters.
"""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, load_config

torch = pytest.importorskip(
    'torch', reason='torch is not installed: pip install torch==2.13.0 (in the [test] extra) to '
    'check that the benchmark\'s PyTorch reference computes the same function as our model')


def _torch_reference():
  spec = importlib.util.spec_from_file_location('torch_reference',
                                                os.path.join(ROOT, 'scripts', 'torch_reference.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _perturbed(params):
  """Weights moved off their init (non-zero biases, norm scales off 1): every mapping matters."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys)])


def _batch(tokens):
  """One document per row, every position weighted."""
  b, t = tokens.shape[0], tokens.shape[1] - 1
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'segment_ids': np.ones((b, t), np.int32),
           'positions': np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)),
           'weights': np.ones((b, t), np.float32)}
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _to_torch_state(params, layers: int) -> dict:
  """Our param tree -> the reference's state_dict (nanoGPT names; torch Linear is [out, in])."""
  t = lambda x: torch.from_numpy(np.asarray(x, np.float32).copy())
  d = params['embed']['embedding'].shape[1]
  sd = {'wte.weight': t(params['embed']['embedding']), 'wpe.weight': t(params['pos_embed']),
        'lm_head.weight': t(params['embed']['embedding']),
        'ln_f.weight': t(params['ln_final']['scale']), 'ln_f.bias': t(params['ln_final']['bias'])}
  for i in range(layers):
    p, h = params[f'layer_{i}'], f'h.{i}.'
    att = p['attn']
    qkv = [att[n]['kernel'].reshape(d, d) for n in ('query', 'key', 'value')]
    sd.update({
        h + 'ln_1.weight': t(p['ln_attn']['scale']), h + 'ln_1.bias': t(p['ln_attn']['bias']),
        h + 'attn.c_attn.weight': t(np.concatenate(qkv, axis=1).T),
        h + 'attn.c_attn.bias': t(np.concatenate([att[n]['bias'].reshape(d)
                                                  for n in ('query', 'key', 'value')])),
        h + 'attn.c_proj.weight': t(att['out']['kernel'].reshape(d, d).T),
        h + 'attn.c_proj.bias': t(att['out']['bias']),
        h + 'ln_2.weight': t(p['ln_mlp']['scale']), h + 'ln_2.bias': t(p['ln_mlp']['bias']),
        h + 'mlp.c_fc.weight': t(p['mlp']['up']['kernel'].T),
        h + 'mlp.c_fc.bias': t(p['mlp']['up']['bias']),
        h + 'mlp.c_proj.weight': t(p['mlp']['down']['kernel'].T),
        h + 'mlp.c_proj.bias': t(p['mlp']['down']['bias']),
    })
  return sd


def test_torch_reference_computes_our_shakespeare_char_logits_and_loss():
  import flax.linen as nn
  from lmresearch.text import tokenizers
  from lmresearch.stages.pretrain import PretrainStage
  config = load_config('pretrain', 'preset=shakespeare_char')
  config.data.vocab_size = len(tokenizers.SPECIALS) + 65   # tinyshakespeare's 65 characters
  stage = PretrainStage.abstract(config)
  mc = stage.model.cfg
  assert (mc.style, mc.dtype, mc.param_dtype) == ('gpt2', 'float32', 'float32')

  params = _perturbed(nn.unbox(stage.init_params(jax.random.PRNGKey(0))))

  b, t = 4, config.data.seq_len
  tokens = np.random.default_rng(0).integers(0, mc.vocab_size, (b, t + 1)).astype(np.int32)
  batch = _batch(tokens)
  ours_logits = np.asarray(stage.lm_logits(params, batch, None))
  loss_sum, sums = stage.loss_fn(params, batch, None)   # what the trainer optimizes
  ours_loss = float(loss_sum / sums['count'])

  ref = _torch_reference()
  model = ref.GPT(mc.vocab_size, t, mc.num_layers, mc.num_heads, mc.embed_dim, mc.mlp_dim)
  model.load_state_dict(_to_torch_state(params, mc.num_layers), strict=True)
  assert model.wte.weight is model.lm_head.weight   # still tied after loading
  with torch.no_grad():
    logits, loss = model(torch.from_numpy(tokens[:, :-1]).long(),
                         torch.from_numpy(tokens[:, 1:]).long())
  np.testing.assert_allclose(logits.numpy(), ours_logits, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(loss.item(), ours_loss, rtol=1e-4, atol=1e-4)
  assert 1.0 < ours_loss < 20.0   # a real loss, not a degenerate zero


def _to_torch_llama_state(params, layers: int) -> dict:
  """Our Llama-style param tree -> the reference Llama's state_dict (torch Linear is [out, in])."""
  t = lambda x: torch.from_numpy(np.asarray(x, np.float32).copy())
  sd = {'embed.weight': t(params['embed']['embedding']), 'norm.weight': t(params['ln_final']['scale']),
        'lm_head.weight': t(np.asarray(params['head']['kernel']).T)}
  for i in range(layers):
    p, h = params[f'layer_{i}'], f'layers.{i}.'
    att = p['attn']
    d = att['query']['kernel'].shape[0]
    for ours, theirs in (('query', 'q_proj'), ('key', 'k_proj'), ('value', 'v_proj')):
      sd[h + f'attn.{theirs}.weight'] = t(np.asarray(att[ours]['kernel']).reshape(d, -1).T)
    sd[h + 'attn.o_proj.weight'] = t(np.asarray(att['out']['kernel']).reshape(-1, d).T)
    sd[h + 'input_layernorm.weight'] = t(p['ln_attn']['scale'])
    sd[h + 'post_attention_layernorm.weight'] = t(p['ln_mlp']['scale'])
    for name in ('gate', 'up', 'down'):
      sd[h + f'{name}_proj.weight'] = t(np.asarray(p['mlp'][name]['kernel']).T)
  return sd


@pytest.mark.parametrize('kv_heads', [0, 2])
def test_torch_llama_reference_computes_the_default_models_logits_and_loss(kv_heads):
  import flax.linen as nn
  from lmresearch.stages.pretrain import PretrainStage
  config = load_config('pipeline').stages.pretrain
  config.model.num_kv_heads = kv_heads
  config.data.vocab_size = 320   # the abstract stage needs no tokenizer; a vocabulary of 320 ids
  stage = PretrainStage.abstract(config)
  mc = stage.model.cfg
  assert (mc.style, mc.dtype, mc.tie_embeddings) == ('llama', 'float32', False)
  params = _perturbed(nn.unbox(stage.init_params(jax.random.PRNGKey(0))))
  b, t = 2, config.data.seq_len
  tokens = np.random.default_rng(0).integers(0, mc.vocab_size, (b, t + 1)).astype(np.int32)
  batch = _batch(tokens)
  ours_logits = np.asarray(stage.lm_logits(params, batch, None))
  loss_sum, sums = stage.loss_fn(params, batch, None)
  ref = _torch_reference()
  model = ref.Llama(mc.vocab_size, mc.num_layers, mc.num_heads, mc.kv_heads, mc.embed_dim, mc.mlp_dim,
                    theta=mc.rope_theta, eps=mc.norm_eps)
  model.load_state_dict(_to_torch_llama_state(params, mc.num_layers), strict=True)
  with torch.no_grad():
    logits, loss = model(torch.from_numpy(tokens[:, :-1]).long(), torch.from_numpy(tokens[:, 1:]).long())
  np.testing.assert_allclose(logits.numpy(), ours_logits, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(loss.item(), float(loss_sum / sums['count']), rtol=1e-4, atol=1e-4)
  assert 1.0 < loss.item() < 20.0

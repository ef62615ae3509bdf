"""Gemma 3, text only (model_type 'gemma3_text', Gemma3ForCausalLM; google/gemma-3-270m ... 27b).

What differs from Llama, each an option of our model (models/transformer.py):
  - layers by `layer_types`: every `sliding_pattern`-th layer attends to all keys, the others to a
    sliding window; the two kinds have their own RoPE (rope_parameters per layer type: the full
    layers' base and scaling, the sliding layers' own unscaled base, rope_local_theta);
  - QK-norm; norms after attention and after the MLP too (post_norms);
  - RMSNorm as x * (1 + w) (norm_plus_one: w kept as the checkpoint holds it);
  - GeGLU with tanh GELU; embeddings scaled by sqrt(hidden_size); scores scaled by
    query_pre_attn_scalar**-0.5; a tied vocabulary (262k).
transformers 4 spelled the RoPE as rope_theta / rope_local_base_freq / rope_scaling and the layer
kinds as sliding_window_pattern; both are read.
"""
from __future__ import annotations

from lmresearch.models.hf import keys, llama

MODEL_TYPE = 'gemma3_text'
ARCHITECTURE = 'Gemma3ForCausalLM'
READ = llama.READ | {
    'rope_local_base_freq', 'sliding_window', 'sliding_window_pattern',
    '_sliding_window_pattern', 'query_pre_attn_scalar', 'final_logit_softcapping',
    'attn_logit_softcapping', 'hidden_activation', 'hidden_act'}
FIXED = {'attention_bias': ((False, None), 'biases on the attention projections'),
         'use_bidirectional_attention': ((False, None), 'bidirectional attention'),
         # 4.x: how generate() sizes its cache, not the function
         'cache_implementation': (('hybrid', 'static', None), 'cache_implementation')}
GELU_TANH = ('gelu_pytorch_tanh', 'gelu_new', 'gelu_fast')


def layer_pattern(hf: dict) -> int:
  """The N of 'every Nth layer is full attention' from layer_types (or 4.x's pattern); 0 when
  every layer slides."""
  n = hf['num_hidden_layers']
  types = hf.get('layer_types')
  if not types:
    p = hf.get('sliding_window_pattern') or hf.get('_sliding_window_pattern') or 6
    return int(p)
  full = [i for i, t in enumerate(types) if t == 'full_attention']
  unknown = sorted(set(types) - {'full_attention', 'sliding_attention'})
  if unknown or len(types) != n:
    raise keys.fail('layer_types', unknown or len(types), 'layer kinds other than full and '
                    'sliding attention, one per layer')
  if not full:
    return 0
  p = full[0] + 1
  if any(((i + 1) % p == 0) != (t == 'full_attention') for i, t in enumerate(types)):
    raise keys.fail('layer_types', types, 'full-attention layers other than every Nth')
  return p


def check_activation(hf: dict) -> None:
  act = hf.get('hidden_activation') or hf.get('hidden_act') or 'gelu_pytorch_tanh'
  if act not in GELU_TANH:
    raise keys.fail('hidden_activation', act, "the MLP is GeGLU with tanh GELU ('gelu_pytorch_tanh')")


def gemma_config(hf: dict, rope: dict) -> dict:
  """What Gemma 2 and 3 share."""
  check_activation(hf)
  heads = hf['num_attention_heads']
  window = int(hf.get('sliding_window') or 0)
  pattern = layer_pattern(hf) if window else 0
  if window and pattern == 1:   # every layer full: no window at all
    window, pattern = 0, 0
  return {'style': 'llama', 'num_layers': hf['num_hidden_layers'], 'num_heads': heads,
          'num_kv_heads': hf.get('num_key_value_heads') or heads, 'embed_dim': hf['hidden_size'],
          'mlp_dim': hf['intermediate_size'], 'max_len': hf.get('max_position_embeddings', 8192),
          'norm_eps': float(hf.get('rms_norm_eps', 1e-6)),
          'head_size': hf.get('head_dim') or hf['hidden_size'] // heads,
          'tie_embeddings': bool(hf.get('tie_word_embeddings', True)),
          'sliding_window': window, 'sliding_pattern': pattern,
          'post_norms': True, 'norm_plus_one': True, 'mlp_act': 'gelu_tanh', 'embed_scale': True,
          'query_scale': float(hf.get('query_pre_attn_scalar') or hf.get('head_dim') or 256),
          'attn_softcap': float(hf.get('attn_logit_softcapping') or 0.0),
          'final_softcap': float(hf.get('final_logit_softcapping') or 0.0), **rope}


def model_config(hf: dict) -> dict:
  params = hf.get('rope_parameters')
  if params and 'full_attention' in params:   # transformers 5: per layer type
    full = llama.rope_from(dict(params['full_attention']), hf, 'rope_parameters.full_attention')
    local = dict(params.get('sliding_attention') or {})
    if local.get('rope_type', 'default') != 'default':
      raise keys.fail('rope_parameters.sliding_attention.rope_type', local['rope_type'],
                      "only 'default' RoPE on the sliding layers")
    local_theta = float(local.get('rope_theta', 10000.0))
  else:   # transformers 4: rope_theta + rope_scaling for the full layers, a base for the local ones
    full = llama.rope_from(dict(hf.get('rope_scaling') or {}), hf, 'rope_scaling')
    local_theta = float(hf.get('rope_local_base_freq', 10000.0))
  return {**gemma_config(hf, full), 'qk_norm': True, 'rope_local_theta': local_theta}


tensors = llama.tensors


def hf_config(m: dict, vocab: int, tokens: dict) -> dict:
  n, p = m['num_layers'], m.get('sliding_pattern') or 0
  slide = lambda i: bool(m.get('sliding_window')) and (not p or (i + 1) % p != 0)
  full = {'rope_type': 'default', 'rope_theta': m['rope_theta']}
  if m.get('rope_scaling') == 'linear':
    full.update(rope_type='linear', factor=m['rope_factor'])
  return {'architectures': [ARCHITECTURE], 'model_type': MODEL_TYPE, 'vocab_size': vocab,
          'hidden_size': m['embed_dim'], 'intermediate_size': m['mlp_dim'],
          'num_hidden_layers': n, 'num_attention_heads': m['num_heads'],
          'num_key_value_heads': m.get('num_kv_heads') or m['num_heads'],
          'head_dim': m.get('head_size') or m['embed_dim'] // m['num_heads'],
          'max_position_embeddings': m['max_len'], 'rms_norm_eps': m['norm_eps'],
          'hidden_activation': 'gelu_pytorch_tanh', 'attention_bias': False,
          'query_pre_attn_scalar': _number(m['query_scale']),
          'sliding_window': m.get('sliding_window') or None,
          'layer_types': ['sliding_attention' if slide(i) else 'full_attention' for i in range(n)],
          'rope_parameters': {'full_attention': full, 'sliding_attention': {
              'rope_type': 'default', 'rope_theta': m.get('rope_local_theta') or m['rope_theta']}},
          'final_logit_softcapping': m.get('final_softcap') or None,
          'attn_logit_softcapping': m.get('attn_softcap') or None,
          'tie_word_embeddings': bool(m.get('tie_embeddings')), 'torch_dtype': 'float32', **tokens}


def _number(x):
  """An integral float as the int transformers' config classes type it with."""
  return int(x) if x is not None and float(x).is_integer() else x

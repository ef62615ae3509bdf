"""The Llama family as `transformers` defines it (model_type 'llama'): Llama 2, Llama 3 and
Llama 3.1's rope_scaling (rope_type 'llama3'); GQA, any head_dim, RMSNorm eps, tied or untied head.
Mistral and Qwen2 are this family with an option each (mistral.py, qwen2.py)."""
from __future__ import annotations

from lmresearch.core.errors import ConfigError
from lmresearch.models.hf import keys
from lmresearch.models.hf.layout import Part, Tensor

MODEL_TYPE = 'llama'
ARCHITECTURE = 'LlamaForCausalLM'
# The keys this family turns into our config, and the options it pins off (hf/keys.py).
READ = {'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
        'num_key_value_heads', 'head_dim', 'max_position_embeddings', 'rms_norm_eps', 'vocab_size',
        'tie_word_embeddings', 'rope_theta', 'rope_scaling', 'rope_parameters', 'layer_types'}
FIXED = {'hidden_act': (('silu',), "the MLP is SwiGLU with 'silu'"),
         'attention_bias': ((False, None), 'biases on every attention projection (o_proj too)'),
         'mlp_bias': ((False, None), 'biases on the MLP projections'),
         # tensor-parallel slicing of the matmuls in pretraining: the same function at any value
         'pretraining_tp': ((1, 2, 4, 8, 16, None), 'pretraining_tp')}


def fail(key: str, value, what: str) -> ConfigError:
  return keys.fail(key, value, what)


def rope(hf: dict) -> dict:
  """RoPE theta and scaling, from transformers 5's rope_parameters or 4's rope_theta/rope_scaling."""
  return rope_from(dict(hf.get('rope_parameters') or hf.get('rope_scaling') or {}), hf,
                   'rope_parameters' if 'rope_parameters' in hf else 'rope_scaling')


def rope_from(params: dict, hf: dict, key: str) -> dict:
  theta = params.get('rope_theta', hf.get('rope_theta', 10000.0))
  kind = params.get('rope_type', params.get('type', 'default'))
  out = {'rope_theta': float(theta)}
  if kind == 'llama3':
    out.update(rope_scaling='llama3', rope_factor=float(params['factor']),
               rope_low_freq_factor=float(params['low_freq_factor']),
               rope_high_freq_factor=float(params['high_freq_factor']),
               rope_original_max_len=int(params['original_max_position_embeddings']))
  elif kind == 'linear':
    out.update(rope_scaling='linear', rope_factor=float(params['factor']))
  elif kind != 'default':
    raise fail(f'{key}.rope_type', kind, "only 'default', 'linear' and 'llama3' RoPE are implemented")
  return out


def full_attention_only(hf: dict) -> None:
  kinds = sorted(set(hf.get('layer_types') or ['full_attention']))
  if kinds != ['full_attention']:
    raise fail('layer_types', kinds, 'layers of another kind than full attention')


def model_config(hf: dict) -> dict:
  """config.json -> our config.model keys (the keys are checked first: hf/keys.py)."""
  full_attention_only(hf)
  return base_model_config(hf)


def base_model_config(hf: dict) -> dict:
  heads = hf['num_attention_heads']
  head_dim = hf.get('head_dim') or hf['hidden_size'] // heads
  return {'style': 'llama', 'num_layers': hf['num_hidden_layers'], 'num_heads': heads,
          'num_kv_heads': hf.get('num_key_value_heads') or heads, 'embed_dim': hf['hidden_size'],
          'mlp_dim': hf['intermediate_size'], 'max_len': hf.get('max_position_embeddings', 2048),
          'norm_eps': float(hf.get('rms_norm_eps', 1e-6)),
          'head_size': head_dim if head_dim * heads != hf['hidden_size'] else 0,
          'tie_embeddings': bool(hf.get('tie_word_embeddings', False)), **rope(hf)}


def hf_config(m: dict, vocab: int, tokens: dict) -> dict:
  """Our config.model -> config.json (LlamaForCausalLM)."""
  heads = m['num_heads']
  rope_params = {'rope_theta': m['rope_theta'], 'rope_type': 'default'}
  if m.get('rope_scaling') == 'llama3':
    rope_params.update(rope_type='llama3', factor=m['rope_factor'],
                       low_freq_factor=m['rope_low_freq_factor'],
                       high_freq_factor=m['rope_high_freq_factor'],
                       original_max_position_embeddings=m['rope_original_max_len'])
  elif m.get('rope_scaling') == 'linear':
    rope_params.update(rope_type='linear', factor=m['rope_factor'])
  legacy = {k: v for k, v in rope_params.items() if k != 'rope_theta'}
  return {'architectures': [ARCHITECTURE], 'model_type': MODEL_TYPE, 'vocab_size': vocab,
          'hidden_size': m['embed_dim'], 'intermediate_size': m['mlp_dim'],
          'num_hidden_layers': m['num_layers'], 'num_attention_heads': heads,
          'num_key_value_heads': m.get('num_kv_heads') or heads,
          'head_dim': m.get('head_size') or m['embed_dim'] // heads,
          'max_position_embeddings': m['max_len'], 'rms_norm_eps': m['norm_eps'],
          'hidden_act': 'silu', 'attention_bias': False, 'mlp_bias': False,
          'tie_word_embeddings': bool(m.get('tie_embeddings')),
          # both spellings: transformers 5 reads rope_parameters, 4 rope_theta and rope_scaling
          'rope_parameters': rope_params, 'rope_theta': m['rope_theta'],
          'rope_scaling': legacy if legacy['rope_type'] != 'default' else None,
          'torch_dtype': 'float32', **tokens}


def tensors(m: dict) -> list[Tensor]:
  """Every HF tensor name and the params of ours it holds. With post_norms (Gemma 2, 3) HF's post_attention_layernorm
  is the attention output's norm and pre_feedforward_layernorm the MLP's input norm; in Llama,
  post_attention_layernorm is the MLP's input norm."""
  h, kvh = m['num_heads'], m.get('num_kv_heads') or m['num_heads']
  out = [Tensor('model.embed_tokens.weight', (Part(('embed', 'embedding'), 'vocab_rows'),)),
         Tensor('model.norm.weight', (Part(('ln_final', 'scale'), 'same'),))]
  if not m.get('tie_embeddings'):
    out.append(Tensor('lm_head.weight', (Part(('head', 'kernel'), 'vocab_T'),)))
  for i in range(m['num_layers']):
    p = f'model.layers.{i}.'
    L = lambda *rest: ('layer', i) + rest
    norms = {'input_layernorm': 'ln_attn', 'post_attention_layernorm': 'ln_mlp'}
    if m.get('post_norms'):
      norms = {'input_layernorm': 'ln_attn', 'post_attention_layernorm': 'ln_attn_post',
               'pre_feedforward_layernorm': 'ln_mlp', 'post_feedforward_layernorm': 'ln_mlp_post'}
    out += [Tensor(p + f'{hf}.weight', (Part(L(ours, 'scale'), 'same'),)) for hf, ours in norms.items()]
    out += [Tensor(p + 'self_attn.q_proj.weight', (Part(L('attn', 'query', 'kernel'), 'heads_in', h),)),
            Tensor(p + 'self_attn.k_proj.weight', (Part(L('attn', 'key', 'kernel'), 'heads_in', kvh),)),
            Tensor(p + 'self_attn.v_proj.weight', (Part(L('attn', 'value', 'kernel'), 'heads_in', kvh),)),
            Tensor(p + 'self_attn.o_proj.weight', (Part(L('attn', 'out', 'kernel'), 'heads_out', h),)),
            Tensor(p + 'mlp.gate_proj.weight', (Part(L('mlp', 'gate', 'kernel'), 'T'),)),
            Tensor(p + 'mlp.up_proj.weight', (Part(L('mlp', 'up', 'kernel'), 'T'),)),
            Tensor(p + 'mlp.down_proj.weight', (Part(L('mlp', 'down', 'kernel'), 'T'),))]
    if m.get('qk_norm'):
      out += [Tensor(p + 'self_attn.q_norm.weight', (Part(L('attn', 'query_norm', 'scale'), 'same'),)),
              Tensor(p + 'self_attn.k_norm.weight', (Part(L('attn', 'key_norm', 'scale'), 'same'),))]
    if m.get('qkv_bias'):
      out += [Tensor(p + f'self_attn.{n}_proj.bias', (Part(L('attn', ours, 'bias'), 'heads_bias', heads),))
              for n, ours, heads in (('q', 'query', h), ('k', 'key', kvh), ('v', 'value', kvh))]
  return out

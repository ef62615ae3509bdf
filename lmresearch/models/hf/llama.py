"""The Llama family as `transformers` defines it (model_type 'llama'): Llama 2, Llama 3 and
Llama 3.1's rope_scaling (rope_type 'llama3'); GQA, any head_dim, RMSNorm eps, tied or untied head.
Mistral and Qwen2 are this family with an option each (mistral.py, qwen2.py)."""
from __future__ import annotations

from lmresearch.errors import ConfigError
from lmresearch.models.hf.layout import Part, Tensor

MODEL_TYPE = 'llama'
ARCHITECTURE = 'LlamaForCausalLM'
# Keys read elsewhere or that change nothing in the forward pass.
IGNORED = {'architectures', 'model_type', 'torch_dtype', 'dtype', 'transformers_version',
           'bos_token_id', 'eos_token_id', 'pad_token_id', 'initializer_range', 'use_cache',
           'attention_dropout', 'pretraining_tp', 'mlp_bias', 'attention_bias', 'hidden_act',
           'rope_scaling', 'rope_parameters', 'rope_theta', 'head_dim', 'tie_word_embeddings',
           'max_position_embeddings', 'rms_norm_eps', 'num_key_value_heads', 'vocab_size',
           'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
           'layer_types', 'name_or_path', '_name_or_path', 'output_attentions',
           'output_hidden_states', 'return_dict', 'is_decoder', 'tie_encoder_decoder',
           'chunk_size_feed_forward', 'problem_type', 'id2label', 'label2id'}


def fail(key: str, value, what: str) -> ConfigError:
  return ConfigError(f'config.json: {key}={value!r}: {what}; lmresearch does not implement it, '
                     'so it would load a different model.')


def rope(hf: dict) -> dict:
  """RoPE theta and scaling, from transformers 5's rope_parameters or 4's rope_theta/rope_scaling."""
  params = dict(hf.get('rope_parameters') or hf.get('rope_scaling') or {})
  theta = params.get('rope_theta', hf.get('rope_theta', 10000.0))
  kind = params.get('rope_type', params.get('type', 'default'))
  out = {'rope_theta': float(theta)}
  if kind == 'llama3':
    out.update(rope_scaling='llama3', rope_factor=float(params['factor']),
               rope_low_freq_factor=float(params['low_freq_factor']),
               rope_high_freq_factor=float(params['high_freq_factor']),
               rope_original_max_len=int(params['original_max_position_embeddings']))
  elif kind != 'default':
    key = 'rope_parameters' if 'rope_parameters' in hf else 'rope_scaling'
    raise fail(f'{key}.rope_type', kind, "only 'default' and 'llama3' RoPE are implemented")
  return out


def check(hf: dict, extra_ignored=()) -> None:
  if hf.get('hidden_act', 'silu') != 'silu':
    raise fail('hidden_act', hf['hidden_act'], "the MLP is SwiGLU with 'silu'")
  if hf.get('attention_bias'):
    raise fail('attention_bias', True, 'biases on every attention projection (o_proj too)')
  if hf.get('mlp_bias'):
    raise fail('mlp_bias', True, 'biases on the MLP projections')
  unknown = sorted(k for k in hf if k not in IGNORED | set(extra_ignored))
  if unknown:
    raise fail(unknown[0], hf[unknown[0]], f'an option of {hf.get("model_type")!r} this '
               f'importer does not know (unknown keys: {", ".join(unknown)})')


def model_config(hf: dict) -> dict:
  """config.json -> our config.model keys."""
  check(hf)
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
  """Every HF tensor name and the params of ours it holds."""
  h, kvh = m['num_heads'], m.get('num_kv_heads') or m['num_heads']
  out = [Tensor('model.embed_tokens.weight', (Part(('embed', 'embedding'), 'vocab_rows'),)),
         Tensor('model.norm.weight', (Part(('ln_final', 'scale'), 'same'),))]
  if not m.get('tie_embeddings'):
    out.append(Tensor('lm_head.weight', (Part(('head', 'kernel'), 'vocab_T'),)))
  for i in range(m['num_layers']):
    p = f'model.layers.{i}.'
    L = lambda *rest: ('layer', i) + rest
    out += [Tensor(p + 'input_layernorm.weight', (Part(L('ln_attn', 'scale'), 'same'),)),
            Tensor(p + 'post_attention_layernorm.weight', (Part(L('ln_mlp', 'scale'), 'same'),)),
            Tensor(p + 'self_attn.q_proj.weight', (Part(L('attn', 'query', 'kernel'), 'heads_in', h),)),
            Tensor(p + 'self_attn.k_proj.weight', (Part(L('attn', 'key', 'kernel'), 'heads_in', kvh),)),
            Tensor(p + 'self_attn.v_proj.weight', (Part(L('attn', 'value', 'kernel'), 'heads_in', kvh),)),
            Tensor(p + 'self_attn.o_proj.weight', (Part(L('attn', 'out', 'kernel'), 'heads_out', h),)),
            Tensor(p + 'mlp.gate_proj.weight', (Part(L('mlp', 'gate', 'kernel'), 'T'),)),
            Tensor(p + 'mlp.up_proj.weight', (Part(L('mlp', 'up', 'kernel'), 'T'),)),
            Tensor(p + 'mlp.down_proj.weight', (Part(L('mlp', 'down', 'kernel'), 'T'),))]
    if m.get('qkv_bias'):
      out += [Tensor(p + f'self_attn.{n}_proj.bias', (Part(L('attn', ours, 'bias'), 'heads_bias', heads),))
              for n, ours, heads in (('q', 'query', h), ('k', 'key', kvh), ('v', 'value', kvh))]
  return out

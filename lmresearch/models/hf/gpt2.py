"""GPT-2 (model_type 'gpt2'): learned positions, LayerNorm, tanh-GELU ('gelu_new'), tied
embeddings, biases everywhere; its attention and MLP weights are Conv1D ([in, out]) and q, k, v
share one fused c_attn tensor."""
from __future__ import annotations

from lmresearch.models.hf.layout import Part, Tensor
from lmresearch.models.hf.llama import fail

MODEL_TYPE = 'gpt2'
ARCHITECTURE = 'GPT2LMHeadModel'
IGNORED = {'architectures', 'model_type', 'torch_dtype', 'dtype', 'transformers_version',
           'bos_token_id', 'eos_token_id', 'pad_token_id', 'initializer_range', 'use_cache',
           'attn_pdrop', 'embd_pdrop', 'resid_pdrop', 'summary_activation',
           'summary_first_dropout', 'summary_proj_to_labels', 'summary_type', 'summary_use_proj',
           'task_specific_params', 'add_cross_attention', 'n_ctx', 'reorder_and_upcast_attn',
           'scale_attn_weights', 'scale_attn_by_inverse_layer_idx', 'activation_function',
           'layer_norm_epsilon', 'n_embd', 'n_head', 'n_inner', 'n_layer', 'n_positions',
           'vocab_size', 'tie_word_embeddings', 'name_or_path', '_name_or_path', 'id2label',
           'label2id', 'output_attentions', 'output_hidden_states', 'return_dict',
           'problem_type'}


def model_config(hf: dict) -> dict:
  act = hf.get('activation_function', 'gelu_new')
  if act not in ('gelu_new', 'gelu_pytorch_tanh'):
    raise fail('activation_function', act, "our GPT-2 MLP uses the tanh GELU ('gelu_new')")
  for key in ('scale_attn_by_inverse_layer_idx', 'add_cross_attention'):
    if hf.get(key):
      raise fail(key, True, 'not part of the GPT-2 architecture we implement')
  if hf.get('scale_attn_weights', True) is False:
    raise fail('scale_attn_weights', False, 'attention without the 1/sqrt(head_dim) scale')
  if hf.get('tie_word_embeddings', True) is False:
    raise fail('tie_word_embeddings', False, 'a GPT-2 with an untied head')
  unknown = sorted(k for k in hf if k not in IGNORED)
  if unknown:
    raise fail(unknown[0], hf[unknown[0]], 'an option of GPT-2 this importer does not know '
               f'(unknown keys: {", ".join(unknown)})')
  e = hf['n_embd']
  return {'style': 'gpt2', 'num_layers': hf['n_layer'], 'num_heads': hf['n_head'],
          'num_kv_heads': 0, 'embed_dim': e, 'mlp_dim': hf.get('n_inner') or 4 * e,
          'max_len': hf['n_positions'], 'norm_eps': float(hf.get('layer_norm_epsilon', 1e-5))}


def hf_config(m: dict, vocab: int, tokens: dict) -> dict:
  return {'architectures': [ARCHITECTURE], 'model_type': MODEL_TYPE, 'vocab_size': vocab,
          'n_embd': m['embed_dim'], 'n_head': m['num_heads'], 'n_layer': m['num_layers'],
          'n_inner': m['mlp_dim'], 'n_positions': m['max_len'],
          'layer_norm_epsilon': m['norm_eps'], 'activation_function': 'gelu_new',
          'tie_word_embeddings': True, 'torch_dtype': 'float32', 'attn_pdrop': 0.0,
          'embd_pdrop': 0.0, 'resid_pdrop': 0.0, **tokens}


def tensors(m: dict) -> list[Tensor]:
  e, h = m['embed_dim'], m['num_heads']
  out = [Tensor('transformer.wte.weight', (Part(('embed', 'embedding'), 'vocab_rows'),)),
         Tensor('transformer.wpe.weight', (Part(('pos_embed',), 'same'),)),
         Tensor('transformer.ln_f.weight', (Part(('ln_final', 'scale'), 'same'),)),
         Tensor('transformer.ln_f.bias', (Part(('ln_final', 'bias'), 'same'),))]
  for i in range(m['num_layers']):
    p = f'transformer.h.{i}.'
    L = lambda *rest: ('layer', i) + rest
    qkv = ('query', 'key', 'value')
    out += [Tensor(p + 'ln_1.weight', (Part(L('ln_attn', 'scale'), 'same'),)),
            Tensor(p + 'ln_1.bias', (Part(L('ln_attn', 'bias'), 'same'),)),
            Tensor(p + 'ln_2.weight', (Part(L('ln_mlp', 'scale'), 'same'),)),
            Tensor(p + 'ln_2.bias', (Part(L('ln_mlp', 'bias'), 'same'),)),
            Tensor(p + 'attn.c_attn.weight', tuple(
                Part(L('attn', n, 'kernel'), 'cols_heads', h, j * e, e) for j, n in enumerate(qkv)), axis=1),
            Tensor(p + 'attn.c_attn.bias', tuple(
                Part(L('attn', n, 'bias'), 'heads_bias', h, j * e, e) for j, n in enumerate(qkv)), axis=0),
            Tensor(p + 'attn.c_proj.weight', (Part(L('attn', 'out', 'kernel'), 'rows_heads', h),)),
            Tensor(p + 'attn.c_proj.bias', (Part(L('attn', 'out', 'bias'), 'same'),)),
            Tensor(p + 'mlp.c_fc.weight', (Part(L('mlp', 'up', 'kernel'), 'same'),)),
            Tensor(p + 'mlp.c_fc.bias', (Part(L('mlp', 'up', 'bias'), 'same'),)),
            Tensor(p + 'mlp.c_proj.weight', (Part(L('mlp', 'down', 'kernel'), 'same'),)),
            Tensor(p + 'mlp.c_proj.bias', (Part(L('mlp', 'down', 'bias'), 'same'),))]
  return out

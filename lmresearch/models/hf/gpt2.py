"""GPT-2 (model_type 'gpt2'): learned positions, LayerNorm, tanh-GELU ('gelu_new'), tied
embeddings, biases everywhere; its attention and MLP weights are Conv1D ([in, out]) and q, k, v
share one fused c_attn tensor."""
from __future__ import annotations

from lmresearch.models.hf.layout import Part, Tensor
from lmresearch.models.hf.llama import fail

MODEL_TYPE = 'gpt2'
ARCHITECTURE = 'GPT2LMHeadModel'
READ = {'n_embd', 'n_head', 'n_layer', 'n_inner', 'n_positions', 'n_ctx', 'layer_norm_epsilon',
        'vocab_size', 'activation_function',
        # the sequence-summary head of GPT2DoubleHeadsModel: not part of the language model
        'summary_activation', 'summary_first_dropout', 'summary_proj_to_labels', 'summary_type',
        'summary_use_proj',
        # upcasting and reordering the attention's matmul for fp16 training: the same function
        'reorder_and_upcast_attn'}
FIXED = {'scale_attn_by_inverse_layer_idx': ((False, None), 'scores scaled by 1 / layer index'),
         'add_cross_attention': ((False, None), 'cross-attention layers'),
         'scale_attn_weights': ((True, None), 'attention without the 1/sqrt(head_dim) scale'),
         'tie_word_embeddings': ((True, None), 'a GPT-2 with an untied head')}


def model_config(hf: dict) -> dict:
  act = hf.get('activation_function', 'gelu_new')
  if act not in ('gelu_new', 'gelu_pytorch_tanh'):
    raise fail('activation_function', act, "our GPT-2 MLP uses the tanh GELU ('gelu_new')")
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

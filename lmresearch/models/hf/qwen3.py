"""Qwen3 dense (model_type 'qwen3'): the Llama family with an RMSNorm on each head's queries and
keys before RoPE (QK-norm), a head_dim of its own (not hidden_size / heads), no q/k/v biases, and
often tied embeddings. Its sliding window is off in the released models and refused when on."""
from __future__ import annotations

from lmresearch.models.hf import llama, qwen2

MODEL_TYPE = 'qwen3'
ARCHITECTURE = 'Qwen3ForCausalLM'
READ = qwen2.READ
FIXED = qwen2.FIXED
tensors = llama.tensors


def model_config(hf: dict) -> dict:
  llama.full_attention_only(hf)
  return {**llama.base_model_config(hf), 'qk_norm': True}


def hf_config(m: dict, vocab: int, tokens: dict) -> dict:
  out = llama.hf_config(m, vocab, tokens)
  for k in ('mlp_bias', 'rope_scaling'):
    out.pop(k)
  return {**out, 'architectures': [ARCHITECTURE], 'model_type': MODEL_TYPE,
          'use_sliding_window': False, 'sliding_window': None}

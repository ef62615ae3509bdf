"""Mistral (model_type 'mistral'): the Llama family with a sliding attention window, applied as an
attention mask (our `sliding_window`), in training, evaluation and the KV-cache sampler alike."""
from __future__ import annotations

from lmresearch.models.hf import llama

MODEL_TYPE = 'mistral'
ARCHITECTURE = 'MistralForCausalLM'
READ = llama.READ | {'sliding_window'}
FIXED = llama.FIXED
tensors = llama.tensors


def model_config(hf: dict) -> dict:
  llama.full_attention_only(hf)
  return {**llama.base_model_config(hf), 'sliding_window': int(hf.get('sliding_window') or 0)}


def hf_config(m: dict, vocab: int, tokens: dict) -> dict:
  out = llama.hf_config(m, vocab, tokens)
  for k in ('attention_bias', 'mlp_bias', 'rope_scaling'):
    out.pop(k)
  return {**out, 'architectures': [ARCHITECTURE], 'model_type': MODEL_TYPE,
          'sliding_window': m.get('sliding_window') or None}

"""Qwen2 / Qwen2.5 (model_type 'qwen2'): the Llama family with biases on q/k/v (not on o_proj),
often tied embeddings and rope_theta 1e6. Its sliding window (use_sliding_window) is off in the
released models; a config that turns it on is refused rather than approximated."""
from __future__ import annotations

from lmresearch.models.hf import llama

MODEL_TYPE = 'qwen2'
ARCHITECTURE = 'Qwen2ForCausalLM'
# With use_sliding_window off (checked), sliding_window and max_window_layers change nothing.
READ = llama.READ | {'sliding_window', 'max_window_layers'}
FIXED = {**llama.FIXED,
         'use_sliding_window': ((False, None), "Qwen2's per-layer sliding window (max_window_layers)")}
tensors = llama.tensors


def model_config(hf: dict) -> dict:
  llama.full_attention_only(hf)
  return {**llama.base_model_config(hf), 'qkv_bias': True}


def hf_config(m: dict, vocab: int, tokens: dict) -> dict:
  out = llama.hf_config(m, vocab, tokens)
  for k in ('attention_bias', 'mlp_bias', 'rope_scaling', 'head_dim'):
    out.pop(k)
  return {**out, 'architectures': [ARCHITECTURE], 'model_type': MODEL_TYPE,
          'use_sliding_window': False, 'sliding_window': None}

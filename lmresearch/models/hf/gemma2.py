"""Gemma 2 (model_type 'gemma2'): Gemma 3's layer (hf/gemma3.py) without QK-norm and with one
RoPE for every layer, plus soft-capping: attention scores and final logits pass through
cap * tanh(x / cap) (attn_logit_softcapping 50, final_logit_softcapping 30 in the released models).
Local (sliding) and global layers alternate, the first sliding."""
from __future__ import annotations

from lmresearch.models.hf import gemma3, llama

MODEL_TYPE = 'gemma2'
ARCHITECTURE = 'Gemma2ForCausalLM'
READ = gemma3.READ - {'rope_local_base_freq'}
FIXED = gemma3.FIXED
tensors = gemma3.tensors


def model_config(hf: dict) -> dict:
  if not hf.get('layer_types') and not hf.get('sliding_window_pattern'):
    hf = {**hf, 'sliding_window_pattern': 2}   # 4.x: even layers slide, odd ones are global
  return gemma3.gemma_config(hf, llama.rope(hf))


def hf_config(m: dict, vocab: int, tokens: dict) -> dict:
  out = gemma3.hf_config(m, vocab, tokens)
  out['rope_parameters'] = out['rope_parameters']['full_attention']
  return {**out, 'architectures': [ARCHITECTURE], 'model_type': MODEL_TYPE}

"""The models a stage builds from its config and tokenizer: the language model and the scalar-head
model (reward, value), each with LoRA adapters when config.lora asks (or without: a reference).
Here, apart, so that loading a parent run (stages/parents.py) builds its models as the stage did.
"""
from __future__ import annotations

import dataclasses

from lmresearch.training import config as lmc
from lmresearch.core.errors import ConfigError
from lmresearch.models import lora as lora_lib
from lmresearch.models.heads import ScalarHeadModel
from lmresearch.models.transformer import ModelConfig, Transformer


def padded_vocab(tok_vocab: int, model_cfg) -> int:
  if model_cfg.vocab_size:
    if model_cfg.vocab_size < tok_vocab:
      raise ValueError(f'config.model.vocab_size={model_cfg.vocab_size} is smaller than the '
                       f'tokenizer\'s {tok_vocab}; set it to 0 (= from the tokenizer).')
    return model_cfg.vocab_size
  m = max(1, model_cfg.vocab_multiple)
  return -(-tok_vocab // m) * m


def model_config(config, tok, lora: bool = True) -> ModelConfig:
  """config.model as the model reads it; with config.lora.rank > 0 (and lora) with adapters."""
  m = ModelConfig.from_config(config.model, padded_vocab(tok.vocab_size, config.model))
  if m.vocab_size > tok.vocab_size:
    m = dataclasses.replace(m, sample_vocab=tok.vocab_size)
  lc = config.get('lora') or {}
  if lora and lmc.lora_on(config):
    try:
      ids = lora_lib.token_ids(lc.get('tokens', ''), tok)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    m = dataclasses.replace(m, lora_rank=lc.rank, lora_alpha=float(lc.alpha),
                            lora_dropout=float(lc.dropout), lora_targets=lc.targets,
                            lora_tokens=ids)
  return m


def build_model(config, tok, lora: bool = True) -> Transformer:
  return Transformer(model_config(config, tok, lora))


def build_scalar_model(config, tok, lora: bool = True) -> ScalarHeadModel:
  return ScalarHeadModel(model_config(config, tok, lora))

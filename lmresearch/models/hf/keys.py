"""Which keys of a config.json change the model, and which only describe it.

A family reads the keys that define its network (`READ`) and pins the options it does not
implement to the values that leave them off (`FIXED`: key -> the values we implement and what the
key would do). Every other key must be one that changes nothing in the forward pass: the generic
keys of transformers' `PretrainedConfig` (names, token ids, output switches, and the generation
defaults transformers 4 wrote into config.json, its private `_` keys), dropout rates (training only: ours is
config.model.dropout), `use_cache`, `initializer_range`. Those are accepted and recorded in the
run's config.hf; a key no rule knows is refused, since it could change the model we would load.
tests/test_hf_configs.py checks this on what transformers itself writes for every family.
"""
from __future__ import annotations

import re

from lmresearch.core.errors import ConfigError

# PretrainedConfig's own attributes (transformers 4.x and 5.x) and other keys that describe a
# checkpoint without changing its function.
NEUTRAL = frozenset({
    '_name_or_path', 'name_or_path', 'architectures', 'model_type', 'transformers_version',
    'torch_dtype', 'dtype', 'use_bfloat16', 'torchscript', 'tf_legacy_loss', '_commit_hash',
    '_attn_implementation_autoset', 'attn_implementation', '_attn_implementation',
    'return_dict', 'output_hidden_states', 'output_attentions', 'output_scores',
    'return_dict_in_generate', 'use_cache', 'initializer_range', 'pruned_heads',
    'chunk_size_feed_forward', 'is_decoder', 'is_encoder_decoder', 'tie_encoder_decoder',
    'cross_attention_hidden_size', 'finetuning_task', 'id2label', 'label2id', 'problem_type',
    'tokenizer_class', 'prefix', 'task_specific_params', 'num_labels',
    # generation defaults transformers 4 kept in config.json (generation_config.json now)
    'max_length', 'min_length', 'do_sample', 'early_stopping', 'num_beams', 'num_beam_groups',
    'diversity_penalty', 'temperature', 'top_k', 'top_p', 'typical_p', 'repetition_penalty',
    'length_penalty', 'no_repeat_ngram_size', 'encoder_no_repeat_ngram_size', 'bad_words_ids',
    'num_return_sequences', 'remove_invalid_values', 'exponential_decay_length_penalty',
    'suppress_tokens', 'begin_suppress_tokens',
})
TOKEN_ID = re.compile(r'.*_token_ids?$')            # bos/eos/pad/unk/sep/... ids: the tokenizer's
DROPOUT = re.compile(r'.*(dropout|_pdrop)$')        # training-time regularization only
# transformers' private bookkeeping (_name_or_path, _commit_hash, a GGUF's _model_name_or_path);
# a private key a family does read (Gemma 3's _sliding_window_pattern) is in its READ.
PRIVATE = re.compile(r'^_|.*name_or_path$')
# Keys of every PretrainedConfig that would change the model if set (refused unless off).
GENERIC_FIXED = {
    'add_cross_attention': ((False, None), 'cross-attention layers'),
    'quantization_config': ((None,), 'quantized weights (import a dequantized save, or a GGUF '
                                     'with --from_gguf)'),
}


def fail(key: str, value, what: str, where: str = 'config.json') -> ConfigError:
  return ConfigError(f'{where}: {key}={value!r}: {what}; lmresearch does not implement it, '
                     'so it would load a different model.')


def check(hf: dict, read, fixed: dict, where: str = 'config.json') -> dict:
  """Refuses a key that would change the model; returns the keys that change nothing, with their
  values (recorded in the run's config.hf)."""
  neutral = {}
  fixed = {**GENERIC_FIXED, **fixed}
  for key in sorted(hf):
    value = hf[key]
    if key in read:
      continue
    if key in fixed:
      allowed, what = fixed[key]
      if value not in allowed:
        raise fail(key, value, what, where)
      continue
    if key in NEUTRAL or any(p.match(key) for p in (TOKEN_ID, DROPOUT, PRIVATE)):
      neutral[key] = value
      continue
    raise fail(key, value, f'an option of {hf.get("model_type")!r} this importer does not know '
               '(keys that change nothing, such as names and token ids, are accepted)', where)
  return neutral

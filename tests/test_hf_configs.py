"""The importer refuses only what changes the model, checked on configs as `transformers` itself
writes them: `save_pretrained` of every family's config class (transformers 5's spelling, the
installed one), the same config in transformers 4's spelling, and keys real checkpoints carry."""
import json

import pytest

transformers = pytest.importorskip('transformers', reason='transformers is a test extra')

from lmresearch.core.errors import ConfigError  # noqa: E402
from lmresearch.models import hf  # noqa: E402

CLASSES = {'gpt2': 'GPT2Config', 'llama': 'LlamaConfig', 'mistral': 'MistralConfig',
           'qwen2': 'Qwen2Config', 'qwen3': 'Qwen3Config', 'gemma2': 'Gemma2Config',
           'gemma3_text': 'Gemma3TextConfig'}
# What transformers 4.x's PretrainedConfig.__init__ set on every config, and so wrote into
# config.json with to_dict() (4.46; 5.x keeps only a few of them): not installable beside 5.x in
# one environment, so listed here from its source.
V4_GENERIC = {
    'return_dict': True, 'output_hidden_states': False, 'output_attentions': False,
    'torchscript': False, 'torch_dtype': 'bfloat16', 'use_bfloat16': False, 'tf_legacy_loss': False,
    'pruned_heads': {}, 'chunk_size_feed_forward': 0, 'is_encoder_decoder': False,
    'is_decoder': False, 'cross_attention_hidden_size': None, 'add_cross_attention': False,
    'tie_encoder_decoder': False, 'max_length': 20, 'min_length': 0, 'do_sample': False,
    'early_stopping': False, 'num_beams': 1, 'num_beam_groups': 1, 'diversity_penalty': 0.0,
    'temperature': 1.0, 'top_k': 50, 'top_p': 1.0, 'typical_p': 1.0, 'repetition_penalty': 1.0,
    'length_penalty': 1.0, 'no_repeat_ngram_size': 0, 'encoder_no_repeat_ngram_size': 0,
    'bad_words_ids': None, 'num_return_sequences': 1, 'output_scores': False,
    'return_dict_in_generate': False, 'forced_bos_token_id': None, 'forced_eos_token_id': None,
    'remove_invalid_values': False, 'exponential_decay_length_penalty': None,
    'suppress_tokens': None, 'begin_suppress_tokens': None, 'architectures': ['LlamaForCausalLM'],
    'finetuning_task': None, 'id2label': {'0': 'LABEL_0', '1': 'LABEL_1'},
    'label2id': {'LABEL_0': 0, 'LABEL_1': 1}, 'tokenizer_class': None, 'prefix': None,
    'bos_token_id': 1, 'pad_token_id': None, 'eos_token_id': 2, 'sep_token_id': None,
    'decoder_start_token_id': None, 'task_specific_params': None, 'problem_type': None,
    '_name_or_path': 'someone/some-model', 'transformers_version': '4.46.3',
    '_attn_implementation_autoset': True}


def saved(model_type, tmp_path, **kwargs) -> dict:
  """config.json exactly as save_pretrained writes it."""
  cfg = getattr(transformers, CLASSES[model_type])(**kwargs)
  cfg.save_pretrained(str(tmp_path))
  return json.load(open(tmp_path / 'config.json'))


def v4_spelling(cfg: dict) -> dict:
  """The same config as transformers 4 wrote it: rope_theta / rope_scaling (Gemma 3:
  rope_local_base_freq and sliding_window_pattern), torch_dtype, and every generic key."""
  out = {**V4_GENERIC, **{k: v for k, v in cfg.items() if k not in ('rope_parameters', 'dtype')}}
  rope = cfg.get('rope_parameters')
  if rope and 'full_attention' in rope:   # Gemma 3
    full, local = rope['full_attention'], rope['sliding_attention']
    out.update(rope_theta=full['rope_theta'], rope_local_base_freq=local['rope_theta'],
               rope_scaling=None if full.get('rope_type', 'default') == 'default'
               else {k: v for k, v in full.items() if k != 'rope_theta'})
    out.pop('layer_types', None)
    out['sliding_window_pattern'] = out.pop('_sliding_window_pattern', 6)
  elif rope:
    out['rope_theta'] = rope['rope_theta']
    if rope.get('rope_type', 'default') != 'default':
      out['rope_scaling'] = {k: v for k, v in rope.items() if k != 'rope_theta'}
  return out


@pytest.mark.parametrize('model_type', sorted(CLASSES))
def test_every_key_transformers_writes_is_read_pinned_or_accepted(model_type, tmp_path):
  cfg = saved(model_type, tmp_path)
  fam, model, neutral = hf.model_config(cfg)
  assert fam.MODEL_TYPE == model_type
  assert 'transformers_version' in neutral and 'model_type' in neutral
  assert not set(neutral) & fam.READ   # what the family reads is never merely recorded
  # transformers 4's spelling of the same config gives the same model
  _, model4, neutral4 = hf.model_config(v4_spelling(cfg))
  assert model4 == model
  assert {'torch_dtype', 'max_length', 'id2label', 'sep_token_id'} <= set(neutral4)


def test_gemma3s_layers_and_rope_as_transformers_sets_them(tmp_path):
  cfg = saved('gemma3_text', tmp_path, num_hidden_layers=18, sliding_window=512,
              rope_parameters={'full_attention': {'rope_type': 'linear', 'factor': 8.0,
                                                  'rope_theta': 1e6},
                               'sliding_attention': {'rope_type': 'default', 'rope_theta': 1e4}})
  _, m, _ = hf.model_config(cfg)
  assert (m['sliding_window'], m['sliding_pattern']) == (512, 6)
  assert (m['rope_theta'], m['rope_scaling'], m['rope_factor'], m['rope_local_theta']) == \
      (1e6, 'linear', 8.0, 1e4)
  from lmresearch.models.transformer import ModelConfig
  ours = ModelConfig(vocab_size=8, **{k: v for k, v in m.items() if k != 'style'})
  full = [i for i in range(18) if not ours.is_sliding(i)]
  assert full == [i for i, t in enumerate(cfg['layer_types']) if t == 'full_attention'] == [5, 11, 17]


def test_a_real_instruct_checkpoints_tokenizer_keys_are_accepted_and_recorded(tmp_path):
  """The case that stopped a real Llama-family checkpoint: unk_token_id (and other tokenizer ids)
  in config.json."""
  cfg = saved('llama', tmp_path, unk_token_id=0, num_hidden_layers=2)
  cfg.update(unk_token_id=0, sep_token_id=None, pretraining_tp=1, attention_dropout=0.0)
  _, model, neutral = hf.model_config(cfg)
  assert neutral['unk_token_id'] == 0 and 'attention_dropout' in neutral
  assert model['num_layers'] == 2


@pytest.mark.parametrize('model_type,change,key', [
    ('llama', {'attention_bias': True}, 'attention_bias=True'),
    ('llama', {'mlp_bias': True}, 'mlp_bias=True'),
    ('llama', {'hidden_act': 'gelu'}, "hidden_act='gelu'"),
    ('llama', {'layer_types': ['sliding_attention', 'full_attention']}, 'layer_types'),
    ('llama', {'quantization_config': {'quant_method': 'bitsandbytes'}}, 'quantization_config'),
    ('llama', {'some_new_option': 3}, 'some_new_option=3'),
    ('qwen2', {'use_sliding_window': True}, 'use_sliding_window=True'),
    ('qwen3', {'rope_parameters': {'rope_type': 'yarn', 'factor': 4.0, 'rope_theta': 1e6}},
     "rope_parameters.rope_type='yarn'"),
    ('gemma3_text', {'hidden_activation': 'silu'}, "hidden_activation='silu'"),
    ('gemma3_text', {'use_bidirectional_attention': True}, 'use_bidirectional_attention=True'),
    ('gemma3_text', {'layer_types': ['full_attention'] + ['sliding_attention'] * 25},
     'layer_types'),
    ('gpt2', {'scale_attn_by_inverse_layer_idx': True}, 'scale_attn_by_inverse_layer_idx=True'),
])
def test_a_key_that_changes_the_model_is_one_line_naming_it(model_type, change, key, tmp_path):
  cfg = {**saved(model_type, tmp_path), **change}
  with pytest.raises(ConfigError, match=key.replace('[', r'\[').replace('(', r'\(')) as e:
    hf.model_config(cfg)
  assert '\n' not in str(e.value) and 'config.json' in str(e.value)

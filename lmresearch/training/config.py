"""Shared config defaults and validation. Experiment files in configs/ start from `base_config()`.

Validation runs before anything compiles: each problem is one line naming the key to change.
(Unknown keys and wrong types on the command line are refused by ml_collections itself.)
"""
from __future__ import annotations

import os

import jax.numpy as jnp
import ml_collections

from lmresearch.core import fileio, parallel
from lmresearch.core.errors import ConfigError

DATA_DIR = os.environ.get('LMR_DATA_DIR', os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared', 'data'))


class Choice(tuple):
  """A preset argument with a closed set of values; the first is the default."""

  def __new__(cls, *values):
    return super().__new__(cls, values)


_TRUE, _FALSE = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off')


def parse_arg(arg, **spec) -> ml_collections.ConfigDict:
  """A config file's preset argument against its declared spec (big_vision's `parse_arg`):

    parse_arg('size=smoke,lora=8', size=Choice('default', 'smoke'), all=False, lora=0)
      -> ConfigDict(size='smoke', all=False, lora=8)

  Each keyword is an argument and its default, whose type the value must parse as (bool: 1/0,
  true/false, yes/no, on/off; int; float; str), or a Choice of the only values allowed. An unknown
  key, a value of another type or a value not among the choices is a ConfigError naming the
  config file, the key and what it accepts: `lora=0` is off, and `data=gsm8K` is refused."""
  import sys
  caller = sys._getframe(1).f_code.co_filename
  where = os.path.relpath(caller) if not os.path.relpath(caller).startswith('..') else caller
  out = ml_collections.ConfigDict({k: (v[0] if isinstance(v, Choice) else v)
                                   for k, v in spec.items()})
  accepted = ', '.join(f'{k}={_describe(v)}' for k, v in spec.items()) or 'no arguments'
  for part in (arg or '').split(','):
    if not part.strip():
      continue
    if '=' not in part:
      raise ConfigError(f'{where}:{part.strip()}: expected key=value; it accepts {accepted}.')
    k, v = (x.strip() for x in part.split('=', 1))
    if k not in spec:
      raise ConfigError(f'{where}: unknown argument {k!r} ({k}={v}); it accepts {accepted}.')
    out[k] = _parse_value(where, k, v, spec[k])
  return out


def _describe(default) -> str:
  if isinstance(default, Choice):
    return '|'.join(default)
  kind = {bool: 'bool', int: 'int', float: 'float'}.get(type(default), 'str')
  return f'{kind} (default {default!r})' if default != '' else kind


def _parse_value(where: str, key: str, value: str, default):
  if isinstance(default, Choice):
    if value not in default:
      raise ConfigError(f'{where}: {key}={value!r} is not one of {", ".join(default)}.')
    return value
  try:
    if isinstance(default, bool):
      if value.lower() not in _TRUE + _FALSE:
        raise ValueError
      return value.lower() in _TRUE
    if isinstance(default, int):
      return int(value)
    if isinstance(default, float):
      return float(value)
  except ValueError:
    kind = _describe(default).split()[0]
    raise ConfigError(f'{where}: {key}={value!r} is not {"an" if kind == "int" else "a"} {kind} '
                      f'({key}={default!r} is its default).') from None
  return value


def lora_on(config) -> bool:
  """Whether a stage trains LoRA adapters (config.lora.rank > 0) rather than the whole model."""
  return (config.get('lora') or {}).get('rank', 0) > 0


def model_defaults() -> dict:
  """config.model's keys and defaults: ModelConfig's own (the one place they are declared), but
  the vocabulary size that the tokenizer decides and the LoRA fields that config.lora sets, plus
  the keys only configs read."""
  import dataclasses
  from lmresearch.models.transformer import ModelConfig
  skip = {'vocab_size', 'sample_vocab', 'lora_rank', 'lora_alpha', 'lora_dropout', 'lora_targets',
          'lora_tokens'}
  out = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name not in skip}
  # vocab_size: 0 = the tokenizer's, rounded up to vocab_multiple; hf_model_type: an import's
  return dict(out, vocab_size=0, vocab_multiple=64, hf_model_type='')


CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'configs')


def config_file(name: str):
  """The module configs/<name>.py (its get_config), read by path: the repository's config files
  are not a package, and scripts import the installed lmresearch without sys.path edits."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(f'configs_{name}', os.path.join(CONFIGS, f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def base_config(stage: str = 'pretrain', init_from: str = '') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.seed = 0
  c.init_from = init_from   # parent stage's workdir (post-training stages)

  c.model = ml_collections.ConfigDict(model_defaults())

  c.data = ml_collections.ConfigDict(dict(
      source='synthetic', path='', eval_path='', text_key='text', val_fraction=0.1, seq_len=256,
      tokenizer='bpe', vocab_size=512, tokenizer_path='', read_threads=1,
      tfds_name='', tfds_data_dir='', tfds_train_split='train', tfds_eval_split='test', max_docs=0,
      # source='hf', a Hugging Face dataset (lmresearch/data/hf.py; pip install -e .[hf]):
      hf_path='',          # a save_to_disk dir, data files/glob (.parquet .jsonl ...) or hub name
      hf_name='',          # the hub dataset's configuration, e.g. 'wikitext-103-raw-v1'
      hf_data_files='',    # data files for a hub/builder hf_path: FILES or 'train=FILES,test=FILES'
      hf_split='train',    # the split that trains
      hf_eval_split='',    # held-out split; '' = hf_split's last val_fraction (streamed: head)
      hf_streaming=False,  # an IterableDataset: pretraining packs text as it streams, not whole
      synthetic=ml_collections.ConfigDict(dict(
          world_seed=0, num_docs=20000, worked_fraction=0.5,
          label_noise=0.0, min_k=2, max_k=4,   # rankings: labeler noise, responses per prompt
          question_arithmetic_share=0.5))))   # PPO's questions: word problems vs fact questions

  c.train = ml_collections.ConfigDict(dict(
      steps=500, batch_size=32, grad_accum=1, lr=3e-3, min_lr=3e-4, warmup_steps=50,
      decay_steps=0, weight_decay=0.1, b1=0.9, b2=0.99, clip_norm=1.0, clip_per_model=False,
      z_loss=0.0, loss_chunk=0,   # loss_chunk: positions per piece of logits (0 = all at once)
      log_every=25, eval_every=250, eval_batches=20, eval_at_start=True, peak_flops=0.0))

  # LoRA (models/lora.py): rank 0 = full fine-tuning. targets: projections by the model's own
  # names (query, key, value, out, gate, up, down). tokens: ids or token strings (or 'specials')
  # whose embedding and head rows train too, PEFT's trainable_token_indices ('' = none).
  c.lora = ml_collections.ConfigDict(dict(rank=0, alpha=16.0, dropout=0.0, targets='query,value',
                                          tokens=''))
  c.checkpoint = ml_collections.ConfigDict(dict(every=250, max_to_keep=2, use_async=True))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.rules = [list(r) for r in parallel.DEFAULT_RULES]
  return c


def validate(config, num_devices: int, stages=None) -> None:
  """Checks the keys every stage shares. `stages` is the stage registry (name -> stage class, e.g.
  `lmresearch.stages.REGISTRY`): when given, config.stage must name one, and that stage checks its
  own keys (`Stage.validate(config)`). This module imports nothing from stages/."""
  from lmresearch.models.transformer import REMAT_POLICIES
  if stages is not None and config.stage not in stages:
    raise ConfigError(f'config.stage={config.stage!r}: expected one of {list(stages)}.')
  shape = parallel.mesh_shape(config.mesh, num_devices)
  m, t, d = config.model, config.train, config.data
  if m.style not in ('gpt2', 'llama'):
    raise ConfigError(f"config.model.style={m.style!r}: expected 'gpt2' or 'llama'.")
  if m.embed_dim % m.num_heads:
    raise ConfigError(f'config.model.embed_dim={m.embed_dim} is not divisible by '
                      f'config.model.num_heads={m.num_heads}.')
  if m.num_kv_heads and m.num_heads % m.num_kv_heads:
    raise ConfigError(f'config.model.num_heads={m.num_heads} is not a multiple of '
                      f'config.model.num_kv_heads={m.num_kv_heads}.')
  if m.remat != 'none' and m.remat not in REMAT_POLICIES:
    raise ConfigError(f"config.model.remat={m.remat!r}: expected 'none' or one of {sorted(REMAT_POLICIES)}.")
  for key in ('dtype', 'param_dtype'):
    try:
      jnp.dtype(m[key])
    except TypeError:
      raise ConfigError(f'config.model.{key}={m[key]!r} is not a dtype name.') from None
  lc = config.get('lora') or {}
  if lc.get('rank', 0) < 0:
    raise ConfigError(f'config.lora.rank={lc.rank} must be >= 0 (0 = full fine-tuning).')
  if lora_on(config):
    from lmresearch.models.lora import targets
    try:
      targets(lc.targets)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    if not config.get('init_from'):
      raise ConfigError('config.lora.rank > 0 trains adapters on a base model: set '
                        'config.init_from to the run they adapt.')
  if d.seq_len < 1 or d.seq_len > m.max_len:
    raise ConfigError(f'config.data.seq_len={d.seq_len} must be in 1..config.model.max_len={m.max_len}.')
  for key in ('steps', 'batch_size', 'grad_accum', 'log_every'):
    if t[key] < 1:
      raise ConfigError(f'config.train.{key}={t[key]} must be >= 1.')
  chunk = t.get('loss_chunk', 0)
  if chunk < 0 or (0 < chunk < d.seq_len and d.seq_len % chunk):
    raise ConfigError(f'config.train.loss_chunk={chunk} must be 0 (off) or divide '
                      f'config.data.seq_len={d.seq_len}.')
  if stages is not None:
    stages[config.stage].validate(config)
  mesh_axes = dict(zip(parallel.MESH_AXES, shape))
  rules = dict((name, ax) for name, ax in config.rules)
  axes = rules.get('batch') or ()
  axes = (axes,) if isinstance(axes, str) else axes
  shards = 1
  for a in axes:
    shards *= mesh_axes[a]
  if t.batch_size % (shards * t.grad_accum):
    raise ConfigError(
        f'config.train.batch_size={t.batch_size} does not divide into config.train.grad_accum='
        f'{t.grad_accum} micro-batches over the {shards} batch shards of the mesh '
        f'({"x".join(axes)} = {shards}); use a multiple of {shards * t.grad_accum}.')


def save(config, workdir: str) -> None:
  fileio.write_text(fileio.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))


def load(workdir: str) -> ml_collections.ConfigDict:
  path = fileio.join(workdir, 'config.json')
  if not fileio.exists(path):
    raise FileNotFoundError(f'{path} not found: is {workdir} a run directory?')
  return ml_collections.ConfigDict(fileio.read_json(path))


def reused_stages(config) -> list[str]:
  """A pipeline config's stages taken finished from config.upstream (config.reuse), not trained."""
  if not config.get('upstream'):
    return []
  return [n for n in config.get('reuse', '').split(',') if n]


# Model keys a later stage may choose itself; everything else must match the parent checkpoint.
RUNTIME_MODEL_KEYS = ('dropout', 'remat', 'scan_layers', 'attention_impl', 'dtype')


def inherit_model(config) -> None:
  """A stage that starts from a parent run (config.init_from) takes the parent's model shape."""
  if not config.get('init_from'):
    return
  parent = load(config.init_from)
  with config.unlocked():
    for key, value in parent.model.items():
      if key not in RUNTIME_MODEL_KEYS:
        config.model[key] = value
  if config.data.seq_len > config.model.max_len:
    raise ConfigError(f'config.data.seq_len={config.data.seq_len} exceeds the parent model\'s '
                      f'context config.model.max_len={config.model.max_len} ({config.init_from}).')


def check_same_model(config, workdir: str) -> None:
  """A workdir that already holds checkpoints must be resumed with the same model."""
  if not fileio.isdir(fileio.join(workdir, 'checkpoints')) or not fileio.exists(
      fileio.join(workdir, 'config.json')):
    return
  old = load(workdir)
  for key in config.model.keys():
    if key in old.model and old.model[key] != config.model[key] and key not in RUNTIME_MODEL_KEYS:
      raise ConfigError(f'{workdir} holds checkpoints of another model (config.model.{key}: '
                        f'{old.model[key]!r} there, {config.model[key]!r} now); use a new --workdir.')

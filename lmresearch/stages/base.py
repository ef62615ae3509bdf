"""The stage contract, and what every stage here shares (tokenizer, language model, parent params).

A stage is a small class the one trainer runs. The trainer calls exactly these methods of
`Stage` (no probing with getattr/hasattr); each has a default, so a stage overrides only what
differs:

  validate(config)               classmethod: check the stage's own config keys (ConfigError naming
                                 the key); reached through stages.REGISTRY before anything builds
  init_params(rng)               fresh (boxed) params, traced under eval_shape/jit       [required]
  initial_params(params, shard)  what to start from (the parent stage's checkpoint, if any)
  bind(mesh, rules)              the trainer's mesh, before any step: place frozen models here
  start(state)                   the initialized (or resumed) TrainState, once, before any step:
                                 with LoRA a reference model reads the frozen base from it
  train_iterator()               checkpointable host batches (get_state/set_state)      [required]
  eval_batches()                 a fixed held-out set for loss_fn; [] = none
  loss_fn(params, batch, rng)    -> (loss_sum, metric_sums with 'count'); rng None = eval  [required]
  prepare(batch, state)          device-side work before the update (rollouts, reference log-probs)
  make_train_step(opt, accum, schedule)   the pure step the trainer jits; default: exact gradient
                                 accumulation of loss_fn over `accum` micro-batches
  evaluate(params)               held-out metrics when a loss on fixed batches is not the measure;
                                 None (default) = the trainer evaluates loss_fn on eval_batches()
  finalize(params)               after the last step, a dict of extra metrics (e.g. reward offset)
  tokens_per_step(), flops_per_step()   throughput and MFU

`LMStage` implements it for a stage whose trainable model is the language model built from the
config and tokenizer (every stage subclasses it); stages/rl.py's `RLStage` adds what PPO and GRPO
share.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lmresearch.training import config as lmc
from lmresearch.core import fileio, parallel
from lmresearch.text import tokenizers
from lmresearch.data import packing
from lmresearch.models.logprobs import chunked_nll_sums, nll_sums
from lmresearch.models.transformer import count_params, flops_per_token, unembed
from lmresearch.stages import parents
from lmresearch.stages.builders import build_model, model_config, padded_vocab  # noqa: F401
from lmresearch.training import trainer as trainer_lib


def get_tokenizer(config, workdir: str, texts_fn=None):
  """The workdir's tokenizer; else config.data.tokenizer_path's or the parent run's (copied here);
  else (pretraining) train one on texts_fn() and save it."""
  own = fileio.join(workdir, tokenizers.FILENAME)
  if fileio.exists(own):
    return tokenizers.load_tokenizer(own)
  source = config.data.tokenizer_path or (
      fileio.join(config.init_from, tokenizers.FILENAME) if config.get('init_from') else '')
  if not source and config.data.source == 'prepared':   # the corpus's own (data.prepare)
    source = fileio.join(config.data.path, tokenizers.FILENAME)
  if source:
    tok = tokenizers.load_tokenizer(source)
  elif texts_fn is not None:
    tok = tokenizers.train_tokenizer(config.data.tokenizer, texts_fn(), config.data.vocab_size)
  else:
    raise FileNotFoundError('no tokenizer: set config.init_from to the parent run or '
                            'config.data.tokenizer_path to a tokenizer.json.')
  if jax.process_index() == 0 and workdir:
    fileio.makedirs(workdir)
    tok.save(workdir)
  return tok


def load_parent_params(workdir: str, abstract_params, shardings):
  """The parent run's latest params, restored straight into this run's shardings (a LoRA
  parent's adapters folded into its base: stages/parents.py)."""
  return parents.load(workdir, abstract_params, shardings)


class Stage:
  """The contract the trainer calls (see the module docstring), with no-op defaults."""
  name = 'stage'

  @classmethod
  def validate(cls, config) -> None:
    """Checks this stage's own config keys (raises ConfigError naming the key); none here."""

  def init_params(self, rng):
    raise NotImplementedError

  def initial_params(self, params, shardings):
    return params

  def bind(self, mesh, rules):
    """The trainer hands over its mesh, so a stage can place frozen models (reference, reward)."""
    self.mesh, self.rules = mesh, rules

  def start(self, state) -> None:
    """The train state the steps will start from (after init or resume); nothing here."""

  def train_iterator(self):
    raise NotImplementedError

  def eval_batches(self) -> list:
    return []

  def loss_fn(self, params, batch, rng):
    raise NotImplementedError

  def prepare(self, batch, state):
    """Device-side work before the update, given the current TrainState; identity here."""
    return batch

  def make_train_step(self, optimizer, grad_accum: int, schedule):
    return trainer_lib.make_train_step(self.loss_fn, optimizer, grad_accum, schedule)

  def evaluate(self, params):
    """Held-out metrics; None: the trainer evaluates loss_fn on eval_batches()."""
    return None

  def finalize(self, params) -> dict:
    return {}

  def tokens_per_step(self) -> int:
    return 0

  def flops_per_step(self) -> float:
    return 0.0


class LMStage(Stage):
  """A stage built around the language model of its config and tokenizer (every stage here)."""
  name = 'lm'

  def __init__(self, config, workdir: str, texts_fn=None):
    self.config, self.workdir = config, workdir
    self.tokenizer = get_tokenizer(config, workdir, texts_fn)
    self.model = build_model(config, self.tokenizer)
    # The model without adapters: what a frozen reference reads (the base, the same arrays).
    self.lora = lmc.lora_on(config)
    self.ref_model = build_model(config, self.tokenizer, lora=False) if self.lora else self.model

  def init_params(self, rng):
    tokens = jnp.zeros((1, self.config.data.seq_len), jnp.int32)
    return self.model.init(rng, tokens)['params']

  def initial_params(self, params, shardings):
    if not self.config.get('init_from'):
      return params
    return load_parent_params(self.config.init_from, params, shardings)

  # A stage with self.train_ds / self.eval_ds (anything with len() and rows(indices)):
  def train_iterator(self):
    return packing.train_iterator(self.train_ds, self.config.train.batch_size, self.config.seed,
                                  self.config.data.get('read_threads', 1))

  def eval_batches(self):
    return packing.eval_batches(self.eval_ds, self.config.train.batch_size,
                                self.config.train.eval_batches)

  def load_lm_params(self, workdir: str):
    """A run's language-model params (no adapters: merged into the weights when the run trained
    some), restored straight into this mesh's shardings."""
    tokens = jnp.zeros((1, self.config.data.seq_len), jnp.int32)
    abstract, shardings = parallel.abstract_and_shardings(
        lambda: self.ref_model.init(jax.random.PRNGKey(0), tokens)['params'], self.mesh, self.rules)
    return load_parent_params(workdir, abstract, shardings)

  def lm_logits(self, params, batch, rng, inputs='inputs', return_hidden=False):
    deterministic = rng is None or self.config.model.dropout == 0
    return self.model.apply({'params': params}, batch[inputs], batch['positions'],
                            batch['segment_ids'], deterministic=deterministic,
                            rngs=None if deterministic else {'dropout': rng},
                            return_hidden=return_hidden)

  def lm_loss(self, params, batch, rng, prefix: str = 'train'):
    """Weighted next-token cross-entropy of the batch (pretraining, SFT); config.train.loss_chunk
    makes the logits that many positions at a time (see logprobs.chunked_nll_sums)."""
    chunk = self.config.train.get('loss_chunk', 0)
    if not chunk:
      sums = nll_sums(self.lm_logits(params, batch, rng), batch['targets'], batch['weights'])
    else:
      hidden = self.lm_logits(params, batch, rng, return_hidden=True)
      sums = chunked_nll_sums(hidden, functools.partial(unembed, self.model.cfg, params),
                              batch['targets'], batch['weights'], chunk)
    metrics = {'train/loss': sums[0], f'{prefix}/accuracy': sums[2],
               'count': jnp.sum(batch['weights'])}
    if prefix != 'train':
      metrics[f'{prefix}/loss'] = sums[0]
    return sums[0] + self.config.train.z_loss * sums[1], metrics

  def tokens_per_step(self) -> int:
    return self.config.train.batch_size * self.config.data.seq_len

  def flops_per_step(self) -> float:
    n = count_params(jax.eval_shape(self.init_params, jax.random.PRNGKey(0)))
    if self.model.cfg.gpt2:   # position-table lookups are not matmul work
      n -= self.model.cfg.max_len * self.model.cfg.embed_dim
    return flops_per_token(self.model.cfg, self.config.data.seq_len, n) * self.tokens_per_step()

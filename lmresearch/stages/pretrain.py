"""Pretraining: next-token prediction on packed documents -> a base model (document completer).

This is the template every stage follows: build the tokenizer, data and model; give the trainer
`init_params`, `train_iterator`, `eval_batches` and a pure `loss_fn`.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from lmresearch import tokenizers
from lmresearch.data import packing, sources
from lmresearch.models.transformer import ModelConfig, Transformer, count_params, flops_per_token


def padded_vocab(tok_vocab: int, model_cfg) -> int:
  if model_cfg.vocab_size:
    if model_cfg.vocab_size < tok_vocab:
      raise ValueError(f'config.model.vocab_size={model_cfg.vocab_size} is smaller than the '
                       f'tokenizer\'s {tok_vocab}; set it to 0 (= from the tokenizer).')
    return model_cfg.vocab_size
  m = max(1, model_cfg.vocab_multiple)
  return -(-tok_vocab // m) * m


def build_model(config, tok) -> Transformer:
  return Transformer(ModelConfig.from_config(config.model, padded_vocab(tok.vocab_size, config.model)))


def get_tokenizer(config, workdir: str, texts_fn):
  """Reuse the workdir's (or config.data.tokenizer_path's) tokenizer; else train one and save it."""
  path = config.data.tokenizer_path or os.path.join(workdir, tokenizers.FILENAME)
  if os.path.exists(path):
    return tokenizers.load_tokenizer(path)
  tok = tokenizers.train_tokenizer(config.data.tokenizer, texts_fn(), config.data.vocab_size)
  if jax.process_index() == 0:
    tok.save(workdir)
  return tok


def token_loss(logits, targets, weights, z_loss: float = 0.0):
  """Summed weighted cross-entropy (fp32) and its metric sums."""
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  nll = lse - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  loss = jnp.sum(nll * weights)
  total = loss + z_loss * jnp.sum(jnp.square(lse) * weights)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return total, {'train/loss': loss, 'train/accuracy': jnp.sum(correct * weights),
                 'count': jnp.sum(weights)}


class PretrainStage:
  name = 'pretrain'

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    dc = config.data
    train_docs = sources.documents(dc, 'train')
    self.tokenizer = get_tokenizer(config, workdir, lambda: train_docs)
    tok = self.tokenizer
    self.train_ds = packing.PackedDataset.from_token_lists(
        tok.encode_batch(train_docs), dc.seq_len, tok.bos_id, tok.eos_id)
    self.eval_ds = None
    if config.train.eval_every > 0:
      self.eval_ds = packing.PackedDataset.from_token_lists(
          tok.encode_batch(sources.documents(dc, 'validation')), dc.seq_len, tok.bos_id, tok.eos_id)
    self.model = build_model(config, tok)

  @classmethod
  def abstract(cls, config):
    """The stage without tokenizer or data (vocab from config), for dry runs."""
    self = cls.__new__(cls)
    self.config, self.workdir = config, ''
    vocab = padded_vocab(config.model.vocab_size or config.data.vocab_size, config.model)
    self.model = Transformer(ModelConfig.from_config(config.model, vocab))
    return self

  # ---- what the trainer needs ---------------------------------------------------------------
  def init_params(self, rng):
    tokens = jnp.zeros((1, self.config.data.seq_len), jnp.int32)
    return self.model.init(rng, tokens)['params']

  def initial_params(self, params, shardings):
    return params

  def train_iterator(self):
    return packing.train_iterator(self.train_ds, self.config.train.batch_size, self.config.seed)

  def eval_batches(self):
    return packing.eval_batches(self.eval_ds, self.config.train.batch_size,
                                self.config.train.eval_batches)

  def loss_fn(self, params, batch, rng):
    deterministic = rng is None or self.config.model.dropout == 0
    logits = self.model.apply({'params': params}, batch['inputs'], batch['positions'],
                              batch['segment_ids'], deterministic=deterministic,
                              rngs=None if deterministic else {'dropout': rng})
    return token_loss(logits, batch['targets'], batch['weights'], self.config.train.z_loss)

  def tokens_per_step(self) -> int:
    return self.config.train.batch_size * self.config.data.seq_len

  def flops_per_step(self) -> float:
    shapes = jax.eval_shape(self.init_params, jax.random.PRNGKey(0))
    n = count_params(shapes)
    if self.model.cfg.gpt2:   # position table and tied embedding lookups are not matmul work
      n -= self.model.cfg.max_len * self.model.cfg.embed_dim
    return flops_per_token(self.model.cfg, self.config.data.seq_len, n) * self.tokens_per_step()

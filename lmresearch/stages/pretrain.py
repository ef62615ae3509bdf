"""Pretraining: next-token prediction on packed documents -> a base model (document completer).

The template every stage follows: build the data, give the trainer batches and a pure loss_fn.
"""
from __future__ import annotations

from lmresearch.data import packing, sources
from lmresearch.models.transformer import ModelConfig, Transformer
from lmresearch.stages.base import LMStage, padded_vocab


class PretrainStage(LMStage):
  name = 'pretrain'

  def __init__(self, config, workdir: str):
    dc = config.data
    train_docs = sources.documents(dc, 'train')
    super().__init__(config, workdir, texts_fn=lambda: train_docs)
    tok = self.tokenizer
    self.train_ds = packing.PackedDataset.from_token_lists(
        tok.encode_batch(train_docs), dc.seq_len, tok.bos_id, tok.eos_id)
    self.eval_ds = None
    if config.train.eval_every > 0:
      self.eval_ds = packing.PackedDataset.from_token_lists(
          tok.encode_batch(sources.documents(dc, 'validation')), dc.seq_len, tok.bos_id, tok.eos_id)

  @classmethod
  def abstract(cls, config):
    """The stage without tokenizer or data (vocab from config), for dry runs."""
    self = cls.__new__(cls)
    self.config, self.workdir = config, ''
    vocab = padded_vocab(config.model.vocab_size or config.data.vocab_size, config.model)
    self.model = Transformer(ModelConfig.from_config(config.model, vocab))
    return self

  def loss_fn(self, params, batch, rng):
    return self.lm_loss(params, batch, rng)

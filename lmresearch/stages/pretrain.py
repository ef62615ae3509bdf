"""Pretraining: next-token prediction on packed documents -> a base model (document completer).

The template every stage follows: build the data, give the trainer batches and a pure loss_fn.
"""
from __future__ import annotations

from lmresearch.data import packing, prepared, sources
from lmresearch.models.transformer import ModelConfig, Transformer
from lmresearch.stages.base import LMStage, padded_vocab


class PretrainStage(LMStage):
  name = 'pretrain'

  def __init__(self, config, workdir: str):
    dc = config.data
    self.stream = None
    if dc.source == 'hf' and dc.hf_streaming:   # packed as it streams: the corpus is never whole
      from lmresearch.data import hf
      super().__init__(config, workdir, texts_fn=lambda: hf.TextStream(dc, 'train').first_texts(
          dc.max_docs or hf.TOKENIZER_DOCS))
      self.stream, self.eval_ds = hf.pretraining(dc, self.tokenizer, config.train)
      return
    if dc.source == 'prepared':   # tokenized once by lmresearch.data.prepare, read by row
      super().__init__(config, workdir)
      prepared.check_tokenizer(dc.path, self.tokenizer, dc.tokenizer_path)
      make = lambda split: prepared.PreparedDataset(dc.path, split, dc.seq_len,
                                                    self.tokenizer.bos_id)
    else:
      train_docs = sources.documents(dc, 'train')
      super().__init__(config, workdir, texts_fn=lambda: train_docs)
      tok = self.tokenizer
      make = lambda split: packing.PackedDataset.from_token_lists(
          tok.encode_batch(train_docs if split == 'train' else sources.documents(dc, split)),
          dc.seq_len, tok.bos_id, tok.eos_id)
    self.train_ds = make('train')
    self.eval_ds = make('validation') if config.train.eval_every > 0 else None

  @classmethod
  def abstract(cls, config):
    """The stage without tokenizer or data (vocab from config), for dry runs."""
    self = cls.__new__(cls)
    self.config, self.workdir = config, ''
    vocab = padded_vocab(config.model.vocab_size or config.data.vocab_size, config.model)
    self.model = Transformer(ModelConfig.from_config(config.model, vocab))
    return self

  def train_iterator(self):
    if self.stream is None:
      return super().train_iterator()
    tok = self.tokenizer
    return packing.StreamIterator(self.stream, tok.encode, self.config.data.seq_len, tok.bos_id,
                                  tok.eos_id, self.config.train.batch_size)

  def loss_fn(self, params, batch, rng):
    return self.lm_loss(params, batch, rng)

"""Supervised fine-tuning: the base model trained on chats, loss on assistant tokens only.

Chats are rendered with the one chat template (tokenizers.render_chat), packed whole into rows
(never split, no attention across chats), and trained with the same token loss as pretraining,
weighted by the assistant mask — so a user's or system's tokens are context, never targets.
"""
from __future__ import annotations

import warnings

from lmresearch.text import tokenizers
from lmresearch.data import formats, packing
from lmresearch.stages.base import LMStage


def chat_examples(tok, chats):
  return [tokenizers.render_chat(tok, c['messages']) for c in chats]


class SFTStage(LMStage):
  name = 'sft'

  def __init__(self, config, workdir: str):
    super().__init__(config, workdir)
    dc = config.data
    self.train_ds = self._pack(formats.load('chat', dc, 'train'))
    self.eval_ds = self._pack(formats.load('chat', dc, 'validation')) \
        if config.train.eval_every > 0 else None

  def _pack(self, chats):
    ds = packing.PackedExamples(chat_examples(self.tokenizer, chats), self.config.data.seq_len,
                                self.tokenizer.pad_id)
    if ds.truncated:
      warnings.warn(f'{ds.truncated} chats are longer than config.data.seq_len + 1 = '
                    f'{self.config.data.seq_len + 1} tokens and were truncated.')
    return ds

  def loss_fn(self, params, batch, rng):
    return self.lm_loss(params, batch, rng, prefix='sft')

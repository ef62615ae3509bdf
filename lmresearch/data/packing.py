"""Tokenize, pack into fixed-length rows, shuffle, batch, shard per process — checkpointably.

Documents are concatenated as [BOS] doc [EOS] ... into one stream and cut into windows of
seq_len + 1 tokens. Every token carries the id of its document, so a packed row gets
`segment_ids` (attention never crosses documents) and `positions` that restart at each document.
A target in another document than its input is weighted 0.

Order comes from grain (a seeded global shuffle, reshuffled each epoch); the iterator's state is
a small dict saved in every checkpoint, so a resumed run sees exactly the batches it would have.
"""
from __future__ import annotations

from typing import Sequence

import grain
import jax
import numpy as np


class PackedDataset:
  def __init__(self, tokens: np.ndarray, doc_ids: np.ndarray, seq_len: int):
    self.tokens, self.doc_ids, self.seq_len = tokens, doc_ids, seq_len
    self.num_windows = (len(tokens) - 1) // seq_len
    if self.num_windows < 1:
      raise ValueError(f'only {len(tokens)} tokens: fewer than one sequence of length '
                       f'{seq_len} + 1; add data or lower config.data.seq_len.')

  @classmethod
  def from_token_lists(cls, docs: Sequence[Sequence[int]], seq_len: int, bos: int, eos: int):
    lengths = np.array([len(d) + 2 for d in docs], np.int64)
    tokens = np.empty(int(lengths.sum()), np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for s, d in zip(starts, docs):
      tokens[s] = bos
      tokens[s + 1:s + 1 + len(d)] = d
      tokens[s + 1 + len(d)] = eos
    doc_ids = np.repeat(np.arange(len(docs), dtype=np.int32), lengths)
    return cls(tokens, doc_ids, seq_len)

  def rows(self, indices: np.ndarray) -> dict:
    """Windows -> the model's batch: inputs, targets, segment_ids, positions, weights."""
    t = self.seq_len
    idx = np.asarray(indices)[:, None] * t + np.arange(t + 1)[None, :]
    toks, docs = self.tokens[idx], self.doc_ids[idx]
    inputs, targets = toks[:, :-1], toks[:, 1:]
    seg_in, seg_tg = docs[:, :-1], docs[:, 1:]
    # Positions restart where the document changes (and at the window start).
    ar = np.arange(t)[None, :]
    new_doc = np.concatenate([np.ones((len(idx), 1), bool), seg_in[:, 1:] != seg_in[:, :-1]], 1)
    starts = np.maximum.accumulate(np.where(new_doc, ar, 0), axis=1)
    segment_ids = np.cumsum(new_doc, axis=1).astype(np.int32)
    return {
        'inputs': inputs.astype(np.int32),
        'targets': targets.astype(np.int32),
        'segment_ids': segment_ids,
        'positions': (ar - starts).astype(np.int32),
        'weights': (seg_in == seg_tg).astype(np.float32),
    }


def train_iterator(ds: PackedDataset, global_batch: int, seed: int):
  """An endless, checkpointable iterator over this process's share of each global batch."""
  pc, pi = jax.process_count(), jax.process_index()
  if global_batch % pc:
    raise ValueError(f'config.train.batch_size={global_batch} does not split over {pc} processes.')
  order = grain.MapDataset.range(ds.num_windows).shuffle(seed=seed).repeat()
  local = order.batch(global_batch, drop_remainder=True).map(lambda ix: ix[pi::pc])
  rows = local.map(ds.rows)
  return rows.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)).__iter__()


def eval_batches(ds: PackedDataset, global_batch: int, max_batches: int) -> list[dict]:
  """The first windows of the held-out split in order: the same eval set every time."""
  pc, pi = jax.process_count(), jax.process_index()
  n = min(max_batches, ds.num_windows // global_batch)
  if n < 1:
    raise ValueError(f'held-out split has {ds.num_windows} sequences, fewer than one batch of '
                     f'{global_batch}; lower config.train.batch_size or add held-out data.')
  return [ds.rows(np.arange(b * global_batch, (b + 1) * global_batch)[pi::pc]) for b in range(n)]

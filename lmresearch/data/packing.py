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
  def __init__(self, tokens: np.ndarray, doc_ids: np.ndarray, seq_len: int,
               loss_mask: np.ndarray | None = None):
    self.tokens, self.doc_ids, self.seq_len = tokens, doc_ids, seq_len
    self.loss_mask = loss_mask   # per token: may it be a target? (SFT: assistant tokens only)
    self.num_windows = (len(tokens) - 1) // seq_len
    if self.num_windows < 1:
      raise ValueError(f'only {len(tokens)} tokens: fewer than one sequence of length '
                       f'{seq_len} + 1; add data or lower config.data.seq_len.')

  def __len__(self) -> int:
    return self.num_windows

  @classmethod
  def from_token_lists(cls, docs: Sequence[Sequence[int]], seq_len: int, bos: int, eos: int,
                       loss_masks: Sequence[Sequence[int]] | None = None, add_bos: bool = True):
    """Documents -> one stream of [BOS] doc [EOS]. `loss_masks` (one 0/1 per doc token) marks
    the tokens that may be targets; EOS inherits the mask of the token before it."""
    head = 1 if add_bos else 0
    lengths = np.array([len(d) + head + 1 for d in docs], np.int64)
    tokens = np.empty(int(lengths.sum()), np.int32)
    mask = np.ones(len(tokens), np.float32) if loss_masks is not None else None
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for i, (s, d) in enumerate(zip(starts, docs)):
      if add_bos:
        tokens[s] = bos
      tokens[s + head:s + head + len(d)] = d
      tokens[s + head + len(d)] = eos
      if mask is not None:
        m = np.asarray(loss_masks[i], np.float32)
        mask[s:s + head] = 0
        mask[s + head:s + head + len(d)] = m
        mask[s + head + len(d)] = m[-1] if len(m) else 0
    doc_ids = np.repeat(np.arange(len(docs), dtype=np.int32), lengths)
    return cls(tokens, doc_ids, seq_len, mask)

  def rows(self, indices: np.ndarray) -> dict:
    """Windows -> the model's batch: inputs, targets, segment_ids, positions, weights."""
    t = self.seq_len
    idx = np.asarray(indices)[:, None] * t + np.arange(t + 1)[None, :]
    mask = self.loss_mask[idx] if self.loss_mask is not None else None
    return window_batch(self.tokens[idx], self.doc_ids[idx], mask)


def window_batch(toks: np.ndarray, docs: np.ndarray, loss_mask: np.ndarray | None = None) -> dict:
  """[rows, seq_len + 1] tokens and their document ids -> the model's batch."""
  weights = (docs[:, :-1] == docs[:, 1:]).astype(np.float32)
  if loss_mask is not None:
    weights *= loss_mask[:, 1:]
  seg_in = docs[:, :-1]
  new_doc = np.concatenate([np.ones((len(toks), 1), bool), seg_in[:, 1:] != seg_in[:, :-1]], 1)
  return _batch(toks, new_doc, weights)


def bos_window_batch(toks: np.ndarray, bos_id: int) -> dict:
  """`window_batch` of rows whose documents each start with BOS (a prepared corpus), computed
  from the BOS marks alone: a target that is BOS starts another document (weight 0), an input
  that is BOS starts a segment."""
  is_bos = toks == bos_id
  new_doc = is_bos[:, :-1].copy()
  new_doc[:, 0] = True
  return _batch(toks, new_doc, (~is_bos[:, 1:]).astype(np.float32))


def _batch(toks, new_doc, weights) -> dict:
  """Segments start where new_doc is set (and at the window start); positions restart there."""
  ar = np.arange(toks.shape[1] - 1, dtype=np.int32)[None, :]
  starts = np.maximum.accumulate(np.where(new_doc, ar, 0), axis=1)
  return {
      'inputs': toks[:, :-1].astype(np.int32),
      'targets': toks[:, 1:].astype(np.int32),
      'segment_ids': np.cumsum(new_doc, axis=1, dtype=np.int32),
      'positions': (ar - starts).astype(np.int32),
      'weights': weights,
  }


class PackedExamples:
  """Whole examples (e.g. chats) packed greedily into rows of seq_len + 1, never split across
  rows (an answer must see its question); the remainder of a row is padding (segment 0).
  Examples longer than a row are truncated; `truncated` counts them."""

  def __init__(self, examples: Sequence[tuple[Sequence[int], Sequence[int]]], seq_len: int,
               pad_id: int = 0):
    width = seq_len + 1
    rows, row = [], []
    self.truncated = 0
    for ids, mask in examples:
      if len(ids) > width:
        ids, mask = ids[:width], mask[:width]
        self.truncated += 1
      if sum(len(x[0]) for x in row) + len(ids) > width:
        rows.append(row)
        row = []
      row.append((ids, mask))
    if row:
      rows.append(row)
    n = len(rows)
    self.tokens = np.full((n, width), pad_id, np.int32)
    self.seg = np.zeros((n, width), np.int32)
    self.mask = np.zeros((n, width), np.float32)
    self.pos = np.zeros((n, width), np.int32)
    for r, row in enumerate(rows):
      at = 0
      for k, (ids, mask) in enumerate(row, 1):
        sl = slice(at, at + len(ids))
        self.tokens[r, sl], self.mask[r, sl], self.seg[r, sl] = ids, mask, k
        self.pos[r, sl] = np.arange(len(ids))
        at += len(ids)
    self.seq_len, self.num_rows = seq_len, n

  def __len__(self) -> int:
    return self.num_rows

  def rows(self, indices: np.ndarray) -> dict:
    i = np.asarray(indices)
    seg = self.seg[i]
    weights = (seg[:, :-1] == seg[:, 1:]) & (seg[:, :-1] > 0)
    return {
        'inputs': self.tokens[i, :-1], 'targets': self.tokens[i, 1:],
        'segment_ids': seg[:, :-1], 'positions': self.pos[i, :-1],
        'weights': (weights * self.mask[i, 1:]).astype(np.float32),
    }


def train_iterator(ds, global_batch: int, seed: int, threads: int = 1):
  """`ds`: anything with len() (rows) and rows(indices) -> a batch dict. An endless, checkpointable
  iterator over this process's share of each global batch; `threads` build batches ahead in
  parallel (config.data.read_threads; the order is the same for any count)."""
  pc, pi = jax.process_count(), jax.process_index()
  if global_batch % pc:
    raise ValueError(f'config.train.batch_size={global_batch} does not split over {pc} processes.')
  order = grain.MapDataset.range(len(ds)).shuffle(seed=seed).repeat()
  n = global_batch // pc   # this process's rows: block pi of the global batch (parallel.put_batch)
  local = order.batch(global_batch, drop_remainder=True).map(lambda ix: ix[pi * n:(pi + 1) * n])
  rows = local.map(ds.rows)
  return rows.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4)).__iter__()


def eval_batches(ds, global_batch: int, max_batches: int) -> list[dict]:
  """The first windows of the held-out split in order: the same eval set every time."""
  pc, pi = jax.process_count(), jax.process_index()
  n = min(max_batches, len(ds) // global_batch)
  if n < 1:
    raise ValueError(f'held-out split has {len(ds)} sequences, fewer than one batch of '
                     f'{global_batch}; lower config.train.batch_size or add held-out data.')
  k = global_batch // pc   # as in train_iterator: this process's contiguous block
  return [ds.rows(np.arange(b * global_batch + pi * k, b * global_batch + (pi + 1) * k))
          for b in range(n)]


class StreamIterator:
  """Documents packed as they stream (a corpus too large to hold): the windows of PackedDataset in
  stream order (row r = tokens[r*T : r*T + T + 1] of the [BOS] doc [EOS] stream, the same rows,
  segment ids, positions and weights), batched, this process's block of each global batch kept.

  `stream` has start() -> a position and documents(position) -> (position before the document,
  text) pairs, forever (data/hf.py's TextStream). Checkpointable like train_iterator: the state is
  the position of the document the next row starts in and the token offset into it, so a resumed
  run reads on from there rather than holding (or re-reading) what came before."""

  def __init__(self, stream, encode, seq_len: int, bos: int, eos: int, global_batch: int):
    pc = jax.process_count()
    if global_batch % pc:
      raise ValueError(f'config.train.batch_size={global_batch} does not split over {pc} processes.')
    self.stream, self.encode, self.seq_len = stream, encode, seq_len
    self.bos, self.eos, self.global_batch = bos, eos, global_batch
    self.set_state({'stream': stream.start(), 'offset': 0})

  def __iter__(self):
    return self

  def get_state(self) -> dict:
    return {'stream': self._buf[0][0], 'offset': self._offset}

  def set_state(self, state: dict) -> None:
    self._docs = self.stream.documents(state['stream'])
    self._buf, self._offset, self._n = [], int(state['offset']), 0   # _buf: (position, ids, doc id)
    self._pull()

  def _pull(self) -> None:
    position, text = next(self._docs)
    ids = np.asarray([self.bos] + list(self.encode(text)) + [self.eos], np.int32)
    self._buf.append((position, ids, self._n))
    self._n += 1

  def _row(self):
    """The next window of seq_len + 1 tokens (and their document ids); then on by seq_len."""
    width, toks, docs = self.seq_len + 1, [], []
    have, i, off = 0, 0, self._offset
    while have < width:
      if i == len(self._buf):
        self._pull()
      ids, doc = self._buf[i][1], self._buf[i][2]
      piece = ids[off:off + width - have]
      toks.append(piece)
      docs.append(np.full(len(piece), doc, np.int32))
      have, i, off = have + len(piece), i + 1, 0
    self._offset += self.seq_len
    while self._offset >= len(self._buf[0][1]):   # documents left behind: drop them
      self._offset -= len(self._buf[0][1])
      self._buf.pop(0)
      if not self._buf:
        self._pull()
    return np.concatenate(toks), np.concatenate(docs)

  def __next__(self) -> dict:
    rows = [self._row() for _ in range(self.global_batch)]
    n = self.global_batch // jax.process_count()
    mine = rows[jax.process_index() * n:(jax.process_index() + 1) * n]
    return window_batch(np.stack([r[0] for r in mine]), np.stack([r[1] for r in mine]))

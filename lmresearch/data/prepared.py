"""A corpus tokenized once (`python -m lmresearch.data.prepare`), read by random access.

On disk, per split, the token stream [BOS] doc [EOS] [BOS] doc [EOS] ... of the packing module,
cut into ArrayRecord shards; each record holds `chunk` consecutive token ids (a shard's last record
may be shorter). `meta.json` lists every shard with its token and document counts, and the
tokenizer (a copy sits beside it) with its sha256.

`PreparedDataset` gives the packed rows of `packing.PackedDataset` (same windows, segment ids,
positions, weights: a document starts at each BOS) without holding the corpus: a row reads the one
or two records it overlaps, so memory stays flat in the corpus size and each process reads only
the rows of its share of the batch.
"""
from __future__ import annotations

import hashlib

import numpy as np
from etils import epath

from lmresearch.core import fileio
from lmresearch.data.packing import bos_window_batch
from lmresearch.core.errors import ConfigError

META = 'meta.json'
DTYPES = ('uint16', 'int32')


def token_dtype(vocab_size: int) -> str:
  return 'uint16' if vocab_size <= 2 ** 16 else 'int32'


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with epath.Path(path).open('rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def read_meta(directory: str) -> dict:
  path = fileio.join(directory, META)
  if not fileio.exists(path):
    raise ConfigError(f'config.data.path={directory!r}: no {META} there; prepare the corpus with '
                      f'`python -m lmresearch.data.prepare --out={directory} ...` (a shard-only '
                      'directory is an unfinished prepare: rerun it to finish).')
  return fileio.read_json(path)


def check_tokenizer(directory: str, tok, tokenizer_path: str = '') -> None:
  """The run must encode with the tokenizer the corpus was prepared with."""
  meta = read_meta(directory)
  if tok.vocab_size != meta['vocab_size'] or tok.bos_id != meta['bos_id']:
    raise ConfigError(f'{directory} was prepared with a {meta["vocab_size"]}-token tokenizer '
                      f'({directory}/{meta["tokenizer"]}); this run has {tok.vocab_size} tokens. '
                      'Leave config.data.tokenizer_path empty to use the prepared one.')
  if tokenizer_path:
    path = fileio.join(tokenizer_path, meta['tokenizer']) if fileio.isdir(
        tokenizer_path) else tokenizer_path
    if file_sha256(path) != meta['tokenizer_sha256']:
      raise ConfigError(f'config.data.tokenizer_path={tokenizer_path!r} is not the tokenizer '
                        f'{directory} was prepared with; leave it empty to use that one.')


class PreparedDataset:
  """Rows of seq_len + 1 tokens of one split's stream, by index (len() and rows() as grain's
  train_iterator and eval_batches expect). `tokens_read` counts the tokens this process loaded."""

  def __init__(self, directory: str, split: str, seq_len: int, bos_id: int):
    meta = read_meta(directory)
    if split not in meta['splits']:
      raise ConfigError(f'{directory}/{META} has no {split!r} split (it has '
                        f'{sorted(meta["splits"])}); prepare it again with that split.')
    shards = meta['splits'][split]['shards']
    self.chunk, self.dtype = meta['chunk'], np.dtype(meta['dtype'])
    self.seq_len, self.bos_id, self.tokens_read = seq_len, bos_id, 0
    counts = np.array([s['tokens'] for s in shards], np.int64)
    self.token_start = np.concatenate([[0], np.cumsum(counts)])
    self.record_start = np.concatenate([[0], np.cumsum(-(-counts // self.chunk))])
    self.paths = [fileio.join(directory, s['file']) for s in shards]
    self.readers = {}   # shard -> ArrayRecordReader, opened on first use
    self.num_windows = (int(self.token_start[-1]) - 1) // seq_len
    if self.num_windows < 1:
      raise ValueError(f'{directory} ({split}) holds {self.token_start[-1]} tokens: fewer than one '
                       f'sequence of length {seq_len} + 1; add data or lower config.data.seq_len.')

  def __len__(self) -> int:
    return self.num_windows

  def spans(self, starts: np.ndarray, width: int) -> np.ndarray:
    """[len(starts), width] global tokens of the stream from each start, read in one batched
    ArrayRecord call (a call per row costs a thread-pool round trip each), vectorized."""
    a = np.asarray(starts, np.int64)
    s = np.searchsorted(self.token_start, a, side='right') - 1
    base, end = self.token_start[s], self.token_start[s + 1]
    first = (a - base) // self.chunk                       # each span's first record in its shard
    first_token = base + first * self.chunk
    last = np.empty_like(first)                            # ... and last, shard by shard
    crosses = a + width > end
    last[~crosses] = (a[~crosses] + width - 1 - base[~crosses]) // self.chunk
    rec0 = self.record_start[s] + first
    wanted = [rec0[~crosses] + k for k in range(int((last - first)[~crosses].max(initial=0)) + 1)]
    wanted = [w[w <= (self.record_start[s] + last)[~crosses]] for w in wanted]
    for i in np.flatnonzero(crosses):                      # a span over a shard boundary: rare
      stop, t, sh = int(a[i] + width), int(a[i]), int(s[i])
      while t < stop:
        lo = (t - int(self.token_start[sh])) // self.chunk
        hi = (min(stop, int(self.token_start[sh + 1])) - 1 - int(self.token_start[sh])) // self.chunk
        wanted.append(int(self.record_start[sh]) + np.arange(lo, hi + 1))
        t, sh = int(self.token_start[sh + 1]), sh + 1
    wanted = np.unique(np.concatenate(wanted)) if wanted else np.zeros(0, np.int64)
    parts = [np.frombuffer(b, self.dtype) for b in self._read(wanted)]
    # A span's records are consecutive in the stream, so they sit side by side in `buf` too.
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])[:-1]]).astype(np.int64)
    buf = np.concatenate(parts)
    at = offsets[np.searchsorted(wanted, rec0)] + (a - first_token)
    out = buf[at[:, None] + np.arange(width)[None, :]].astype(np.int32)
    self.tokens_read += out.size
    return out

  def _read(self, records: np.ndarray) -> list[bytes]:
    """Records by global index (sorted), one batched read per shard file, in this thread (grain's
    ArrayRecordDataSource would start a thread-pool task per file a batch touches)."""
    from array_record.python.array_record_module import ArrayRecordReader
    shard = np.searchsorted(self.record_start, records, side='right') - 1
    out = []
    for sh in np.unique(shard):
      if sh not in self.readers:
        # A gs:// shard is read by array_record's own GCS client (riegeli's, 0.8.6 and later).
        self.readers[sh] = ArrayRecordReader(self.paths[sh], 'readahead_buffer_size:0')
      local = records[shard == sh] - self.record_start[sh]
      out += self.readers[sh].read([int(i) for i in local])
    return out

  def rows(self, indices: np.ndarray) -> dict:
    t = self.seq_len
    toks = self.spans(np.asarray(indices, np.int64) * t, t + 1)
    return bos_window_batch(toks, self.bos_id)


"""Hugging Face `datasets` as a data source: config.data.source='hf'.

config.data.hf_path names a `save_to_disk` directory, local data files (a file or glob of
.parquet / .json / .jsonl / .arrow / .csv / .txt), or anything `datasets.load_dataset` takes (a
hub name, with hf_name and hf_data_files, read where the hub is reachable). Its rows go through
the same converters as JSONL lines (formats.load: chat_row, ranking_row, prompt_row), so the schemas
the ecosystem ships ("messages"; "prompt"/"completion"; "prompt"/"chosen"/"rejected" as strings
or message lists; "text") land in the internal formats, and from there in the same chat
templates, packing and checkpointable iterators as every other source.

With hf_streaming the split is an IterableDataset: pretraining packs its text as it streams
(`TextStream` + packing.StreamIterator) instead of holding the corpus, and resumes from the
dataset's own state_dict. A row that does not fit is one line naming the dataset, row and column.
`datasets` is imported only here, when the source is 'hf'.
"""
from __future__ import annotations

import glob
import itertools
import os

from lmresearch.core.errors import ConfigError

# load_dataset's packaged builders, by file extension (a local hf_path that is a file or glob)
BUILDERS = {'.parquet': 'parquet', '.json': 'json', '.jsonl': 'json', '.arrow': 'arrow',
            '.csv': 'csv', '.txt': 'text'}
TOKENIZER_DOCS = 10_000   # a streamed corpus trains its tokenizer on this many first documents


def datasets_module():
  try:
    import datasets
  except ImportError:
    raise ConfigError("config.data.source='hf' reads Hugging Face datasets, which is not "
                      'installed: pip install -e .[hf]') from None
  return datasets


def split_name(dc, split: str) -> str:
  """Our split ('train' / anything held out) -> the dataset's: hf_split, or hf_eval_split when
  set (else the held-out rows are the tail of hf_split, cut by the caller)."""
  return dc.hf_split if split == 'train' or not dc.hf_eval_split else dc.hf_eval_split


def describe(dc, split: str) -> str:
  return f'{dc.hf_path} [{split_name(dc, split)}]'


def _data_files(spec: str):
  """'a.parquet' or 'train=a.parquet,test=b*.parquet' -> what load_dataset's data_files takes."""
  if not spec or '=' not in spec:
    return spec or None
  out = {}
  for part in spec.split(','):
    name, _, files = part.partition('=')
    if not files:
      raise ConfigError(f'config.data.hf_data_files={spec!r}: expected FILES or '
                        "'split=FILES,split=FILES'.")
    out[name.strip()] = files.strip()
  return out


def _is_saved(path: str) -> bool:
  """A `save_to_disk` directory (one Dataset or a DatasetDict)."""
  return any(os.path.exists(os.path.join(path, f)) for f in ('state.json', 'dataset_dict.json'))


def _builder(files: list[str]) -> str:
  name = files[0][:-3] if files[0].endswith('.gz') else files[0]
  ext = os.path.splitext(name)[1].lower()
  if ext not in BUILDERS:
    raise ConfigError(f'config.data.hf_path={files[0]!r}: no datasets builder for {ext or "no"} '
                      f'files; expected one of {sorted(BUILDERS)} or a save_to_disk directory.')
  return BUILDERS[ext]


def open_split(dc, split: str, streaming: bool = False):
  """The split as a datasets.Dataset, or an IterableDataset when streaming (rows as Python)."""
  datasets = datasets_module()
  path, name = dc.hf_path, split_name(dc, split)
  if not path:
    raise ConfigError("config.data.hf_path is empty: name a save_to_disk directory, data files "
                      "(.parquet, .jsonl, .arrow, ...) or a hub dataset, e.g. 'HuggingFaceH4/"
                      "ultrafeedback_binarized'.")
  local = os.path.expanduser(path)
  try:
    if os.path.isdir(local) and _is_saved(local):
      ds = datasets.load_from_disk(local)
      if isinstance(ds, datasets.DatasetDict):
        if name not in ds:
          raise ConfigError(f'config.data.hf_path={path!r} holds splits {sorted(ds)}, not {name!r}; '
                            'set config.data.hf_split / hf_eval_split.')
        ds = ds[name]
      elif name != dc.hf_split:   # one saved Dataset is one split
        raise ConfigError(f'config.data.hf_path={path!r} is one saved split, so there is no '
                          f'{name!r}; leave config.data.hf_eval_split empty to hold out its tail.')
      ds = ds.to_iterable_dataset() if streaming else ds
    elif not os.path.isdir(local) and glob.glob(local):   # local data files
      files = sorted(glob.glob(local))
      ds = datasets.load_dataset(_builder(files), data_files={dc.hf_split: files}, split=name,
                                 streaming=streaming)
    else:   # a local data directory, a packaged builder with hf_data_files, or a hub dataset
      ds = datasets.load_dataset(path, name=dc.hf_name or None,
                                 data_files=_data_files(dc.hf_data_files), split=name,
                                 streaming=streaming)
  except ConfigError:
    raise
  except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:   # no file, unknown split,
    raise load_error(dc, split, e) from None                            # offline, a bad file
  return ds.with_format(None)


def load_error(dc, split: str, e: Exception) -> ConfigError:
  """One line for what `datasets` raised (its generation errors carry the cause)."""
  cause = e.__cause__ if e.__cause__ is not None and 'datasets' in type(e).__module__ else e
  first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
  return ConfigError(f'config.data.hf_path={dc.hf_path!r} (split {split_name(dc, split)!r}) could '
                     f'not be loaded: {first}')


def iterate(ds, dc, split: str):
  """The rows of `ds`; a file that turns out unreadable while streaming is one line too."""
  it = iter(ds)
  while True:
    try:
      row = next(it)
    except StopIteration:
      return
    except ConfigError:
      raise
    except (OSError, ValueError) as e:   # pyarrow's ArrowInvalid is a ValueError
      raise load_error(dc, split, e) from None
    yield row


def _plain(row: dict) -> dict:
  """A row as the converters read it: a column that is null in this row is absent (JSON files
  with differing keys give every row every column, null where a line lacked it)."""
  return {k: v for k, v in row.items() if v is not None}


def row_error(dc, split: str, i: int, column: str, message: str, row: dict) -> ConfigError:
  """One line: the dataset and split, the row, the column, what is wrong (and, where the column
  is absent, the columns there are)."""
  absent = f" (the row's columns: {sorted(row)})" if column not in row else ''
  return ConfigError(f'{describe(dc, split)} row {i}, column {column!r}{absent}: {message}')


def examples(dc, split: str):
  """(row index, row) of the split in order, a null column left out of its row (formats.load
  converts each to the internal format)."""
  for i, row in enumerate(iterate(open_split(dc, split, dc.hf_streaming), dc, split)):
    yield i, _plain(row)


def text_of(dc, split: str, i: int, row: dict) -> str:
  key = dc.text_key
  value = row.get(key)
  if not isinstance(value, str):
    what = 'no such column' if key not in row else f'expected a string, got {type(value).__name__}'
    raise row_error(dc, split, i, key, f'{what}; set config.data.text_key to the text column.', row)
  return value


def texts(dc, split: str) -> list[str]:
  """The text column of the split (the first max_docs rows when set), for sources.documents."""
  ds = open_split(dc, split, dc.hf_streaming)
  n = dc.max_docs or None
  rows = itertools.islice(iterate(ds, dc, split), n)
  return [text_of(dc, split, i, r) for i, r in enumerate(rows)]


class TextStream:
  """The text column of a split, streamed, as packing.StreamIterator reads it: documents from a
  position on, epoch after epoch. A position is JSON (it goes in the checkpoint): the epoch, the
  row, and the IterableDataset's state_dict before that row (None: the epoch's start). `skip`
  rows at the start of each epoch are left out (the held-out head, see `pretraining`)."""

  def __init__(self, dc, split: str, skip: int = 0):
    self.dc, self.split, self.skip = dc, split, skip

  def start(self) -> dict:
    return {'epoch': 0, 'row': 0, 'hf': None}

  def documents(self, position: dict):
    """Yields (position before the document, its text), forever."""
    epoch, row, hf_state = position['epoch'], position['row'], position['hf']
    while True:
      ds = open_split(self.dc, self.split, streaming=True)
      ds.set_epoch(epoch)
      if hf_state is not None:
        ds.load_state_dict(hf_state)
      found = False
      for example in iterate(ds, self.dc, self.split):
        if row >= self.skip:
          found = True
          yield {'epoch': epoch, 'row': row, 'hf': hf_state}, text_of(self.dc, self.split, row,
                                                                      example)
        row += 1
        hf_state = ds.state_dict()   # the state after the rows yielded so far
      if not found and position['row'] == 0 and position['hf'] is None:
        raise ConfigError(f'{describe(self.dc, self.split)}: no documents to train on '
                          f'({row} rows, {self.skip} held out for evaluation).')
      epoch, row, hf_state = epoch + 1, 0, None
      position = self.start()

  def first_texts(self, n: int) -> list[str]:
    """Up to n documents of the first epoch (e.g. to train a tokenizer)."""
    out = []
    for pos, text in self.documents(self.start()):
      if pos['epoch'] > 0 or len(out) >= n:
        break
      out.append(text)
    return out


def pretraining(dc, tok, train_cfg):
  """A streamed pretraining corpus: (the training TextStream, the held-out PackedDataset or None).

  The held-out set is read first, as many documents as the evaluation's batches need: from
  hf_eval_split, or else the first documents of hf_split, which training then skips (a stream
  has no tail to hold out)."""
  from lmresearch.data import packing
  if train_cfg.eval_every <= 0:
    return TextStream(dc, 'train'), None
  need = train_cfg.eval_batches * train_cfg.batch_size * dc.seq_len + 1
  source = TextStream(dc, 'validation' if dc.hf_eval_split else 'train')
  docs, have = [], 0
  for pos, text in source.documents(source.start()):
    if pos['epoch'] > 0 or have >= need:
      break
    docs.append(tok.encode(text))
    have += len(docs[-1]) + 2
  eval_ds = packing.PackedDataset.from_token_lists(docs, dc.seq_len, tok.bos_id, tok.eos_id)
  return TextStream(dc, 'train', skip=0 if dc.hf_eval_split else len(docs)), eval_ds


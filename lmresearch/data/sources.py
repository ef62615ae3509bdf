"""Where text comes from: the embedded world, local text/JSONL files, TFDS, or a Hugging Face
dataset (data/hf.py).

Each source returns a list of documents (strings) for a split. Bad input stops with a message
that names the file and line, or the key to change.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Iterator

from etils import epath

from lmresearch.core import fileio
from lmresearch.data import world
from lmresearch.core.errors import ConfigError


def read_jsonl(path: str) -> Iterator[tuple[int, dict]]:
  """Yields (line_number, object); a malformed line is an error naming file and line."""
  if not fileio.exists(path):
    raise ConfigError(f'{path}: no such file.')
  with epath.Path(path).open('r', encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ConfigError(f'{path}:{n}: malformed JSON ({e.msg}); fix or remove that line.') from None
      if not isinstance(obj, dict):
        raise ConfigError(f'{path}:{n}: expected a JSON object per line, got {type(obj).__name__}.')
      yield n, obj


def paths(pattern: str) -> list[str]:
  if not pattern:
    raise ConfigError('config.data.path is empty: name a file (or glob) for this data source.')
  if fileio.is_remote(pattern):   # gs://bucket/dir/*.txt: the last part may be a glob
    parent, name = pattern.rsplit('/', 1)
    paths = sorted(os.fspath(p) for p in epath.Path(parent).glob(name))
  else:
    paths = sorted(glob.glob(os.path.expanduser(pattern)))
  if not paths:
    raise ConfigError(f'config.data.path={pattern!r}: no such file.')
  return paths


def split_docs(docs: list, split: str, val_fraction: float) -> list:
  cut = len(docs) - max(1, int(round(len(docs) * val_fraction))) if len(docs) > 1 else len(docs)
  return docs[:cut] if split == 'train' else docs[cut:]


def text_file(path: str, split: str, val_fraction: float) -> str:
  """One text file as one document: its first or last part (nanoGPT's 90/10 split)."""
  text = fileio.read_text(path)
  cut = int(len(text) * (1 - val_fraction))
  return text[:cut] if split == 'train' else text[cut:]


def jsonl_file(path: str, key: str) -> list[str]:
  docs = []
  for n, obj in read_jsonl(path):
    if key not in obj or not isinstance(obj[key], str):
      raise ConfigError(f'{path}:{n}: no string field {key!r} (set config.data.text_key).')
    docs.append(obj[key])
  return docs


def text_documents(data_cfg, split: str) -> list[str]:
  """Plain text: each file is one document; the last val_fraction of characters is held out."""
  docs = [text_file(p, split, data_cfg.val_fraction) for p in paths(data_cfg.path)]
  return [d for d in docs if d]


def jsonl_documents(data_cfg, split: str) -> list[str]:
  docs = [d for p in paths(data_cfg.path) for d in jsonl_file(p, data_cfg.text_key)]
  return split_docs(docs, split, data_cfg.val_fraction)


def tfds_source(data_cfg, split: str):
  """A TFDS split through `tfds.data_source` (array_record, no TensorFlow needed) and how many of
  its documents to read."""
  import tensorflow_datasets as tfds
  if not data_cfg.tfds_name:
    raise ConfigError("config.data.tfds_name is empty: name a TFDS dataset, e.g. 'lm1b'.")
  tfds_split = data_cfg.tfds_train_split if split == 'train' else data_cfg.tfds_eval_split
  source = tfds.data_source(data_cfg.tfds_name, split=tfds_split,
                            data_dir=data_cfg.tfds_data_dir or None)
  return source, len(source) if not data_cfg.max_docs else min(len(source), data_cfg.max_docs)


def tfds_text(source, i: int, key: str) -> str:
  value = source[i][key]
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def tfds_documents(data_cfg, split: str) -> list[str]:
  source, n = tfds_source(data_cfg, split)
  return [tfds_text(source, i, data_cfg.text_key) for i in range(n)]


def synthetic_documents(data_cfg, split: str) -> list[str]:
  n = data_cfg.synthetic.num_docs
  if split != 'train':
    n = max(1, int(n * data_cfg.val_fraction))
  return world.corpus(data_cfg.synthetic.world_seed, n, split,
                      data_cfg.synthetic.worked_fraction)


def hf_documents(data_cfg, split: str) -> list[str]:
  """The text column (config.data.text_key) of a Hugging Face dataset split; without
  hf_eval_split the last val_fraction of hf_split's documents is held out."""
  from lmresearch.data import hf   # imports `datasets` only for this source
  docs = hf.texts(data_cfg, split)
  return docs if data_cfg.hf_eval_split else split_docs(docs, split, data_cfg.val_fraction)


SOURCES = {'synthetic': synthetic_documents, 'text': text_documents, 'jsonl': jsonl_documents,
           'tfds': tfds_documents, 'hf': hf_documents}


def documents(data_cfg, split: str) -> list[str]:
  if data_cfg.source == 'prepared':
    raise ConfigError("config.data.source='prepared' is read by pretraining only (a corpus "
                      'tokenized by lmresearch.data.prepare); this stage reads documents.')
  if data_cfg.source not in SOURCES:
    raise ConfigError(f'config.data.source={data_cfg.source!r}: expected one of {sorted(SOURCES)}.')
  docs = SOURCES[data_cfg.source](data_cfg, split)
  if not docs:
    raise ConfigError(f'config.data ({data_cfg.source}, {split} split) yielded no documents.')
  return docs

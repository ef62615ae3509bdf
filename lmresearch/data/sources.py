"""Where text comes from: the embedded world, local text/JSONL files, or TFDS.

Each source returns a list of documents (strings) for a split. Bad input stops with a message
that names the file and line, or the key to change.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Iterator

from lmresearch.data import world
from lmresearch.errors import ConfigError


def read_jsonl(path: str) -> Iterator[tuple[int, dict]]:
  """Yields (line_number, object); a malformed line is an error naming file and line."""
  if not os.path.exists(path):
    raise ConfigError(f'{path}: no such file.')
  with open(path, encoding='utf-8') as f:
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


def _paths(pattern: str) -> list[str]:
  if not pattern:
    raise ConfigError('config.data.path is empty: name a file (or glob) for this data source.')
  paths = sorted(glob.glob(os.path.expanduser(pattern)))
  if not paths:
    raise ConfigError(f'config.data.path={pattern!r}: no such file.')
  return paths


def _split(docs: list, split: str, val_fraction: float) -> list:
  cut = len(docs) - max(1, int(round(len(docs) * val_fraction))) if len(docs) > 1 else len(docs)
  return docs[:cut] if split == 'train' else docs[cut:]


def text_documents(data_cfg, split: str) -> list[str]:
  """Plain text: each file is one document; the last val_fraction of characters is held out
  (nanoGPT's 90/10 split of tinyshakespeare)."""
  docs = []
  for p in _paths(data_cfg.path):
    with open(p, encoding='utf-8') as f:
      text = f.read()
    cut = int(len(text) * (1 - data_cfg.val_fraction))
    docs.append(text[:cut] if split == 'train' else text[cut:])
  return [d for d in docs if d]


def jsonl_documents(data_cfg, split: str) -> list[str]:
  key = data_cfg.text_key
  docs = []
  for p in _paths(data_cfg.path):
    for n, obj in read_jsonl(p):
      if key not in obj or not isinstance(obj[key], str):
        raise ConfigError(f'{p}:{n}: no string field {key!r} (set config.data.text_key).')
      docs.append(obj[key])
  return _split(docs, split, data_cfg.val_fraction)


def tfds_documents(data_cfg, split: str) -> list[str]:
  """A TFDS dataset through `tfds.data_source` (array_record, no TensorFlow needed)."""
  import tensorflow_datasets as tfds
  name = data_cfg.tfds_name
  if not name:
    raise ConfigError("config.data.tfds_name is empty: name a TFDS dataset, e.g. 'lm1b'.")
  tfds_split = data_cfg.tfds_train_split if split == 'train' else data_cfg.tfds_eval_split
  source = tfds.data_source(name, split=tfds_split, data_dir=data_cfg.tfds_data_dir or None)
  n = len(source) if not data_cfg.max_docs else min(len(source), data_cfg.max_docs)
  docs = []
  for i in range(n):
    value = source[i][data_cfg.text_key]
    docs.append(value.decode('utf-8') if isinstance(value, bytes) else str(value))
  return docs


def synthetic_documents(data_cfg, split: str) -> list[str]:
  n = data_cfg.synthetic.num_docs
  if split != 'train':
    n = max(1, int(n * data_cfg.val_fraction))
  return world.corpus(data_cfg.synthetic.world_seed, n, split,
                      data_cfg.synthetic.worked_fraction)


SOURCES = {'synthetic': synthetic_documents, 'text': text_documents, 'jsonl': jsonl_documents,
           'tfds': tfds_documents}


def documents(data_cfg, split: str) -> list[str]:
  if data_cfg.source not in SOURCES:
    raise ConfigError(f'config.data.source={data_cfg.source!r}: expected one of {sorted(SOURCES)}.')
  docs = SOURCES[data_cfg.source](data_cfg, split)
  if not docs:
    raise ConfigError(f'config.data ({data_cfg.source}, {split} split) yielded no documents.')
  return docs

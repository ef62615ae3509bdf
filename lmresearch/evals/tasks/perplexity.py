"""Held-out text -> mean loss per token, perplexity and bits per byte."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lmresearch.core import fileio, parallel
from lmresearch.data import packing
from lmresearch.data import world as world_lib
from lmresearch.data.sources import read_jsonl
from lmresearch.core.errors import ConfigError
from lmresearch.evals.tasks.base import Task, TaskKind, num_examples
from lmresearch.models.logprobs import token_nll


class Perplexity(TaskKind):
  name = 'perplexity'

  def examples(self, data, world_seed, limit):
    if not data:
      return Task(self.name, [{'text': t} for t in world_lib.corpus(world_seed, num_examples(limit), 'test')])
    return Task(self.name, [{'text': t} for t in _texts(data)[:limit]], data)

  def judge(self, task, run, *, other=None, reward_model=None, batch_size: int = 32, **kw):
    return perplexity(task, run, batch_size)


def _texts(path: str) -> list[str]:
  """A .jsonl file's "text" fields, or any other file as one document."""
  if path.endswith('.jsonl'):
    texts = []
    for n, obj in read_jsonl(path):
      if not isinstance(obj.get('text'), str):
        raise ConfigError(f'{path}:{n}: expected {{"text": str}}.')
      texts.append(obj['text'])
    return texts
  if not fileio.exists(path):
    raise ConfigError(f'{path}: no such file.')
  return [fileio.read_text(path)]


def perplexity(task: Task, run, batch_size: int = 32) -> tuple[dict, list[dict]]:
  """Documents packed as [BOS] doc [EOS] into rows of the model's training length (no attention
  across documents); every token after a BOS is predicted once, EOS included. Bits per byte =
  total nats / (ln 2 * total UTF-8 bytes), comparable across tokenizers."""
  texts = [ex['text'] for ex in task.examples]
  tok = run.tok
  seq_len = run.config.data.seq_len if run.config is not None else run.model.cfg.max_len
  docs = [[tok.bos_id] + ids + [tok.eos_id] for ids in tok.encode_batch(texts)]
  tokens = np.concatenate([np.asarray(d, np.int32) for d in docs])
  doc_ids = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
  pad = -(len(tokens) - 1) % seq_len   # fill the last row; each pad its own doc, so never a target
  tokens = np.concatenate([tokens, np.full(pad, tok.pad_id, np.int32)])
  doc_ids = np.concatenate([doc_ids, len(docs) + np.arange(pad)])
  ds = packing.PackedDataset(tokens, doc_ids, seq_len)
  last = len(ds) - 1

  @jax.jit
  def weighted_nll(params, batch):
    logits = run.model.apply({'params': params}, batch['inputs'], batch['positions'],
                             batch['segment_ids']).astype(jnp.float32)
    return token_nll(logits, batch['targets'])[0] * batch['weights']

  rows, n_ids = run.batch_rows(batch_size), len(docs) + pad
  nats, counts = np.zeros(n_ids), np.zeros(n_ids)   # per document
  with run.active():
    for start in range(0, len(ds), rows):
      idx = np.arange(start, start + rows)
      batch = ds.rows(np.minimum(idx, last))
      batch['weights'][idx > last] = 0   # filler rows
      nll = np.asarray(parallel.fetch(weighted_nll(run.params, batch))).ravel()
      # Row i predicts tokens i * seq_len + 1 ... (i + 1) * seq_len of the stream.
      owner = doc_ids[np.minimum(idx, last)[:, None] * seq_len + np.arange(1, seq_len + 1)].ravel()
      nats += np.bincount(owner, nll, n_ids)
      counts += np.bincount(owner, batch['weights'].ravel(), n_ids)
  sizes = [len(t.encode('utf-8')) for t in texts]
  records = [{'text': t, 'tokens': int(c), 'loss': n / max(c, 1),
              'bits_per_byte': n / (math.log(2) * max(b, 1))}
             for t, n, c, b in zip(texts, nats, counts, sizes)]
  total, count, size = nats.sum(), counts.sum(), sum(sizes)
  return {'task': task.name, 'num_documents': len(texts), 'tokens': int(count), 'bytes': size,
          'loss': total / count, 'perplexity': math.exp(total / count),
          'bits_per_byte': total / (math.log(2) * size)}, records

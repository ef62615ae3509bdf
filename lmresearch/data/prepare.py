"""Tokenize a corpus once into ArrayRecord shards that pretraining reads by random access.

  python -m lmresearch.data.prepare --config=configs/pretrain.py \
      --config.data.source=jsonl --config.data.path='corpus/*.jsonl' \
      --tokenizer=runs/demo/pretrain --out=data/prepared [--workers=2]
  python -m lmresearch.main --config=configs/pretrain.py --workdir=runs/x \
      --config.data.source=prepared --config.data.path=data/prepared

The corpus is the run config's own `config.data` (text glob, JSONL, TFDS by name, the embedded
world), both splits. A shard is one input file (text, JSONL: its last val_fraction of documents,
or characters, is the validation split) or `--docs_per_shard` documents of a TFDS split or the
world. Worker processes tokenize shards in parallel; each shard lands whole (temporary name, then
rename, then its `.json` sidecar), so an interrupted prepare reruns only the shards without one.
`meta.json`, written last, is what pretraining reads (see `data/prepared.py` for the layout).
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys

import ml_collections
import numpy as np

from lmresearch.core import fileio
from lmresearch.text import tokenizers
from lmresearch.data import prepared, sources
from lmresearch.core.errors import ConfigError

SPLITS = ('train', 'validation')


@dataclasses.dataclass(frozen=True)
class Shard:
  split: str
  index: int
  path: str = ''            # an input file (text, jsonl)
  start: int = 0            # or documents [start, stop) of the split (tfds, synthetic)
  stop: int = 0

  @property
  def name(self) -> str:
    return f'{self.split}/shard-{self.index:05d}'


def plan(dc, docs_per_shard: int) -> list[Shard]:
  """Every shard of both splits, in stream order (deterministic: a rerun finds the same plan)."""
  out = []
  for split in SPLITS:
    if dc.source in ('text', 'jsonl'):
      out += [Shard(split, i, path=p) for i, p in enumerate(sources.paths(dc.path))]
      continue
    if dc.source == 'tfds':
      n = sources.tfds_source(dc, split)[1]
    elif dc.source == 'synthetic':
      n = len(sources.synthetic_documents(dc, split))
    else:
      raise ConfigError(f'config.data.source={dc.source!r}: prepare reads text, jsonl, tfds or '
                        'synthetic.')
    out += [Shard(split, i, start=a, stop=min(n, a + docs_per_shard))
            for i, a in enumerate(range(0, n, docs_per_shard))]
  return out


def shard_documents(dc, shard: Shard) -> list[str]:
  if dc.source == 'text':
    text = sources.text_file(shard.path, shard.split, dc.val_fraction)
    return [text] if text else []
  if dc.source == 'jsonl':
    return sources.split_docs(sources.jsonl_file(shard.path, dc.text_key), shard.split,
                              dc.val_fraction)
  if dc.source == 'tfds':
    source = sources.tfds_source(dc, shard.split)[0]
    return [sources.tfds_text(source, i, dc.text_key) for i in range(shard.start, shard.stop)]
  return sources.synthetic_documents(dc, shard.split)[shard.start:shard.stop]


def write_shard(job) -> dict:
  """One shard: tokenize its documents into the [BOS] doc [EOS] stream, `chunk` ids a record."""
  from array_record.python.array_record_module import ArrayRecordWriter
  dc, tokenizer_path, out, shard, chunk, dtype = job
  dc = ml_collections.ConfigDict(dc)
  tok = tokenizers.load_tokenizer(tokenizer_path)
  docs = shard_documents(dc, shard)
  path = os.path.join(out, shard.name + '.arrayrecord')
  writer = ArrayRecordWriter(path + '.tmp', 'group_size:1,uncompressed')   # reads are CPU-bound
  pending, tokens = np.zeros(0, dtype), 0
  for b in range(0, len(docs), 1000):
    ids = tok.encode_batch(docs[b:b + 1000])
    stream = np.concatenate([np.asarray([tok.bos_id] + d + [tok.eos_id], dtype) for d in ids])
    pending = np.concatenate([pending, stream])
    full = len(pending) // chunk * chunk
    for r in range(0, full, chunk):
      writer.write(pending[r:r + chunk].tobytes())
    tokens, pending = tokens + full, pending[full:]
  if len(pending):
    writer.write(pending.tobytes())
    tokens += len(pending)
  writer.close()
  os.replace(path + '.tmp', path)
  info = {'file': shard.name + '.arrayrecord', 'tokens': int(tokens), 'docs': len(docs)}
  fileio.write_json(os.path.join(out, shard.name + '.json'), info)
  return info


def prepare(dc, tokenizer_path: str, out: str, workers: int = 1, docs_per_shard: int = 50_000,
            chunk: int = 2048, progress: bool = True) -> dict:
  """Writes the shards not yet written, then meta.json; returns the meta."""
  if fileio.is_remote(out):   # its resume renames a finished shard into place: a local move
    raise ConfigError(f'--out={out}: prepare into a local directory, then copy it up '
                      '(`gcloud storage cp -r`); pretraining reads the shards from gs:// itself.')
  tok = tokenizers.load_tokenizer(tokenizer_path)
  for split in SPLITS:
    os.makedirs(os.path.join(out, split), exist_ok=True)
  own_tok = os.path.join(out, tokenizers.FILENAME)
  if os.path.exists(own_tok):
    tok_file = tokenizer_path if tokenizer_path.endswith('.json') else fileio.join(
        tokenizer_path, tokenizers.FILENAME)
    if prepared.file_sha256(own_tok) != prepared.file_sha256(tok_file):
      raise ConfigError(f'--out={out} was prepared with another tokenizer ({own_tok}); '
                        'choose a new --out, or delete that directory.')
  else:
    tok.save(out)
  dtype = prepared.token_dtype(tok.vocab_size)
  shards = plan(dc, docs_per_shard)
  todo = [s for s in shards if not os.path.exists(os.path.join(out, s.name + '.json'))]
  jobs = [(dc.to_dict(), own_tok, out, s, chunk, dtype) for s in todo]
  if jobs:
    bar = _progress(len(shards), len(shards) - len(todo), progress)
    if workers > 1 and len(jobs) > 1:
      with multiprocessing.get_context('spawn').Pool(min(workers, len(jobs))) as pool:
        for _ in pool.imap_unordered(write_shard, jobs):
          bar.update(1)
    else:
      for job in jobs:
        write_shard(job)
        bar.update(1)
    bar.close()
  meta = {'format': 1, 'chunk': chunk, 'dtype': dtype, 'tokenizer': tokenizers.FILENAME,
          'tokenizer_sha256': prepared.file_sha256(own_tok), 'vocab_size': tok.vocab_size,
          'bos_id': tok.bos_id, 'eos_id': tok.eos_id, 'source': dc.to_dict(), 'splits': {}}
  for split in SPLITS:
    infos = []
    for s in (s for s in shards if s.split == split):
      with open(os.path.join(out, s.name + '.json')) as f:
        info = json.load(f)
      if info['tokens']:
        infos.append(info)
    meta['splits'][split] = {'tokens': sum(i['tokens'] for i in infos),
                             'docs': sum(i['docs'] for i in infos), 'shards': infos}
  fileio.write_json(os.path.join(out, prepared.META), meta, indent=1)
  return meta


def _progress(total: int, done: int, enabled: bool):
  from tqdm import tqdm
  return tqdm(total=total, initial=done, unit='shard', desc='prepare', disable=not enabled,
              file=sys.stderr)


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  try:
    tokenizer = f.tokenizer or f.config.data.tokenizer_path
    if not tokenizer:
      raise ConfigError('no tokenizer: pass --tokenizer=RUN_DIR (or a tokenizer.json), e.g. a '
                        'pretraining run on a sample of this corpus.')
    meta = prepare(f.config.data, tokenizer, f.out, f.workers, f.docs_per_shard, f.chunk)
  except (ConfigError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  for split, s in meta['splits'].items():
    print(f'{split}: {s["docs"]} documents, {s["tokens"]} tokens in {len(s["shards"])} shards')
  print(f'wrote {os.path.join(f.out, prepared.META)}')


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', 'configs/pretrain.py', 'Config whose config.data is '
                                  'the corpus (source, path, text_key, tfds_name, val_fraction).')
  flags.DEFINE_string('tokenizer', '', 'A run directory or tokenizer.json (default: '
                      'config.data.tokenizer_path).')
  flags.DEFINE_string('out', None, 'Output directory (resumable: rerun to finish).')
  flags.DEFINE_integer('workers', max(1, len(os.sched_getaffinity(0))), 'Tokenizer processes.')
  flags.DEFINE_integer('docs_per_shard', 50_000, 'Documents per shard (tfds, synthetic).')
  flags.DEFINE_integer('chunk', 2048, 'Token ids per ArrayRecord record.')
  flags.mark_flag_as_required('out')
  app.run(main)

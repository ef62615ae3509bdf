"""A corpus prepared once (lmresearch.data.prepare) reads back as the rows in-memory packing makes,
resumes by shard, and trains to the same losses."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, tiny
from lmresearch.text import tokenizers
from lmresearch.data import packing, prepare, prepared, sources
from lmresearch.core.errors import ConfigError


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """The embedded world (200 + 20 documents) in shards of 60 documents, 64 ids a record, so rows
  cross records and shards; and its tokenizer."""
  root = tmp_path_factory.mktemp('prepared')
  from conftest import load_config
  c = tiny(load_config('pretrain'))
  c.data.synthetic.num_docs = 200
  tok = tokenizers.train_tokenizer('bpe', sources.documents(c.data, 'train'), 300)
  tok.save(str(root))
  meta = prepare.prepare(c.data, str(root), str(root / 'out'), workers=1, docs_per_shard=60,
                         chunk=64, progress=False)
  return c, tok, root / 'out', meta


def test_prepared_rows_equal_in_memory_packing_in_both_splits(corpus):
  c, tok, out, meta = corpus
  assert [len(meta['splits'][s]['shards']) for s in ('train', 'validation')] == [4, 1]
  for split in ('train', 'validation'):
    docs = sources.documents(c.data, split)
    assert meta['splits'][split]['docs'] == len(docs)
    mem = packing.PackedDataset.from_token_lists(tok.encode_batch(docs), 32, tok.bos_id, tok.eos_id)
    disk = prepared.PreparedDataset(str(out), split, 32, tok.bos_id)
    assert len(disk) == len(mem) > 0
    idx = np.arange(len(mem))
    want, got = mem.rows(idx), disk.rows(idx)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert disk.tokens_read == len(idx) * 33   # reads only the rows asked for


def test_an_interrupted_prepare_rewrites_only_the_missing_shard(corpus, tmp_path):
  c, tok, out, meta = corpus
  copy = tmp_path / 'out'
  subprocess.run(['cp', '-r', str(out), str(copy)], check=True)
  os.remove(copy / 'train' / 'shard-00002.json')   # as if killed before that shard landed
  (copy / 'train' / 'shard-00002.arrayrecord').rename(copy / 'train' / 'shard-00002.arrayrecord.tmp')
  (copy / 'meta.json').unlink()
  before = {p: p.stat().st_mtime_ns for p in (copy / 'train').glob('*.arrayrecord')}
  again = prepare.prepare(c.data, str(copy), str(copy), docs_per_shard=60, chunk=64, progress=False)
  after = {p: p.stat().st_mtime_ns for p in (copy / 'train').glob('*.arrayrecord')}
  assert before == {p: t for p, t in after.items() if p.name != 'shard-00002.arrayrecord'}
  assert again['splits'] == meta['splits']


def test_another_tokenizer_is_refused_naming_the_key(corpus, tmp_path):
  c, tok, out, _ = corpus
  other = tokenizers.train_tokenizer('char', ['abc'])
  other.save(str(tmp_path))
  with pytest.raises(ConfigError, match='prepared with a'):
    prepared.check_tokenizer(str(out), other)
  with pytest.raises(ConfigError, match='no meta.json'):
    prepared.read_meta(str(tmp_path))


@pytest.mark.slow
def test_pretraining_on_the_prepared_corpus_logs_the_losses_of_the_in_memory_one(corpus, tmp_path):
  c, tok, out, _ = corpus
  common = ['--config=configs/pretrain.py', '--config.train.steps=3', '--config.train.batch_size=8',
            '--config.train.log_every=1', '--config.train.eval_every=3',
            '--config.train.eval_batches=1', '--config.checkpoint.every=0',
            '--config.model.num_layers=1', '--config.model.embed_dim=32',
            '--config.model.mlp_dim=64', '--config.model.num_heads=2', '--config.data.seq_len=32',
            f'--config.data.tokenizer_path={out}', '--cpu_devices=1']
  runs = {'mem': ['--config.data.synthetic.num_docs=200'],
          'disk': ['--config.data.source=prepared', f'--config.data.path={out}']}
  losses = {}
  for name, extra in runs.items():
    r = subprocess.run([sys.executable, '-m', 'lmresearch.main', f'--workdir={tmp_path / name}']
                       + common + extra, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / name / 'metrics.jsonl') as f:
      rows = [json.loads(line) for line in f]
    losses[name] = [(m.get('train/loss'), m.get('eval/loss')) for m in rows]
  assert any(e for _, e in losses['mem'])
  np.testing.assert_allclose(np.array(losses['disk'], float), np.array(losses['mem'], float),
                             rtol=1e-6)

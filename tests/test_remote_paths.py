"""A gs:// workdir: every file a run keeps beside its checkpoints (config, tokenizer, metrics,
reward offset, evaluation records, report) goes through etils.epath. Here gs:// is served by
fsspec's in-memory filesystem (no network): the same epath backend a pod uses with gcsfs.
Checkpoints are Orbax's own (tensorstore's gcs driver), not exercised here."""
import json

import pytest

from conftest import load_config, tiny
from lmresearch.training import config as lmc
from lmresearch.core import fileio
from lmresearch.text import tokenizers
from lmresearch.data import prepare, prepared, sources
from lmresearch.core.errors import ConfigError


@pytest.fixture
def gcs():
  """gs://bucket/... backed by a fresh in-memory store for the test; yields the store."""
  import fsspec
  from etils.epath import backend
  from fsspec.implementations.memory import MemoryFileSystem

  class FakeGCS(MemoryFileSystem):
    protocol = ('gs', 'gcs')
    root_marker = ''
    store = {}
    pseudo_dirs = ['']

    @classmethod
    def _strip_protocol(cls, path):   # as gcsfs: 'bucket/key', no leading slash
      for p in ('gs://', 'gcs://'):
        path = path[len(p):] if path.startswith(p) else path
      return path.strip('/')

  for name in ('gs', 'gcs'):
    fsspec.register_implementation(name, FakeGCS, clobber=True)
  backend.fsspec_backend._get_filesystem.cache_clear()
  yield FakeGCS.store
  backend.fsspec_backend._get_filesystem.cache_clear()


def test_atomic_writes_land_whole_on_gs_and_only_from_the_primary(gcs):
  fileio.write_json('gs://bucket/run/a.json', {'x': 1})
  assert fileio.read_json('gs://bucket/run/a.json') == {'x': 1}
  with pytest.raises(RuntimeError):
    with fileio.replacing('gs://bucket/run/a.json') as tmp:
      open(tmp, 'w').write('{"half')
      raise RuntimeError('killed mid-write')
  assert fileio.read_json('gs://bucket/run/a.json') == {'x': 1}   # the old object, whole
  fileio.set_primary(False)
  try:
    fileio.write_text('gs://bucket/run/b.txt', 'from process 1')
  finally:
    fileio.set_primary(True)
  assert not fileio.exists('gs://bucket/run/b.txt')
  assert list(gcs) == ['bucket/run/a.json']   # no temporaries left in the bucket


def test_remote_paths_stay_remote():
  assert fileio.absolute('gs://bucket/run') == 'gs://bucket/run'   # not $PWD/gs:/bucket/run
  assert fileio.join('gs://bucket/run', 'checkpoints') == 'gs://bucket/run/checkpoints'
  assert fileio.is_remote('gs://b/x') and not fileio.is_remote('/tmp/x')


@pytest.mark.parametrize('kind', ['char', 'bpe'])
def test_a_tokenizer_and_a_config_round_trip_through_gs(gcs, kind):
  c = tiny(load_config('pretrain'))
  tok = tokenizers.train_tokenizer(kind, sources.documents(c.data, 'train')[:50], 300)
  tok.save('gs://bucket/run')
  back = tokenizers.load_tokenizer('gs://bucket/run')
  text = 'The town of Amber'
  assert back.encode(text) == tok.encode(text) and back.vocab_size == tok.vocab_size
  lmc.save(c, 'gs://bucket/run')
  assert lmc.load('gs://bucket/run').model.embed_dim == c.model.embed_dim
  with pytest.raises(FileNotFoundError, match='gs://bucket/other/config.json'):
    lmc.load('gs://bucket/other')


def test_metrics_on_gs_append_truncate_on_resume_and_read_back(gcs, monkeypatch):
  import tensorboardX
  from lmresearch.training import metrics
  seen = []

  class Board:   # tensorboardX writes gs:// itself (google-cloud-storage); recorded here
    def __init__(self, logdir):
      seen.append(logdir)

    def add_scalar(self, *a):
      pass

    def close(self):
      pass

  monkeypatch.setattr(tensorboardX, 'SummaryWriter', Board)
  w = metrics.MetricWriter('gs://bucket/run')
  for step in (1, 2, 3):
    w.write(step, {'train/loss': 4.0 - step})
  w.close()
  assert seen == ['gs://bucket/run/tensorboard']
  assert [r['train/loss'] for r in metrics.read_metrics('gs://bucket/run')] == [3.0, 2.0, 1.0]
  w = metrics.MetricWriter('gs://bucket/run')   # a resumed run, from the step-2 checkpoint
  w.truncate_after(2)
  w.write(3, {'train/loss': 0.5})
  assert [(r['step'], r['train/loss']) for r in metrics.read_metrics('gs://bucket/run')] == [
      (1, 3.0), (2, 2.0), (3, 0.5)]


def test_text_and_jsonl_sources_read_from_gs(gcs):
  for i in range(3):
    fileio.write_text(f'gs://bucket/corpus/part-{i}.jsonl',
                      ''.join(json.dumps({'text': f'doc {i}.{j}'}) + '\n' for j in range(4)))
  fileio.write_text('gs://bucket/corpus/notes.txt', 'not matched')
  found = sources.paths('gs://bucket/corpus/*.jsonl')
  assert found == [f'gs://bucket/corpus/part-{i}.jsonl' for i in range(3)]
  assert sources.jsonl_file(found[1], 'text') == [f'doc 1.{j}' for j in range(4)]
  fileio.write_text('gs://bucket/corpus/bad.jsonl', '{"text": "ok"}\n{oops\n')
  with pytest.raises(ConfigError, match='gs://bucket/corpus/bad.jsonl:2: malformed JSON'):
    sources.jsonl_file('gs://bucket/corpus/bad.jsonl', 'text')


def test_a_prepared_corpus_on_gs_reads_its_meta_and_tokenizer_through_epath(gcs, tmp_path):
  """The shards themselves are opened by array_record's own GCS client, not exercised here."""
  c = tiny(load_config('pretrain'))
  c.data.synthetic.num_docs = 40
  tok = tokenizers.train_tokenizer('bpe', sources.documents(c.data, 'train'), 300)
  tok.save(str(tmp_path))
  with pytest.raises(ConfigError, match='gcloud storage cp'):
    prepare.prepare(c.data, str(tmp_path), 'gs://bucket/data', progress=False)
  local = tmp_path / 'out'
  prepare.prepare(c.data, str(tmp_path), str(local), docs_per_shard=20, chunk=64, progress=False)
  for f in sorted(local.rglob('*')):
    if f.is_file():
      fileio.write_bytes(f'gs://bucket/data/{f.relative_to(local)}', f.read_bytes())
  prepared.check_tokenizer('gs://bucket/data', tok, 'gs://bucket/data')
  remote = prepared.PreparedDataset('gs://bucket/data', 'train', 32, tok.bos_id)
  assert len(remote) == len(prepared.PreparedDataset(str(local), 'train', 32, tok.bos_id))
  assert remote.paths[0].startswith('gs://bucket/data/train/')
  other = tokenizers.train_tokenizer('bpe', sources.documents(c.data, 'train')[:20], 280)
  with pytest.raises(ConfigError, match='prepared with a'):
    prepared.check_tokenizer('gs://bucket/data', other)

"""Multi-process jobs on one machine: the same numbers as one process with the same mesh."""
import pytest

import multiprocess
from lmresearch.data import packing
from lmresearch.training.metrics import read_metrics

TINY = ['--config=configs/pretrain.py', '--config.train.steps=3', '--config.train.batch_size=8',
        '--config.train.log_every=1', '--config.train.eval_every=0', '--config.checkpoint.every=3',
        '--config.checkpoint.use_async=False', '--config.model.num_layers=1',
        '--config.model.embed_dim=32', '--config.model.mlp_dim=64', '--config.model.num_heads=2',
        '--config.model.num_kv_heads=1', '--config.data.synthetic.num_docs=200',
        '--config.data.seq_len=64', '--config.data.vocab_size=300']


@pytest.mark.slow
def test_pretraining_on_two_processes_logs_the_losses_of_one(tmp_path):
  one = multiprocess.run(['-m', 'lmresearch.main', f'--workdir={tmp_path}/one'] + TINY, 1, 4)
  two = multiprocess.run(['-m', 'lmresearch.main', f'--workdir={tmp_path}/two'] + TINY, 2, 2)
  for r in one + two:
    assert r.returncode == 0, r.output[-3000:]
  loss = lambda w: [m['train/loss'] for m in read_metrics(w) if 'train/loss' in m]
  assert len(loss(tmp_path / 'one')) == 3
  assert loss(tmp_path / 'two') == pytest.approx(loss(tmp_path / 'one'), rel=1e-5)
  assert all('[Gloo] Rank' in r.output for r in two)   # the two really joined one job


READ_ROWS = '''
import json, sys, time
from lmresearch.runtime import setup_jax
setup_jax(cpu_devices=-1)
import jax
from lmresearch.data import packing, prepared
ds = prepared.PreparedDataset(sys.argv[1], 'train', 32, 1)
asked = []
rows = ds.rows
ds.rows = lambda ix: (asked.extend(int(i) for i in ix), rows(ix))[1]
it = packing.train_iterator(ds, 8, seed=0)
batches = [next(it)['inputs'].tolist() for _ in range(3)]
time.sleep(2)   # grain's read-ahead (a bounded buffer) settles before counting
print('RESULT ' + json.dumps({'process': jax.process_index(), 'rows': asked,
                              'tokens_read': ds.tokens_read, 'batches': batches}))
'''


@pytest.mark.slow
def test_each_process_reads_only_its_rows_of_a_prepared_corpus(tmp_path):
  import json
  from conftest import load_config, tiny
  from lmresearch import tokenizers
  from lmresearch.data import prepare, prepared, sources
  c = tiny(load_config('pretrain'))
  tok = tokenizers.train_tokenizer('bpe', sources.documents(c.data, 'train'), 300)
  tok.save(str(tmp_path))
  prepare.prepare(c.data, str(tmp_path), str(tmp_path / 'out'), docs_per_shard=100, chunk=64,
                  progress=False)
  out = multiprocess.run(['-c', READ_ROWS, str(tmp_path / 'out')], 2, 1)
  res = []
  for r in out:
    assert r.returncode == 0, r.output[-3000:]
    res.append(json.loads(r.output.split('RESULT ', 1)[1].splitlines()[0]))
  res.sort(key=lambda x: x['process'])
  a, b = (set(x['rows']) for x in res)
  assert not a & b and len(a) == len(res[0]['rows'])   # no row read twice, by either process
  for x in res:
    assert x['tokens_read'] == len(x['rows']) * 33      # I/O only for the rows asked for
  # Together the two processes read exactly the global batches one process would read.
  whole = prepared.PreparedDataset(str(tmp_path / 'out'), 'train', 32, tok.bos_id)
  it = packing.train_iterator(whole, 8, seed=0)
  for step in range(3):
    want = next(it)['inputs'].tolist()
    assert res[0]['batches'][step] + res[1]['batches'][step] == want[0::2] + want[1::2]

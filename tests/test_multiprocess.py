"""Multi-process jobs on one machine: the same numbers as one process with the same mesh."""
import pytest

import multiprocess
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

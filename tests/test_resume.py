"""A run killed with kill -9 and resumed logs the same loss at every step as an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from lmresearch.training.metrics import read_metrics

TINY = ['--config.model.num_layers=2', '--config.model.embed_dim=32', '--config.model.mlp_dim=64',
        '--config.model.max_len=32', '--config.data.seq_len=32', '--config.data.vocab_size=300',
        '--config.data.synthetic.num_docs=300', '--config.train.batch_size=8',
        '--config.train.log_every=1', '--config.train.eval_every=0', '--config.train.warmup_steps=5',
        '--config.mesh.data=1']


def _cmd(workdir, steps, every, config='pretrain', extra=TINY):
  return [sys.executable, '-m', 'lmresearch.main', f'--config={ROOT}/configs/{config}.py',
          f'--workdir={workdir}', f'--config.train.steps={steps}',
          f'--config.checkpoint.every={every}', *extra]


def _env():
  env = dict(os.environ)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'
  env['PYTHONPATH'] = ROOT
  return env


def kill_and_resume(tmp_path, steps, every, **kw):
  ref = tmp_path / 'ref'
  subprocess.run(_cmd(ref, steps, every, **kw), check=True, env=_env(), capture_output=True)

  run = tmp_path / 'run'
  proc = subprocess.Popen(_cmd(run, steps, every, **kw), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpts = run / 'checkpoints'
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if ckpts.is_dir() and any(p.name.isdigit() and int(p.name) >= 10 for p in ckpts.iterdir()):
      break
    time.sleep(0.01)
  assert proc.poll() is None, 'the run finished before it could be killed; raise steps'
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
  assert killed_at < steps

  out = subprocess.run(_cmd(run, steps, every, **kw), check=True, env=_env(), capture_output=True,
                       text=True)
  assert 'resumed from' in out.stdout
  a = {r['step']: r['train/loss'] for r in read_metrics(ref) if 'train/loss' in r}
  b = {r['step']: r['train/loss'] for r in read_metrics(run) if 'train/loss' in r}
  assert sorted(b) == list(range(1, steps + 1))
  assert a == b   # bit-identical on CPU


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
  kill_and_resume(tmp_path, 150, 5)


@pytest.mark.slow
def test_kill_9_then_resume_a_post_training_stage(tmp_path, pipeline_dirs):
  sft = ['--config.train.batch_size=8', '--config.train.log_every=1', '--config.train.eval_every=0',
         '--config.data.seq_len=96', '--config.data.synthetic.num_docs=100', '--config.mesh.data=1',
         f'--config.init_from={pipeline_dirs / "base"}']
  kill_and_resume(tmp_path, 120, 5, config='sft', extra=sft)


def _damage(run, step, part: str = 'd', every_file: bool = False):
  """100 random bytes over one (or every) data file of `part` of a checkpoint's params (as a bad
  disk would)."""
  d = os.path.join(run, 'checkpoints', str(step), 'params', part)
  for name in sorted(os.listdir(d))[:None if every_file else 1]:
    with open(os.path.join(d, name), 'r+b') as f:
      f.write(os.urandom(100))


def test_a_damaged_latest_checkpoint_is_named_and_the_run_falls_back_to_an_intact_one(
    tmp_path, capsys):
  import jax
  from conftest import load_config, tiny
  from lmresearch.stages import launch
  from lmresearch.stages import runs
  from lmresearch.training.checkpoint import CheckpointError
  def config(steps):
    c = tiny(load_config('pretrain'))
    c.train.steps = steps
    c.checkpoint.update(every=2, max_to_keep=3)
    return c
  dev = jax.devices()[:1]
  launch.run(config(6), str(tmp_path / 'whole'), devices=dev)
  run = str(tmp_path / 'run')
  launch.run(config(4), run, devices=dev)
  _damage(run, 4)
  launch.run(config(6), run, devices=dev)
  err = capsys.readouterr().err
  assert "checkpoint step 4 is damaged (item 'params'" in err
  assert sorted(os.listdir(os.path.join(run, 'checkpoints'))) == ['2', '4', '4.damaged', '6']
  loss = lambda w: [m['train/loss'] for m in read_metrics(w) if 'train/loss' in m]
  assert loss(run) == loss(str(tmp_path / 'whole'))      # resumed from step 2, exactly
  # Sampling and evaluation load the newest intact params the same way.
  _damage(run, 6)
  assert runs.load(run).step == 4
  for step in ('2', '4'):
    _damage(run, int(step))
  with pytest.raises(CheckpointError, match='no intact checkpoint: step 6 .*step 4 .*step 2'):
    runs.load(run)

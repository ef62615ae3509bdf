"""Trainer behaviour: overfitting, non-finite losses, SIGTERM, TFDS data, metrics, dry runs."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, load_config
from lmresearch.stages import launch
from lmresearch.training.checkpoint import Checkpointer
from lmresearch.training.metrics import read_metrics
from lmresearch.training.trainer import NonFiniteLossError


def test_a_tiny_batch_is_overfit_to_near_zero_loss(tiny_pretrain_config, tmp_path):
  text = tmp_path / 'tiny.txt'
  rng = np.random.default_rng(0)
  text.write_text(''.join(rng.choice(list('abcdefgh'), 4 * 32 + 8)))   # 4 windows = 1 batch
  c = tiny_pretrain_config
  c.data.update(source='text', path=str(text), tokenizer='char', val_fraction=0.0)
  # decayed to 1e-4: at a constant 1e-2 the last step can land on an Adam spike (grad norm 6)
  c.train.update(steps=150, batch_size=4, lr=1e-2, min_lr=1e-4, weight_decay=0.0, log_every=50)
  out = launch.run(c, str(tmp_path / 'run'), devices=jax.devices()[:1])
  assert out['train/loss'] < 0.05, out


def test_metrics_jsonl_has_required_keys_and_eval_loss(tiny_pretrain_config, tmp_path):
  c = tiny_pretrain_config
  c.train.update(steps=4, log_every=2, eval_every=4, eval_batches=2)
  launch.run(c, str(tmp_path), devices=jax.devices()[:1])
  start, *rows = read_metrics(tmp_path)
  # Step 0 is the starting point (its eval, the parameter counts): the baseline of a stage's gain.
  assert start['step'] == 0 and 'train/loss' not in start
  assert [r['step'] for r in rows] == [2, 4]
  for key in ('train/loss', 'perf/tokens_per_sec', 'perf/mfu'):
    assert all(key in r for r in rows), key
  assert 'eval/loss' in rows[-1] and np.isfinite(rows[-1]['eval/loss'])
  assert start['eval/loss'] > rows[-1]['eval/loss']
  assert os.listdir(tmp_path / 'tensorboard')
  saved = json.load(open(tmp_path / 'config.json'))
  assert saved['train']['steps'] == 4 and os.path.exists(tmp_path / 'tokenizer.json')


def test_non_finite_loss_stops_and_is_never_checkpointed(tiny_pretrain_config, tmp_path):
  c = tiny_pretrain_config
  c.train.update(steps=30, lr=1e12, warmup_steps=0, clip_norm=0.0, weight_decay=0.0)
  c.checkpoint.every = 1
  with pytest.raises(NonFiniteLossError, match='non-finite train/loss .* at step'):
    launch.run(c, str(tmp_path), devices=jax.devices()[:1])
  ckpt = Checkpointer(str(tmp_path / 'checkpoints'))
  assert ckpt.manager.all_steps(), 'expected the finite steps before the blow-up to be saved'
  for step in ckpt.manager.all_steps():
    params = ckpt.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore()))['params']
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params)), step
  ckpt.close()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  from test_resume import TINY, _env
  cmd = [sys.executable, '-m', 'lmresearch.main', f'--config={ROOT}/configs/pretrain.py',
         f'--workdir={tmp_path}', '--config.train.steps=100000', '--config.checkpoint.every=0', *TINY]
  proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  deadline = time.time() + 120
  while time.time() < deadline and not (tmp_path / 'metrics.jsonl').exists():
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 0
  assert 'SIGTERM: saved step' in out
  assert any(p.name.isdigit() for p in (tmp_path / "checkpoints").iterdir())


def test_tfds_source_under_mock_data(tiny_pretrain_config, tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  c = tiny_pretrain_config
  c.data.update(source='tfds', tfds_name='lm1b', tokenizer='char', tfds_eval_split='test')
  c.train.update(steps=2, eval_every=2, eval_batches=1, batch_size=4)
  with tfds.testing.mock_data(num_examples=64):
    out = launch.run(c, str(tmp_path), devices=jax.devices()[:1])
  assert np.isfinite(out['train/loss']) and np.isfinite(out['eval/loss'])


def test_gpt2_124m_preset_validates_and_lowers_on_8_devices():
  c = load_config('pretrain', 'preset=gpt2_124m')
  from lmresearch.training.config import validate
  from lmresearch.stages import REGISTRY
  from lmresearch.training.dry_run import dry_run
  validate(c, 8, REGISTRY)
  from lmresearch.stages.pretrain import PretrainStage
  out = dry_run(c, PretrainStage.abstract(c), jax.devices()[:8], compile=False)
  assert 120e6 < out['params'] < 130e6, out
  assert out['mesh'] == {'data': 1, 'fsdp': 8, 'tensor': 1}


def test_mesh_devices_is_what_the_mesh_asks_for():
  from lmresearch.core.parallel import mesh_devices
  assert mesh_devices({'data': 1, 'fsdp': 8, 'tensor': 1}, available=2) == 8
  assert mesh_devices({'data': -1, 'fsdp': 1, 'tensor': 2}, available=5) == 4   # the rest: 2 x 2
  assert mesh_devices({'data': -1, 'fsdp': 4, 'tensor': 1}, available=2) == 4   # at least 1 x 4


def _dry_run_cli(*args, xla_flags=None):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  if xla_flags:
    env['XLA_FLAGS'] = xla_flags
  tiny = ['--config.model.num_layers=1', '--config.model.embed_dim=32', '--config.model.mlp_dim=64',
          '--config.model.max_len=32', '--config.data.seq_len=32']
  return subprocess.run([sys.executable, '-m', 'lmresearch.main', f'--config={ROOT}/configs/pretrain.py',
                         '--dry_run', *tiny, *args], cwd=ROOT, env=dict(env, PYTHONPATH=ROOT),
                        capture_output=True, text=True, timeout=300)


def test_dry_run_simulates_the_cpu_devices_the_mesh_asks_for():
  n = 1 << len(os.sched_getaffinity(0)).bit_length()   # more devices than this host has cores
  out = _dry_run_cli('--config.mesh.data=1', f'--config.mesh.fsdp={n}',
                     f'--config.train.batch_size={n}')
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"mesh={{'data': 1, 'fsdp': {n}, 'tensor': 1}}" in out.stdout, out.stdout


@pytest.mark.parametrize('args,xla_flags,needle', [
    (['--config.mesh.data=3'], None, 'config.train.batch_size=16 does not divide'),
    (['--config.mesh.fsdp=0'], None, 'config.mesh.fsdp=0: must be a positive size'),
    (['--config.mesh.data=4'], '--xla_force_host_platform_device_count=2', 'needs 4 devices but 2'),
])
def test_dry_run_keeps_the_one_line_error_for_an_impossible_mesh(args, xla_flags, needle):
  out = _dry_run_cli(*args, xla_flags=xla_flags)
  assert out.returncode == 2 and needle in out.stderr, out.stderr[-2000:]


def test_hooks_run_every_n_steps_and_at_the_last():
  """The loop's hooks: every N steps, at the last (a SIGTERM's too); the checkpoint even when its
  period is 0, evaluation never then."""
  from lmresearch.training.trainer import Hook
  every3 = Hook('eval', 3, print)
  never = Hook('eval', 0, print)
  ckpt = Hook('checkpoint', 0, print, always_last=True)
  assert [s for s in range(1, 8) if every3.due(s, s == 7)] == [3, 6, 7]
  assert not any(never.due(s, s == 7) for s in range(1, 8))
  assert [s for s in range(1, 8) if ckpt.due(s, s == 7)] == [7]

"""Same numbers on 1 device and on a 2x2x2 mesh; gradient accumulation is exact."""
import jax
import numpy as np

from lmresearch.stages import launch
from lmresearch.training.metrics import read_metrics


def _losses(workdir):
  return [r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r]


def test_three_steps_on_one_device_equal_a_2x2x2_mesh(tiny_pretrain_config, tmp_path):
  assert jax.device_count() >= 8, 'run with XLA_FLAGS=--xla_force_host_platform_device_count=8'
  c1 = tiny_pretrain_config
  launch.run(c1, str(tmp_path / 'one'), devices=jax.devices()[:1])
  c8 = c1.copy_and_resolve_references()
  c8.mesh.update(data=2, fsdp=2, tensor=2)
  launch.run(c8, str(tmp_path / 'eight'), devices=jax.devices()[:8])
  one, eight = _losses(tmp_path / 'one'), _losses(tmp_path / 'eight')
  assert len(one) == len(eight) == 3
  np.testing.assert_allclose(eight, one, rtol=1e-5)


def test_grad_accumulation_4x_quarter_batch_equals_one_full_batch(tiny_pretrain_config, tmp_path):
  c = tiny_pretrain_config
  c.train.steps = 3
  full = launch.run(c, str(tmp_path / 'full'), devices=jax.devices()[:1])
  c4 = c.copy_and_resolve_references()
  c4.train.grad_accum = 4
  acc = launch.run(c4, str(tmp_path / 'acc'), devices=jax.devices()[:1])
  np.testing.assert_allclose(_losses(tmp_path / 'acc'), _losses(tmp_path / 'full'), rtol=1e-5)
  np.testing.assert_allclose(acc['train/grad_norm'], full['train/grad_norm'], rtol=1e-4)

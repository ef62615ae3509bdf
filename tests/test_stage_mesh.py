"""Every post-training stage: the same losses on 1 device and on a 2x2x2 mesh, and an exact resume."""
import jax
import numpy as np
import pytest

from conftest import stage_config
from lmresearch.stages import launch
from lmresearch.training.metrics import read_metrics

STAGES = ['sft', 'reward', 'dpo', 'ppo', 'grpo']


def _losses(workdir):
  return {r['step']: r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r}


@pytest.mark.parametrize('stage', STAGES)
def test_same_losses_on_one_device_and_a_2x2x2_mesh(stage, pipeline_dirs, tmp_path):
  c = stage_config(stage, pipeline_dirs)
  launch.run(c, str(tmp_path / 'one'), devices=jax.devices()[:1])
  c8 = c.copy_and_resolve_references()
  c8.mesh.update(data=2, fsdp=2, tensor=2)
  launch.run(c8, str(tmp_path / 'eight'), devices=jax.devices()[:8])
  one, eight = _losses(tmp_path / 'one'), _losses(tmp_path / 'eight')
  assert sorted(one) == [1, 2]
  np.testing.assert_allclose([eight[s] for s in one], list(one.values()), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('stage', STAGES)
def test_resume_continues_exactly(stage, pipeline_dirs, tmp_path):
  c = stage_config(stage, pipeline_dirs)
  c.train.steps = 4
  launch.run(c, str(tmp_path / 'ref'), devices=jax.devices()[:1])
  c2 = c.copy_and_resolve_references()
  c2.train.steps = 2
  launch.run(c2, str(tmp_path / 'run'), devices=jax.devices()[:1])
  launch.run(c, str(tmp_path / 'run'), devices=jax.devices()[:1])   # resumes at step 2
  assert _losses(tmp_path / 'run') == _losses(tmp_path / 'ref')

"""Shared test setup: 8 simulated CPU devices, a persistent compilation cache, tiny configs."""
import os
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('LMR_COMPILATION_CACHE', os.path.expanduser('~/.cache/lmresearch/jax-tests'))

import jax  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
jax.config.update('jax_compilation_cache_dir', os.environ['LMR_COMPILATION_CACHE'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def load_config(name: str, arg=None):
  """configs/<name>.py's get_config(arg)."""
  from lmresearch.training.config import config_file
  return config_file(name).get_config(arg)


def tiny(config):
  """Shrinks any stage config to seconds-sized runs (callers override further)."""
  config.model.update(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, mlp_dim=64,
                      max_len=32)
  config.data.update(seq_len=32, vocab_size=300)
  config.data.synthetic.num_docs = 300
  config.train.update(steps=3, batch_size=8, log_every=1, eval_every=0, warmup_steps=1)
  config.checkpoint.update(every=0, use_async=False)
  config.mesh.update(data=1, fsdp=1, tensor=1)
  return config


@pytest.fixture
def tiny_pretrain_config():
  return tiny(load_config('pretrain'))


@pytest.fixture(scope='session')
def one_device():
  return jax.devices()[:1]


@pytest.fixture(scope='session')
def smoke_pipeline(tmp_path_factory):
  """The smoke pipeline with every stage (`size=smoke,all=1`), run once and read by the tests that
  only read it (the report's sections, a rerun that redoes nothing, an export of its RLHF model,
  a pipeline reusing its stages): (its directory, its results)."""
  from lmresearch.pipeline import run_pipeline
  root = tmp_path_factory.mktemp('smoke')
  return root, run_pipeline(load_config('pipeline', 'size=smoke,all=1'), str(root))


@pytest.fixture(scope='session')
def pipeline_dirs(tmp_path_factory):
  """A tiny base and SFT run shared by the stage tests (seconds, not minutes)."""
  root = tmp_path_factory.mktemp('pipe')
  dev = jax.devices()[:1]
  base = tiny(load_config('pretrain'))
  base.data.synthetic.num_docs = 400
  base.model.max_len = 160
  base.data.seq_len = 96
  base.train.steps = 4
  base.checkpoint.every = 4
  from lmresearch.stages import launch
  launch.run(base, str(root / 'base'), devices=dev)
  sft = tiny(load_config('sft'))
  sft.init_from = str(root / 'base')
  sft.data.seq_len = 96
  sft.data.synthetic.num_docs = 100
  sft.train.steps = 2
  sft.checkpoint.every = 2
  launch.run(sft, str(root / 'sft'), devices=dev)
  rm = stage_config('reward', root)
  launch.run(rm, str(root / 'reward'), devices=dev)
  return root


def stage_config(stage: str, root, arg=None):
  """A seconds-sized config of a post-training stage on top of the pipeline_dirs runs."""
  c = tiny(load_config(stage, arg))
  c.init_from = str(root / ('base' if stage == 'sft' else 'sft'))
  c.data.seq_len = 96
  c.data.synthetic.num_docs = 40
  c.train.update(steps=2, batch_size=8)
  c.checkpoint.every = 2
  if stage == 'reward':
    c.reward.update(norm_samples=4, norm_max_new_tokens=8)
  if stage in ('ppo', 'grpo'):
    c.rl.update(max_prompt_len=128, max_new_tokens=16, eval_prompts=4)
  if stage == 'ppo':
    c.reward_from = str(root / 'reward')
  if stage == 'grpo':
    c.grpo.update(group_size=2, kl_coef=0.1)
  return c


@pytest.fixture(scope='session')
def slurm(tmp_path_factory):
  """A one-node SLURM cluster on localhost (tests/slurm_cluster.py), shared by the session; where
  it cannot start, the test is skipped and the reason printed."""
  import slurm_cluster
  try:
    env = slurm_cluster.start(tmp_path_factory.mktemp('slurm'))
  except slurm_cluster.Unavailable as e:
    print(f'\nSLURM test cluster unavailable: {e}')
    pytest.skip(f'SLURM test cluster unavailable: {e}')
  yield env
  slurm_cluster.stop(env)

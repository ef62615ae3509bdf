"""Every bad config/input is a one-line error naming the key (or file and line), before compiling."""
import os
import re
import subprocess
import sys

import jax
import pytest

from conftest import ROOT, load_config
from lmresearch import launch
from lmresearch.config import ConfigError, validate
from lmresearch.stages import REGISTRY


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', 'lmresearch.main', f'--config={ROOT}/configs/pretrain.py',
                         '--workdir=/tmp/lmr-never-created', *args], env=env, capture_output=True,
                        text=True, timeout=120)


@pytest.mark.parametrize('arg,needle', [
    ('--config.train.stepz=3', "--config.train.stepz=3: unknown config key 'stepz'"),
    ('--config.train.steps=abc', '--config.train.steps=abc'),
])
def test_command_line_typos_are_one_line_errors(arg, needle):
  out = _cli(arg)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and needle in lines[0], out.stderr
  assert not os.path.exists('/tmp/lmr-never-created')


@pytest.mark.parametrize('override,needle', [
    (dict(mesh=dict(data=3)), 'config.mesh='),
    (dict(mesh=dict(data=-1, fsdp=-1)), 'at most one of data/fsdp/tensor'),
    (dict(train=dict(batch_size=12)), 'config.train.batch_size=12 does not divide'),
    (dict(train=dict(batch_size=16, grad_accum=4)), 'config.train.grad_accum=4'),
    (dict(model=dict(embed_dim=130)), 'config.model.embed_dim=130 is not divisible'),
    (dict(model=dict(style='bert')), 'config.model.style'),
    (dict(data=dict(seq_len=4096)), 'config.data.seq_len=4096'),
    (dict(stage='nope'), 'config.stage'),
    (dict(model=dict(dtype='float33')), 'config.model.dtype'),
    (dict(train=dict(loss_chunk=100)), 'config.train.loss_chunk=100 must be 0 (off) or divide'),
])
def test_invalid_configs_name_the_key(override, needle):
  c = load_config('pretrain')
  c.mesh.data = 8
  c.update_from_flattened_dict({f'{k}.{kk}': vv for k, v in override.items() if isinstance(v, dict)
                                for kk, vv in v.items()})
  for k, v in override.items():
    if not isinstance(v, dict):
      c[k] = v
  with pytest.raises(ConfigError, match=re.escape(needle)):
    validate(c, 8, REGISTRY)


def test_an_unknown_reward_pooling_names_the_key():
  c = load_config('reward')
  c.reward.pool = 'mean'
  with pytest.raises(ConfigError, match=re.escape("config.reward.pool='mean'")):
    validate(c, 1, REGISTRY)


def test_missing_file_and_malformed_jsonl_name_file_and_line(tiny_pretrain_config, tmp_path):
  c = tiny_pretrain_config
  c.data.update(source='text', path=str(tmp_path / 'missing.txt'))
  with pytest.raises(ConfigError, match='missing.txt'):
    launch.run(c, str(tmp_path / 'a'), devices=jax.devices()[:1])
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"text": "fine"}\n{"text": oops}\n')
  c.data.update(source='jsonl', path=str(bad))
  with pytest.raises(ConfigError, match=r'bad\.jsonl:2: malformed JSON'):
    launch.run(c, str(tmp_path / 'b'), devices=jax.devices()[:1])
  bad.write_text('{"body": "no text key"}\n')
  with pytest.raises(ConfigError, match=r"bad\.jsonl:1: no string field 'text'"):
    launch.run(c, str(tmp_path / 'c'), devices=jax.devices()[:1])


def test_resuming_a_workdir_with_another_model_is_refused(tiny_pretrain_config, tmp_path):
  c = tiny_pretrain_config
  c.train.steps = 1
  c.checkpoint.every = 1
  launch.run(c, str(tmp_path), devices=jax.devices()[:1])
  c.model.embed_dim = 64
  with pytest.raises(ConfigError, match='config.model.embed_dim'):
    launch.run(c, str(tmp_path), devices=jax.devices()[:1])


@pytest.mark.parametrize('stage', ['ppo', 'grpo'])
def test_rl_stages_refuse_gradient_accumulation_naming_the_key(stage):
  c = load_config(stage)
  c.train.grad_accum = 2
  with pytest.raises(ConfigError, match=re.escape('config.train.grad_accum=2')):
    validate(c, 1, REGISTRY)

"""Every bad config/input is a one-line error naming the key (or file and line), before compiling."""
import os
import re
import subprocess
import sys

import jax
import pytest

from conftest import ROOT, load_config
from lmresearch.stages import launch
from lmresearch.training.config import ConfigError, validate
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


# ---- preset arguments: typed and closed --------------------------------------------------------

CONFIG_FILES = sorted([f'configs/{f}' for f in os.listdir(os.path.join(ROOT, 'configs'))
                       if f.endswith('.py')] +
                      [f'experiments/{d}/config.py' for d in os.listdir(os.path.join(ROOT, 'experiments'))
                       if os.path.isfile(os.path.join(ROOT, 'experiments', d, 'config.py'))])
# Per file, where it has one: an argument of another type, and a choice spelled wrong.
WRONG_TYPE = {'configs/pipeline.py': 'lora=x', 'configs/dpo.py': 'beta=high',
              'configs/ppo.py': 'ptx=half', 'configs/reward.py': 'noise=lots'}
TYPO = {'configs/pipeline.py': 'size=smok', 'configs/sft.py': 'data=gsm8K',
        'configs/grpo.py': 'data=GSM8K', 'configs/dpo.py': 'loss=IPO',
        'configs/reward.py': 'pool=mean', 'configs/pretrain.py': 'preset=llama3_7b'}


def _get_config(path, arg):
  import importlib.util
  spec = importlib.util.spec_from_file_location('cfg_' + path.replace('/', '_')[:-3],
                                                os.path.join(ROOT, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.mark.parametrize('path', CONFIG_FILES)
def test_every_config_file_refuses_what_it_does_not_know(path):
  """An unknown key, a value of the wrong type or a choice not offered is one line naming the
  file, the key and what it accepts; nothing falls back to a default in silence."""
  _get_config(path, None)   # the default builds
  cases = [('colour=red', "unknown argument 'colour'")]
  if path in WRONG_TYPE:
    cases.append((WRONG_TYPE[path], f'{WRONG_TYPE[path].split("=")[0]}=\'{WRONG_TYPE[path].split("=")[1]}\' is not a'))
  if path in TYPO:
    cases.append((TYPO[path], f'{TYPO[path].split("=")[0]}=\'{TYPO[path].split("=")[1]}\' is not one of'))
  for arg, needle in cases:
    with pytest.raises(ConfigError) as e:
      _get_config(path, arg)
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith(path) and needle in msg, msg


def test_preset_values_are_parsed_by_type():
  """lora=0 is off (it was the string '0', which is true), all=0 is false, lora=8 an int."""
  pipe = lambda arg: _get_config('configs/pipeline.py', arg)
  off, on = pipe('lora=0'), pipe('lora=8')
  assert off.stages.sft.lora.rank == 0 and off.stages.sft.train.lr == pipe(None).stages.sft.train.lr
  assert on.stages.sft.lora.rank == 8 and on.stages.sft.train.lr == 10 * off.stages.sft.train.lr
  assert pipe('all=0').run == pipe(None).run != pipe('all=true').run
  assert _get_config('configs/dpo.py', 'beta=0.3').dpo.beta == 0.3
  assert _get_config('configs/ppo.py', 'ptx=1').ppo.ptx_coef == 1.0


def test_model_defaults_are_declared_once():
  """config.model's defaults are ModelConfig's: a config and a ModelConfig built without
  arguments describe the same model."""
  import dataclasses
  from lmresearch.training.config import base_config
  from lmresearch.models.transformer import ModelConfig
  m = base_config().model
  for f in dataclasses.fields(ModelConfig):
    if f.name in m and f.name != 'vocab_size':   # 0 in a config: the tokenizer's
      assert m[f.name] == f.default, f.name
  assert ModelConfig.from_config(m, 64) == ModelConfig(vocab_size=64)

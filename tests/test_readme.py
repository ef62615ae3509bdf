"""Every command in the docs' "Running each stage" block (docs/stages.md) runs as written, at
smoke size.

The commands are read from the page itself (so an edit there is tested), run in order as
subprocesses from the repository root, with their `runs/` workdirs moved under a temporary
directory and smoke-sized overrides appended (later flags win). A command that names
`../shared/data` is skipped, saying so, where that copy is absent.
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

SHARED = os.path.join(ROOT, '..', 'shared', 'data')
TRAIN = ['--config.train.steps=2', '--config.train.batch_size=8', '--config.train.log_every=1',
         '--config.train.eval_every=0', '--config.checkpoint.every=2',
         '--config.checkpoint.use_async=False', '--config.data.synthetic.num_docs=200']
SMALL_MODEL = ['--config.model.num_layers=2', '--config.model.num_heads=4',
               '--config.model.embed_dim=32', '--config.model.mlp_dim=64']
SMOKE = {   # appended per config file; post-training stages take their parent's model
    'configs/pretrain.py': TRAIN + SMALL_MODEL + [
        '--config.model.num_kv_heads=2', '--config.data.vocab_size=300',
        '--config.data.seq_len=128'],
    'configs/pretrain.py:preset=shakespeare_char': TRAIN + SMALL_MODEL + [
        '--config.train.eval_batches=2'],
    'configs/sft.py': TRAIN + ['--config.data.seq_len=160'],
    'configs/reward.py': TRAIN + ['--config.data.seq_len=160', '--config.reward.norm_samples=8',
                                  '--config.reward.norm_max_new_tokens=8'],
    'configs/dpo.py': TRAIN + ['--config.data.seq_len=160'],
    'configs/ppo.py': TRAIN + ['--config.rl.max_prompt_len=96', '--config.rl.max_new_tokens=16',
                               '--config.rl.eval_prompts=8'],
    'configs/grpo.py': TRAIN + ['--config.rl.max_prompt_len=96', '--config.rl.max_new_tokens=16',
                                '--config.rl.eval_prompts=8', '--config.grpo.group_size=2'],
}


def readme_commands():
  """The `python -m lmresearch...` lines of the "Running each stage" block, continuations joined."""
  text = open(os.path.join(ROOT, 'docs', 'stages.md')).read()
  block = re.search(r'# Running each stage\s*```\n(.*?)```', text, re.S)
  assert block, 'docs/stages.md has no "# Running each stage" code block'
  joined = re.sub(r'\\\n\s*', '', block.group(1))
  cmds = [line.split('#')[0].strip() for line in joined.splitlines()]
  return [c for c in cmds if c.startswith('python -m lmresearch.')]


def smoke(cmd: str, tmp) -> list[str]:
  args = shlex.split(cmd)
  args = [a.replace('runs/', f'{tmp}/runs/').replace('--out=', f'--out={tmp}/') for a in args]
  config = next((a.split('=', 1)[1] for a in args if a.startswith('--config=')), None)
  if config and '--dry_run' not in args:
    args += SMOKE[config]
  if args[2] == 'lmresearch.evaluate' and not any(a.startswith('--limit') for a in args):
    args.append('--limit=8')
  return [sys.executable] + args[1:]


def test_the_readme_block_is_found_and_names_every_stage():
  cmds = ' '.join(readme_commands())
  for stage in ('pretrain', 'sft', 'reward', 'ppo', 'dpo', 'grpo'):
    assert f'configs/{stage}.py' in cmds
  assert 'lmresearch.evaluate' in cmds and 'lmresearch.sample' in cmds and '--dry_run' in cmds


def _run(cmd, tmp):
  # As a new user runs them: no XLA_FLAGS, so each CLI splits the CPU itself.
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = subprocess.run(smoke(cmd, tmp), cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, f'{cmd}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}'


@pytest.fixture(scope='module')
def readme_runs(tmp_path_factory):
  """Every command that needs no shared data, run in the README's order (later ones read the
  runs earlier ones made)."""
  tmp = tmp_path_factory.mktemp('readme')
  for cmd in readme_commands():
    if '../shared/data' not in cmd:
      _run(cmd, tmp)
  return tmp


@pytest.mark.slow
def test_every_command_of_running_each_stage_runs_as_written(readme_runs):
  # Each training command left a run behind (the fixture already checked every exit code).
  workdirs = {a.split('=', 1)[1] for c in readme_commands() if '../shared/data' not in c
              for a in shlex.split(c) if a.startswith('--workdir=') and 'main' in c}
  assert workdirs
  for w in workdirs:
    assert (readme_runs / w / 'config.json').exists(), w


@pytest.mark.slow
def test_the_commands_on_shared_data_run_as_written(readme_runs):
  cmds = [c for c in readme_commands() if '../shared/data' in c]
  assert cmds, 'docs/stages.md names no command on ../shared/data'
  if not os.path.isdir(SHARED):
    pytest.skip(f'{SHARED} is absent (it sits beside the project checkout): not run: '
                + '; '.join(cmds))
  for cmd in cmds:
    _run(cmd, readme_runs)

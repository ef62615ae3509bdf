"""Multi-process jobs on one machine: the same numbers as one process with the same mesh."""
import pytest

import processes
from lmresearch.data import packing
from lmresearch.training.metrics import read_metrics

TINY = ['--config=configs/pretrain.py', '--config.train.steps=3', '--config.train.batch_size=8',
        '--config.train.log_every=1', '--config.train.eval_every=0', '--config.checkpoint.every=3',
        '--config.checkpoint.use_async=False', '--config.model.num_layers=1',
        '--config.model.embed_dim=32', '--config.model.mlp_dim=64', '--config.model.num_heads=2',
        '--config.model.num_kv_heads=1', '--config.data.synthetic.num_docs=200',
        '--config.data.seq_len=64', '--config.data.vocab_size=300']


def losses(workdir) -> list:
  return [m['train/loss'] for m in read_metrics(workdir) if 'train/loss' in m]


def logged(workdir, keys) -> dict:
  """{key: its value at each step that logged it}."""
  return {k: [m[k] for m in read_metrics(workdir) if k in m] for k in keys}


def assert_ok(results) -> None:
  for r in results:
    assert r.returncode == 0, r.output[-3000:]


def assert_two_processes_log_the_losses_of_one(args, workdir, keys=('train/loss',),
                                               steps=3) -> list:
  """`python ARGS --workdir=...` on 1 process x 8 devices and on 2 processes x 4 devices (one mesh
  shape): each of `keys` logged at the same steps with the same values."""
  one = processes.run(args + [f'--workdir={workdir}/one'], 1, 8)
  two = processes.run(args + [f'--workdir={workdir}/two'], 2, 4)
  assert_ok(one + two)
  a, b = logged(workdir / 'one', keys), logged(workdir / 'two', keys)
  assert len(a['train/loss']) == steps and all(a.values()), a
  for k in keys:
    assert b[k] == pytest.approx(a[k], rel=1e-5), k
  assert all('[Gloo] Rank' in r.output for r in two)   # the two really joined one job
  return two


def pretrain(workdir, extra=(), devices=8) -> None:
  """A tiny pretraining run on one process: the parent of a later stage, sample or evaluate."""
  assert_ok(processes.run(['-m', 'lmresearch.main', f'--workdir={workdir}'] + TINY + list(extra),
                             1, devices))


def sft(parent) -> list:
  """A tiny SFT run from `parent` (its model; the embedded chats, not the pretraining data)."""
  return ['-m', 'lmresearch.main', '--config=configs/sft.py', f'--config.init_from={parent}'] + [
      a for a in TINY
      if not a.startswith(('--config=', '--config.data.synthetic', '--config.data.vocab'))]


@pytest.mark.slow
def test_pretraining_on_two_processes_logs_the_losses_of_one(tmp_path):
  assert_two_processes_log_the_losses_of_one(['-m', 'lmresearch.main'] + TINY, tmp_path)


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
  from lmresearch.text import tokenizers
  from lmresearch.data import prepare, prepared, sources
  c = tiny(load_config('pretrain'))
  tok = tokenizers.train_tokenizer('bpe', sources.documents(c.data, 'train'), 300)
  tok.save(str(tmp_path))
  prepare.prepare(c.data, str(tmp_path), str(tmp_path / 'out'), docs_per_shard=100, chunk=64,
                  progress=False)
  out = processes.run(['-c', READ_ROWS, str(tmp_path / 'out')], 2, 1)
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
    assert res[0]['batches'][step] + res[1]['batches'][step] == want   # blocks 0 and 1


LONG = [a for a in TINY if not a.startswith(('--config.train.steps', '--config.checkpoint.every'))]


def _wait_for_steps(workdir, n: int, procs, timeout: float = 240):
  import time
  t = time.time()
  while len(read_metrics(workdir)) < n:
    assert time.time() - t < timeout and all(p.poll() is None for p in procs), 'no progress'
    time.sleep(0.3)


@pytest.mark.slow
def test_sigterm_to_every_process_saves_one_step_exits_zero_and_the_rerun_resumes(tmp_path):
  import re
  import signal
  import time
  args = ['-m', 'lmresearch.main', f'--workdir={tmp_path}'] + LONG
  procs = processes.start(args + ['--config.train.steps=2000', '--config.checkpoint.every=0'],
                             2, 2)
  _wait_for_steps(tmp_path, 5, procs)
  procs[0].send_signal(signal.SIGTERM)
  time.sleep(0.5)   # the processes hear it at different steps; they must still agree on one
  procs[1].send_signal(signal.SIGTERM)
  out = processes.collect(procs, 120)
  saved = []
  for r in out:
    assert r.returncode == 0, r.output[-3000:]
    saved += [int(s) for s in re.findall(r'SIGTERM: saved step (\d+)', r.output)]
  assert len(saved) == 2 and saved[0] == saved[1], saved
  again = processes.run(args + [f'--config.train.steps={saved[0] + 2}'], 2, 2)
  for r in again:
    assert r.returncode == 0, r.output[-3000:]
    assert f'resumed from {tmp_path}/checkpoints step {saved[0]}' in r.output
  assert read_metrics(tmp_path)[-1]['step'] == saved[0] + 2


@pytest.mark.slow
def test_kill_9_of_one_process_ends_the_other_naming_it_and_the_rerun_resumes(tmp_path):
  import re
  import time
  args = ['-m', 'lmresearch.main', f'--workdir={tmp_path}'] + LONG
  procs = processes.start(args + ['--config.train.steps=2000', '--config.checkpoint.every=3'],
                             2, 2)
  _wait_for_steps(tmp_path, 8, procs)
  procs[1].kill()
  t = time.time()
  out = processes.collect(procs, 90)
  assert time.time() - t < 60
  assert out[0].returncode not in (0, -9), out[0].output[-3000:]
  # Our line, or (when the coordination service's own abort wins the race with ours) JAX's.
  assert re.search(r'error: process 0 of 2: lost process 1 of this job|'
                   r'stopped sending heartbeats\):\s*1\b', out[0].output), out[0].output[-3000:]
  import os
  steps = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert steps and steps[-1] >= 3
  again = processes.run(args + [f'--config.train.steps={steps[-1] + 2}',
                                   '--config.checkpoint.every=3'], 2, 2)
  for r in again:
    assert r.returncode == 0, r.output[-3000:]
  resumed = int(re.search(r'resumed from \S+ step (\d+)', again[0].output).group(1))
  assert resumed in steps and resumed % 3 == 0   # the newest complete checkpoint
  assert read_metrics(tmp_path)[-1]['step'] == steps[-1] + 2


@pytest.mark.slow
def test_launch_slurm_sbatch_runs_two_tasks_as_one_job_with_the_losses_of_one_process(tmp_path,
                                                                                       slurm):
  import os
  import subprocess
  import sys
  from conftest import ROOT
  env = {**slurm, 'LMR_PYTHON': sys.executable, 'PYTHONPATH': ROOT,
         'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  for k in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    env.pop(k, None)
  out = subprocess.run(
      ['sbatch', '--wait', '--nodes=1', '--ntasks-per-node=2', '--cpus-per-task=1',
       f'--output={tmp_path}/slurm-%j.out', 'scripts/launch_slurm.sbatch', '-m', 'lmresearch.main',
       f'--workdir={tmp_path}/two'] + TINY, cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=600)
  logs = ''.join(open(tmp_path / f).read() for f in os.listdir(tmp_path) if f.startswith('slurm-'))
  assert out.returncode == 0, out.stderr + logs[-3000:]
  assert logs.count('[Gloo] Rank') >= 2   # two processes joined one job
  one = processes.run(['-m', 'lmresearch.main', f'--workdir={tmp_path}/one'] + TINY, 1, 4)
  assert one[0].returncode == 0, one[0].output[-3000:]
  assert len(losses(tmp_path / 'one')) == 3
  assert losses(tmp_path / 'two') == pytest.approx(losses(tmp_path / 'one'), rel=1e-5)


@pytest.mark.slow
def test_sft_on_two_processes_logs_the_losses_of_one(tmp_path):
  pretrain(tmp_path / 'base')
  assert_two_processes_log_the_losses_of_one(sft(tmp_path / 'base'), tmp_path)


# PPO about the size of conftest.stage_config('ppo'), on its 2x2x2 mesh (the 4 batch shards split
# each rollout of 8 prompts into the 2 minibatches); the tiny parents come from pipeline_dirs.
# 16 new tokens, not fewer: then some replies end and are scored by the reward model (not all
# capped at ppo.degenerate_reward).
PPO_TINY = ['--config=configs/ppo.py', '--config.train.steps=2', '--config.train.batch_size=8',
            '--config.train.log_every=1', '--config.train.eval_every=0',
            '--config.checkpoint.every=2', '--config.checkpoint.use_async=False',
            '--config.data.seq_len=96', '--config.data.synthetic.num_docs=40',
            '--config.rl.max_prompt_len=96', '--config.rl.max_new_tokens=16',
            '--config.rl.eval_prompts=4', '--config.mesh.data=2', '--config.mesh.fsdp=2',
            '--config.mesh.tensor=2']
# The losses of the update, and the rollout's reward and KL: equal only if every process sampled
# its rows of the one global batch and the rewards and advantages were whitened over all of it.
PPO_KEYS = ('train/loss', 'ppo/policy_loss', 'ppo/value_loss', 'ppo/reward_mean', 'ppo/kl',
            'ppo/approx_kl', 'ppo/entropy', 'ppo/response_len')


@pytest.mark.slow
def test_ppo_on_two_processes_logs_the_losses_of_one(tmp_path, pipeline_dirs):
  args = ['-m', 'lmresearch.main'] + PPO_TINY + [f'--config.init_from={pipeline_dirs / "sft"}',
                                               f'--config.reward_from={pipeline_dirs / "reward"}']
  assert_two_processes_log_the_losses_of_one(args, tmp_path, PPO_KEYS, steps=2)


@pytest.mark.slow
def test_a_checkpoint_of_two_processes_on_fsdp_8_resumes_in_one_on_data_2_fsdp_4(tmp_path):
  # The schedule must not depend on train.steps, so the first leg can end at the checkpoint.
  args = ['-m', 'lmresearch.main'] + LONG + ['--config.train.decay_steps=6',
                                             '--config.checkpoint.every=3']
  fsdp8 = ['--config.mesh.data=1', '--config.mesh.fsdp=8']
  data2 = ['--config.mesh.data=2', '--config.mesh.fsdp=4']
  first = processes.run(args + fsdp8 + [f'--workdir={tmp_path}/run', '--config.train.steps=3'],
                           2, 4)
  for r in first:
    assert r.returncode == 0, r.output[-3000:]
  second = processes.run(args + data2 + [f'--workdir={tmp_path}/run', '--config.train.steps=6'],
                            1, 8)
  assert second[0].returncode == 0, second[0].output[-3000:]
  assert 'resumed from' in second[0].output and 'step 3' in second[0].output
  whole = processes.run(args + data2 + [f'--workdir={tmp_path}/whole', '--config.train.steps=6'],
                           1, 8)
  assert whole[0].returncode == 0, whole[0].output[-3000:]
  assert len(losses(tmp_path / 'whole')) == 6
  assert losses(tmp_path / 'run') == pytest.approx(losses(tmp_path / 'whole'), rel=1e-5)


@pytest.mark.slow
def test_the_pipeline_on_two_processes_reports_the_numbers_of_one_and_writes_each_record_once(
    tmp_path):
  import json
  import os
  # Every stage and the evaluation's model-facing parts; the prompting methods and the reward
  # model's ranking sections only add programs to compile (test_pipeline reads them).
  args = ['-m', 'lmresearch.pipeline', '--config=configs/pipeline.py:size=smoke',
          '--config.eval.prompting=False', '--config.eval.rm_rankings=0']
  one = processes.run(args + [f'--workdir={tmp_path}/one'], 1, 4, timeout=900)
  two = processes.run(args + [f'--workdir={tmp_path}/two'], 2, 2, timeout=900)
  for r in one + two:
    assert r.returncode == 0, r.output[-3000:]

  def numbers(d, prefix=''):
    if isinstance(d, dict):
      return {k2: v2 for k, v in d.items() for k2, v2 in numbers(v, f'{prefix}{k}.').items()}
    return {prefix: d} if isinstance(d, (int, float)) and not isinstance(d, bool) else {}
  report = lambda w: {k: v for k, v in numbers(json.load(open(w / 'report.json'))).items()
                      if 'seconds' not in k}   # PPO, evaluation, every stage's figures
  a, b = report(tmp_path / 'one'), report(tmp_path / 'two')
  assert len(a) > 40 and a.keys() == b.keys()
  assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
  records = sorted(f for f in os.listdir(tmp_path / 'one' / 'eval') if f.endswith('.jsonl'))
  assert records == sorted(f for f in os.listdir(tmp_path / 'two' / 'eval') if f.endswith('.jsonl'))
  for f in records:   # every sample and score present once, as one process writes them: the same
    # lines, texts and samples exactly, numbers to float tolerance (another mesh, other roundings)
    one_lines = (tmp_path / 'one' / 'eval' / f).read_text().splitlines()
    two_lines = (tmp_path / 'two' / 'eval' / f).read_text().splitlines()
    assert len(two_lines) == len(one_lines), f
    for x, y in zip(two_lines, one_lines):
      assert _same_record(json.loads(x), json.loads(y)), (f, x, y)
  assert not [f for f in os.listdir(tmp_path / 'two' / 'eval') if f.endswith('.tmp')]


def _same_record(x, y) -> bool:
  """Equal JSON values, floats to float tolerance: a record computed on another mesh (and thread
  split) rounds differently; a sample's KL sums ~100 differences of fp32 log-probs near 5, so it
  carries ~1e-5 of absolute rounding."""
  if isinstance(x, float) or isinstance(y, float):
    return x == pytest.approx(y, rel=1e-4, abs=1e-5)
  if isinstance(x, dict) and isinstance(y, dict):
    return x.keys() == y.keys() and all(_same_record(x[k], y[k]) for k in x)
  if isinstance(x, list) and isinstance(y, list):
    return len(x) == len(y) and all(_same_record(a, b) for a, b in zip(x, y))
  return x == y


DAMAGE_ARGS = ['-m', 'lmresearch.main'] + LONG + ['--config.train.decay_steps=6',
                                                  '--config.checkpoint.every=2',
                                                  '--config.checkpoint.max_to_keep=3',
                                                  '--config.mesh.data=1', '--config.mesh.fsdp=8']


@pytest.fixture(scope='module')
def two_process_runs(tmp_path_factory):
  """Two-process runs the damaged-checkpoint cases share: 6 steps uninterrupted (the losses to
  match) and 4 steps with checkpoints at 2 and 4 (each case damages its own copy)."""
  root = tmp_path_factory.mktemp('two_process_runs')
  assert_ok(processes.run(DAMAGE_ARGS + [f'--workdir={root}/whole', '--config.train.steps=6'], 2, 4))
  assert_ok(processes.run(DAMAGE_ARGS + [f'--workdir={root}/four', '--config.train.steps=4'], 2, 4))
  return root


# 'd': files every process reads: all fail, and all go back a step together. 'ocdbt.process_1/d':
# the shards process 1 wrote, which only it reads back on this fsdp=8 mesh. Process 0 restores
# step 4 whole and waits for process 1 inside Orbax's restore, so the job stops with process 1
# naming the damage and marking the step; the rerun goes back a step on every process.
@pytest.mark.slow
@pytest.mark.parametrize('part', ['d', 'ocdbt.process_1/d'])
def test_a_damaged_latest_checkpoint_of_a_two_process_run_is_named_and_skipped(tmp_path, part,
                                                                             two_process_runs):
  import os
  import shutil
  from test_resume import _damage
  args, run = DAMAGE_ARGS, tmp_path / 'run'
  shutil.copytree(two_process_runs / 'four', run)
  _damage(str(run), 4, part, every_file=True)
  again = processes.run(args + [f'--workdir={run}', '--config.train.steps=6'], 2, 4,
                           env={'LMR_RESTORE_AGREE_MS': '10000'})
  if part != 'd':   # process 1 alone fails: the job stops (the others wait in Orbax's restore)
    assert again[1].returncode == 2 and again[0].returncode != 0, again[1].output[-3000:]
    assert ('is damaged in the part process 1 of 2 reads' in again[1].output
            and 'marked it' in again[1].output), again[1].output[-3000:]
    again = processes.run(args + [f'--workdir={run}', '--config.train.steps=6'], 2, 4)
  assert_ok(again)
  assert "checkpoint step 4 is damaged (item" in again[0].output, again[0].output[-3000:]
  assert sorted(os.listdir(run / 'checkpoints')) == ['2', '4', '4.damaged', '6']
  assert losses(run) == pytest.approx(losses(two_process_runs / 'whole'), rel=1e-6)   # resumed from 2


@pytest.mark.slow
def test_sample_and_evaluate_on_two_processes_print_and_write_what_one_does(tmp_path):
  import json
  pretrain(tmp_path / 'base', devices=4)
  sample = ['-m', 'lmresearch.sample', f'--workdir={tmp_path}/base', '--prompt=The town of',
            '--prompt=Question: 2 + 3', '--max_new_tokens=8', '--seed=3']
  evaluate = ['-m', 'lmresearch.evaluate', f'--workdir={tmp_path}/base', '--limit=12',
              '--max_new_tokens=8', '--batch_size=8']
  for name, args in (('sample', sample), ('evaluate', evaluate)):
    extra = [f'--out={tmp_path}/{name}-%d.jsonl'] if name == 'evaluate' else []
    one = processes.run(args + [a.replace('%d', '1') for a in extra], 1, 4)
    two = processes.run(args + [a.replace('%d', '2') for a in extra], 2, 2)
    for r in one + two:
      assert r.returncode == 0, r.output[-3000:]
    start = '=== [1] prompt ===' if name == 'sample' else '{'
    shown = lambda out: out[out.index(start):] if start in out else ''
    assert shown(one[0].output)
    assert shown(two[0].output) == shown(one[0].output), name   # process 0 prints it all ...
    assert not shown(two[1].output), name                        # ... and only process 0
    if name == 'evaluate':   # each record once, as one process writes them
      rows = lambda n: [json.loads(l) for l in open(tmp_path / f'evaluate-{n}.jsonl')]
      assert len(rows(1)) == 12 and rows(2) == rows(1)


@pytest.mark.slow
def test_init_from_a_parent_with_a_damaged_latest_checkpoint_on_two_processes(tmp_path):
  import re
  import shutil
  from test_resume import _damage
  parent, intact = tmp_path / 'parent', tmp_path / 'intact'
  pretrain(parent, ['--config.train.steps=4', '--config.checkpoint.every=2'])
  shutil.copytree(parent, intact)
  shutil.rmtree(intact / 'checkpoints' / '4')   # what the damaged parent must fall back to
  _damage(str(parent), 4)
  two = processes.run(sft(parent) + [f'--workdir={tmp_path}/two'], 2, 4)
  assert_ok(two)
  named = re.findall(r'^.*checkpoint step 4 is damaged.*$', two[0].output, re.M)
  assert len(named) == 1 and "(item 'params'" in named[0], two[0].output[-3000:]
  one = processes.run(sft(intact) + [f'--workdir={tmp_path}/one'], 1, 8)
  assert_ok(one)
  assert len(losses(tmp_path / 'one')) == 3
  assert losses(tmp_path / 'two') == pytest.approx(losses(tmp_path / 'one'), rel=1e-5)
  # With no intact checkpoint left, every process stops with the one line (no traceback, no hang).
  _damage(str(parent), 2)
  two = processes.run(sft(parent) + [f'--workdir={tmp_path}/none'], 2, 4, timeout=120)
  for r in two:
    assert r.returncode == 2, r.output[-3000:]
    assert re.search(r'error: .*no intact checkpoint: step 4 .*step 2 ', r.output), r.output[-3000:]
    assert 'Traceback' not in r.output, r.output[-3000:]

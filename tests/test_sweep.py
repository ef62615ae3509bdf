"""Sweeps: trial expansion and names, validation before anything runs, local runs in parallel,
resume after kill -9, failing trials, aggregation, the SLURM and TPU-VM launchers."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT
from lmresearch.core.errors import ConfigError
from lmresearch.studies import hyper, launchers, plots, results, trials as trials_lib

# A seconds-sized pretraining experiment: the same shrinking as conftest.tiny, as a config file.
EXPERIMENT = '''
import importlib.util, os
def get_config(arg=None):
  spec = importlib.util.spec_from_file_location('p', os.path.join({root!r}, 'configs', 'pretrain.py'))
  mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
  c = mod.get_config()
  c.model.update(num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=16, mlp_dim=32, max_len=32)
  c.data.update(seq_len=32, vocab_size=300)
  c.data.synthetic.num_docs = 200
  c.train.update(steps=3, batch_size=4, log_every=1, eval_every=3, eval_batches=1, warmup_steps=1)
  c.checkpoint.update(every=3, use_async=False)
  return c
def get_sweep(h):
  return {sweep}
def get_report():
  return {{'metrics': {{'eval/loss': 'held-out loss'}},
          'plots': [{{'x': 'lr', 'y': 'eval/loss', 'title': 'loss vs lr'}}]}}
'''


def write_experiment(tmp_path, sweep: str) -> str:
  path = tmp_path / 'exp' / 'config.py'
  path.parent.mkdir(exist_ok=True)
  path.write_text(EXPERIMENT.format(root=ROOT, sweep=sweep))
  return str(path)


def sweep_cmd(config, workdir, *extra):
  return [sys.executable, '-m', 'lmresearch.sweep', f'--config={config}', f'--workdir={workdir}',
          *extra]


def run_sweep(config, workdir, *extra, env=None):
  env = {**(env or os.environ), 'PYTHONPATH': ROOT}
  env.pop('XLA_FLAGS', None)   # the sweep gives each trial its share of the cores
  return subprocess.run(sweep_cmd(config, workdir, *extra), cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def log_runs(workdir, name) -> int:
  """How many times a trial's command was started (one header line per start)."""
  return open(os.path.join(workdir, name, 'trial.log')).read().count('\n=== ')


# ---- expansion ----------------------------------------------------------------------------------

def test_product_zip_and_chain_expand_to_override_dicts():
  a, b = hyper.sweep('train.lr', [1, 2]), hyper.sweep('seed', [0, 1, 2])
  assert hyper.product([a, b])[:4] == [{'train.lr': 1, 'seed': 0}, {'train.lr': 1, 'seed': 1},
                                       {'train.lr': 1, 'seed': 2}, {'train.lr': 2, 'seed': 0}]
  assert len(hyper.product([a, b])) == 6
  assert hyper.zipit([a, hyper.sweep('x.y', [5, 6])]) == [{'train.lr': 1, 'x.y': 5},
                                                        {'train.lr': 2, 'x.y': 6}]
  assert hyper.chain([a, b]) == a + b
  with pytest.raises(ValueError, match='different lengths'):
    hyper.zipit([a, b])


def test_trial_names_are_readable_stable_and_unique():
  trials = hyper.product([hyper.sweep('stages.ppo.ppo.kl_coef', [0.5, 2.0]),
                          hyper.sweep('stages.dpo.dpo.beta', [0.1]), hyper.sweep('seed', [0])])
  assert hyper.names(trials) == ['kl_coef=0.5,beta=0.1,seed=0', 'kl_coef=2.0,beta=0.1,seed=0']
  clash = [{'stages.ppo.train.lr': 1, 'stages.sft.train.lr': 2}]
  assert hyper.names(clash) == ['ppo.train.lr=1,sft.train.lr=2']
  assert hyper.names([{}]) == ['base']
  with pytest.raises(ValueError, match='the same'):
    hyper.names(hyper.chain([hyper.sweep('seed', [0, 1]), hyper.sweep('seed', [1])]))


def test_a_bad_key_in_any_trial_is_rejected_before_anything_runs(tmp_path):
  config = write_experiment(tmp_path, "h.chain([h.sweep('seed', [0, 1]), "
                                      "h.sweep('train.learning_rate', [0.1])])")
  exp = trials_lib.load_experiment(config)
  with pytest.raises(ConfigError, match=r"learning_rate=0.1.*no such key"):
    trials_lib.expand(exp, str(tmp_path / 'w'))
  out = run_sweep(config, tmp_path / 'w')
  assert out.returncode == 2 and 'learning_rate' in out.stderr
  assert not (tmp_path / 'w').exists()
  bad_value = write_experiment(tmp_path, "h.sweep('model.style', ['gpt2', 'mamba'])")
  with pytest.raises(ConfigError, match=r"style=mamba: config.model.style='mamba'"):
    trials_lib.expand(trials_lib.load_experiment(bad_value), str(tmp_path / 'w'))


def test_dry_run_lists_each_trial_and_its_exact_command(tmp_path):
  config = write_experiment(tmp_path, "h.product([h.sweep('train.lr', [0.001, 0.002]), "
                                      "h.sweep('seed', [0, 1])])")
  out = run_sweep(config, tmp_path / 'w', '--dry_run', '--only=seed=1')
  assert out.returncode == 0, out.stderr
  assert 'lr=0.001,seed=1' in out.stdout and 'lr=0.002,seed=1' in out.stdout
  assert 'seed=0' not in out.stdout and '2 trials' in out.stdout
  assert '--config.train.lr=0.002 --config.seed=1' in out.stdout


def test_mean_and_standard_error_match_numpy():
  rng = np.random.default_rng(0)
  values = rng.normal(size=5)
  m, se, n = results.mean_se(list(values) + [None, float('nan')])
  assert n == 5 and np.isclose(m, values.mean())
  assert np.isclose(se, values.std(ddof=1) / np.sqrt(5))
  table = [{'status': 'done', 'lr': lr, 'seed': s, 'loss': lr * 10 + s}
           for lr in (1, 2) for s in range(3)] + [{'status': 'failed', 'lr': 1, 'seed': 9}]
  agg = results.aggregate(table, ['lr', 'seed'], ['loss'])
  assert [(a['lr'], a['loss'][2]) for a in agg] == [(1, 3), (2, 3)]
  assert np.isclose(agg[1]['loss'][0], 21.0) and np.isclose(agg[1]['loss'][1], 1 / np.sqrt(3))


def test_curve_fits_recover_known_parameters():
  d = np.linspace(0.2, 3, 12)
  assert np.allclose(plots.fit('bon', d, d * (1.5 - 0.4 * d))['params'], [1.5, 0.4])
  assert np.allclose(plots.fit('rl', d, d * (0.8 - 0.3 * np.log(d)))['params'], [0.8, 0.3])


def test_tpu_vm_prints_one_gcloud_line_per_trial(tmp_path):
  config = write_experiment(tmp_path, "h.sweep('seed', [0, 1])")
  out = run_sweep(config, 'gs://bucket/sweep', '--launcher=tpu_vm', '--tpu_name=v4-32',
                  '--tpu_zone=us-central2-b')
  lines = out.stdout.strip().splitlines()
  assert out.returncode == 0 and len(lines) == 2, out.stderr
  assert lines[1].startswith('gcloud compute tpus tpu-vm ssh v4-32 --zone=us-central2-b '
                             '--worker=all')
  assert 'LMR_DISTRIBUTED=1 python3 -m lmresearch.main' in lines[1]
  assert '--workdir=gs://bucket/sweep/seed=1 --config.seed=1' in lines[1]


# ---- running ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_four_trials_two_at_a_time_give_results_report_and_plot(tmp_path):
  config = write_experiment(tmp_path, "h.product([h.sweep('train.lr', [0.001, 0.003]), "
                                      "h.sweep('seed', [0, 1])])")
  work = tmp_path / 'w'
  out = run_sweep(config, work, '--parallel=2')
  assert out.returncode == 0, out.stdout + out.stderr
  rows = [json.loads(l) for l in open(work / 'results.jsonl')]
  assert [r['status'] for r in rows] == ['done'] * 4
  assert all(np.isfinite(r['eval/loss']) and r['wall_seconds'] > 0 for r in rows)
  assert open(work / 'results.csv').readline().startswith('trial,lr,seed,status,wall_seconds')
  report = open(work / 'report.md').read()
  assert '| lr | eval/loss |' in report and 'n = 2 seeds per row' in report and ' ± ' in report
  assert os.path.getsize(work / 'eval_loss.png') > 1000
  assert '<table' in open(work / 'report.html').read()
  # Each trial is an ordinary run: its config says so, and its seed took effect.
  assert json.load(open(work / 'lr=0.003,seed=1' / 'config.json'))['seed'] == 1
  assert out.stdout.count('[sweep] start') == 4
  rerun = run_sweep(config, work, '--parallel=2')   # everything finished: nothing runs again
  assert rerun.returncode == 0 and '[sweep] start' not in rerun.stdout
  assert all(log_runs(work, r['trial']) == 1 for r in rows)


@pytest.mark.slow
def test_kill_9_loses_no_finished_trial_and_a_rerun_finishes_the_rest(tmp_path):
  config = write_experiment(tmp_path, "h.sweep('seed', [0, 1, 2])")
  work = tmp_path / 'w'
  env = {**os.environ, 'PYTHONPATH': ROOT}
  env.pop('XLA_FLAGS', None)
  proc = subprocess.Popen(sweep_cmd(config, work), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  first = trials_lib.Trial('seed=0', {}, str(work / 'seed=0'), [])
  deadline = time.time() + 300
  while first.status().get('status') != 'done' and time.time() < deadline:
    time.sleep(0.5)
  proc.send_signal(signal.SIGKILL)   # the sweep dies; a trial it had started may run on
  proc.wait()
  assert first.status()['status'] == 'done'
  out = run_sweep(config, work)
  assert out.returncode == 0, out.stdout + out.stderr
  assert log_runs(work, 'seed=0') == 1                    # the finished trial was not rerun
  rows = [json.loads(l) for l in open(work / 'results.jsonl')]
  assert [r['status'] for r in rows] == ['done'] * 3


@pytest.mark.slow
def test_a_failing_trial_is_recorded_the_rest_finish_and_a_rerun_retries_only_it(tmp_path):
  config = write_experiment(tmp_path, "h.sweep('init_from', ['', '/nonexistent/run'])")
  work = tmp_path / 'w'
  out = run_sweep(config, work)   # a missing parent run fails when the trial starts
  assert out.returncode == 1
  assert 'failed: init_from=_nonexistent_run' in out.stdout
  rows = {r['trial']: r for r in map(json.loads, open(work / 'results.jsonl'))}
  assert rows['init_from=']['status'] == 'done'
  failed = rows['init_from=_nonexistent_run']
  assert failed['status'] == 'failed' and 'nonexistent' in failed['error']
  assert 'Failed trials' in open(work / 'report.md').read()
  again = run_sweep(config, work)
  assert again.returncode == 1
  assert log_runs(work, 'init_from=') == 1 and log_runs(work, 'init_from=_nonexistent_run') == 2


@pytest.mark.slow
def test_slurm_launcher_runs_an_array_job_and_collects_it(tmp_path, slurm):
  config = write_experiment(tmp_path, "h.sweep('seed', [0, 1])")
  work = tmp_path / 'w'
  out = run_sweep(config, work, '--launcher=slurm', env=slurm)
  assert out.returncode == 0, out.stdout + out.stderr
  assert 'submitted SLURM array job' in out.stdout
  script = open(work / 'slurm' / 'sweep.sbatch').read()
  assert '#SBATCH --array=0-1' in script and 'lmresearch.studies.runner' in script
  rows = [json.loads(l) for l in open(work / 'results.jsonl')]
  assert [r['status'] for r in rows] == ['done'] * 2 and all('eval/loss' in r for r in rows)


def test_sbatch_script_carries_nodes_array_throttle_and_extra_lines(tmp_path):
  t = trials_lib.Trial('seed=0', {'seed': 0}, str(tmp_path / 'seed=0'), ['python', '-m', 'x'])
  text = launchers.sbatch_script([t], str(tmp_path), nodes=4, parallel=2,
                                 extra=['--partition=gpu'])
  assert '#SBATCH --nodes=4' in text and '#SBATCH --array=0-0%2' in text
  assert '#SBATCH --partition=gpu' in text


def test_sigterm_records_a_trial_as_interrupted_not_done(tmp_path):
  # A stand-in run that, like the trainer, saves and exits 0 on SIGTERM.
  script = ('import signal, sys, time\n'
            'signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n'
            'print("rea" + "dy", flush=True)\n'   # not a word of the logged command line
            'time.sleep(60)\n')
  t = trials_lib.Trial('x', {}, str(tmp_path / 'x'), [sys.executable, '-c', script])
  t.record(status='queued', cwd=str(tmp_path))
  runner = subprocess.Popen([sys.executable, '-m', 'lmresearch.studies.runner', t.workdir],
                            cwd=ROOT, env={**os.environ, 'PYTHONPATH': ROOT})
  log, deadline = tmp_path / 'x' / 'trial.log', time.time() + 30
  while not (log.exists() and 'ready' in log.read_text()) and time.time() < deadline:
    time.sleep(0.1)
  runner.send_signal(signal.SIGTERM)
  assert runner.wait(timeout=30) == 0
  st = t.status()
  assert st['status'] == 'interrupted' and st['returncode'] == 0 and st['wall_seconds'] > 0


def test_override_columns_keep_their_disambiguated_names(tmp_path):
  t = [trials_lib.Trial(n, ov, str(tmp_path / n), []) for n, ov in
       (('a', {'stages.ppo.train.lr': 1, 'stages.sft.train.lr': 2, 'seed': 0}),
        ('b', {'stages.ppo.train.lr': 3, 'stages.sft.train.lr': 2, 'seed': 0}))]
  table = results.rows(t)
  assert [(r['ppo.train.lr'], r['sft.train.lr']) for r in table] == [(1, 2), (3, 2)]


def test_overrides_that_config_flags_cannot_set_or_that_hit_reused_stages_are_rejected(tmp_path):
  from conftest import load_config
  c = load_config('pipeline')
  with pytest.raises(ConfigError, match='--config flags, which set'):
    trials_lib.apply(c, {'stages.pretrain.rules': [['batch', 'data']]}, 'here')
  path = tmp_path / 'reuse.py'
  path.write_text(f'import importlib.util, os\n'
                  f'spec = importlib.util.spec_from_file_location("p", {os.path.join(ROOT, "configs", "pipeline.py")!r})\n'
                  'mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n'
                  'def get_config(arg=None):\n'
                  '  c = mod.get_config(); c.upstream = "runs/up"; return c\n'
                  'def get_sweep(h):\n'
                  '  return h.sweep("stages.sft.train.lr", [0.1, 0.2])\n')
  with pytest.raises(ConfigError, match='config.reuse takes finished'):
    trials_lib.expand(trials_lib.load_experiment(str(path)), str(tmp_path / 'w'))


@pytest.mark.parametrize('name', sorted(
    d for d in os.listdir(os.path.join(ROOT, 'experiments')) if not d.startswith('_')))
def test_every_shipped_experiment_expands_and_validates(name):
  exp = trials_lib.load_experiment(os.path.join(ROOT, 'experiments', name, 'config.py'))
  if getattr(exp.module, 'SCRIPT', None):   # run by its own script (tests/test_real_base_prompting.py)
    assert os.path.exists(os.path.join(ROOT, 'experiments', name, exp.module.SCRIPT))
    assert len({t.get('seed') for t in exp.sweep()}) >= 3, name
    return
  trials = trials_lib.expand(exp, f'runs/exp/{name}')
  seeds = {t.overrides.get('seed') for t in trials}
  assert trials and exp.report_spec().get('metrics'), name
  assert os.path.exists(os.path.join(ROOT, 'experiments', name, 'README.md')), name
  assert len(seeds) >= 3, f'{name}: {len(seeds)} seeds (every claim holds on more than one)'

"""Run an experiment's trials and tabulate them:

  python -m lmresearch.sweep --config=experiments/instructgpt_ptx/config.py --workdir=runs/ptx \
      [--parallel=2] [--dry_run] [--only=REGEX] [--launcher=local|slurm|tpu_vm]

The experiment file defines get_config (any configs/ family), get_sweep(h) (the trials) and
get_report() (the table and plots): lmresearch/studies/. Each trial is an ordinary run in
<workdir>/<trial name>/. Rerunning skips finished trials, resumes interrupted ones from their
checkpoints and retries failed ones; the exit code is 1 if any trial failed. Afterwards
<workdir>/results.{csv,jsonl} hold a row per trial and report.{md,html} the aggregate over seeds.

  python -m lmresearch.sweep --config=experiments/<name>/config.py --report_only
      re-renders experiments/<name>/README.md (title, verdicts, tables, plots) from the
      results.csv beside it; --publish does so from a finished sweep's results.csv.
"""
from __future__ import annotations

import os
import shlex
import sys

from absl import app, flags

from lmresearch.runtime import cli_errors, fail

flags.DEFINE_string('config', None, 'Experiment file[:arg] (get_config, get_sweep, get_report).')
flags.DEFINE_string('workdir', None, 'Where each trial runs (<workdir>/<trial>/) and the results go.')
flags.DEFINE_integer('parallel', None, 'Trials at once. local (default 1): this host\'s CPU cores '
                     '(or GPUs) split among them. slurm: array tasks at once (default: as many as '
                     'SLURM allows).', lower_bound=1)
flags.DEFINE_bool('dry_run', False, 'List the trials and the exact command of each; run nothing.')
flags.DEFINE_string('only', None, 'Run only the trials whose name matches this regex.')
flags.DEFINE_enum('launcher', 'local', ['local', 'slurm', 'tpu_vm'], 'Where the trials run.')
flags.DEFINE_integer('slurm_nodes', 1, 'slurm: nodes per trial (>1: srun, one process per node, '
                     'joined by jax.distributed).')
flags.DEFINE_multi_string('slurm_arg', [], 'slurm: an extra #SBATCH line, e.g. '
                          '--slurm_arg=--partition=gpu --slurm_arg=--gres=gpu:8 (repeatable).')
flags.DEFINE_string('tpu_name', os.environ.get('TPU_NAME', 'my-tpu'), 'tpu_vm: the TPU VM name.')
flags.DEFINE_string('tpu_zone', os.environ.get('TPU_ZONE', 'us-central2-b'), 'tpu_vm: its zone.')
flags.DEFINE_string('tpu_project', '', 'tpu_vm: the GCP project (default: gcloud\'s).')
flags.DEFINE_string('repo_dir', '~/lmresearch', 'tpu_vm: this repository\'s path on the workers.')
flags.DEFINE_bool('report_only', False, 'Only (re)write results and the report from what ran; '
                  'without --workdir, re-render the experiment README (title, verdicts, tables, '
                  'plots) from the results.csv beside it.')
flags.DEFINE_bool('publish', False, 'After the sweep (or --report_only): copy <workdir>/results.csv '
                  'beside the experiment file and re-render its README from it.')
FLAGS = flags.FLAGS


def sweep() -> int:
  from lmresearch.studies import launchers, results, trials as trials_lib
  exp = trials_lib.load_experiment(FLAGS.config)
  script = getattr(exp.module, 'SCRIPT', None)
  if script:   # an experiment whose trials are not stage runs (e.g. evaluating an imported model)
    raise ValueError(f'{exp.path} runs with its own script: python '
                     f'{os.path.join(os.path.dirname(exp.path), script)} (--report_only re-renders '
                     'its README here).')
  parallel = FLAGS.parallel or 1
  per_trial = launchers.devices_per_trial(parallel) if FLAGS.launcher == 'local' else 1
  trials = trials_lib.expand(exp, FLAGS.workdir, FLAGS.only, per_trial)
  command = 'python -m lmresearch.sweep ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
  if FLAGS.dry_run:
    for t in trials:
      state = t.status().get('status', 'pending')
      print(f'{t.name}  [{state}]\n  ' + ' '.join(shlex.quote(a) for a in t.command))
    print(f'{len(trials)} trials; checked against {exp.spec}.')
    return 0
  if FLAGS.launcher == 'tpu_vm':
    for line in launchers.tpu_vm_commands(trials, tpu_name=FLAGS.tpu_name, zone=FLAGS.tpu_zone,
                                          repo_dir=FLAGS.repo_dir, project=FLAGS.tpu_project):
      print(line)
    return 0
  os.makedirs(FLAGS.workdir, exist_ok=True)
  if not FLAGS.report_only:
    if FLAGS.launcher == 'slurm':
      launchers.run_slurm(trials, FLAGS.workdir, nodes=FLAGS.slurm_nodes,
                          parallel=FLAGS.parallel or 0,
                          extra=FLAGS.slurm_arg,
                          job_name='lmr-' + os.path.basename(os.path.dirname(exp.path)))
    else:
      launchers.run_local(trials, parallel)
  out = results.write_report(FLAGS.workdir, exp, trials, command)
  if FLAGS.publish:
    publish(exp, os.path.join(FLAGS.workdir, 'results.csv'))
  failed = [r['trial'] for r in out['rows'] if r['status'] == 'failed']
  unfinished = [r['trial'] for r in out['rows'] if r['status'] not in ('done', 'failed')]
  print(f'[sweep] {FLAGS.workdir}/results.csv, report.md: {len(out["rows"])} trials'
        + (f'; failed: {", ".join(failed)}' if failed else '')
        + (f'; not finished: {", ".join(unfinished)}' if unfinished else '')
        + ('; rerun the sweep to retry or resume them' if failed or unfinished else ''),
        flush=True)
  return 1 if failed or (unfinished and not FLAGS.report_only) else 0


def publish(exp, results_csv: str) -> None:
  """The sweep's results.csv becomes the experiment's (with the trial files get_report()'s
  `publish_files` names: {name beside the experiment: <trial>/<file>}), and its README is
  rendered from it."""
  import shutil
  from lmresearch.studies import render
  exp_dir = os.path.dirname(os.path.abspath(exp.path))
  target = os.path.join(exp_dir, 'results.csv')
  if os.path.abspath(results_csv) != target:
    shutil.copyfile(results_csv, target)
    for name, source in exp.report_spec().get('publish_files', {}).items():
      shutil.copyfile(os.path.join(os.path.dirname(results_csv), source),
                      os.path.join(exp_dir, name))
  render.refresh_readme(exp)
  print(f'[sweep] {os.path.dirname(target)}/README.md rendered from {target}', flush=True)


def refresh() -> int:
  """--report_only without --workdir: the experiment's README from its own results.csv."""
  from lmresearch.studies import trials as trials_lib
  exp = trials_lib.load_experiment(FLAGS.config)
  publish(exp, os.path.join(os.path.dirname(os.path.abspath(exp.path)), 'results.csv'))
  return 0


def main(argv):
  if len(argv) > 1:
    fail(f'unexpected arguments {argv[1:]}.')
  if not FLAGS.config or not (FLAGS.workdir or FLAGS.report_only):
    fail('--config (an experiment file) and --workdir are required (--report_only alone '
         're-renders the experiment README from its results.csv).')
  try:
    with cli_errors(ValueError):
      rc = sweep() if FLAGS.workdir else refresh()
  except KeyboardInterrupt as e:
    print(f'[sweep] {e}', file=sys.stderr)
    sys.exit(130)
  sys.exit(rc)


if __name__ == '__main__':
  app.run(main)

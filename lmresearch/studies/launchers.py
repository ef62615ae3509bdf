"""Where trials run: this host (`local`, N at a time), a SLURM cluster (`slurm`: one `sbatch
--array` task per trial), or Cloud TPU VMs (`tpu_vm`: the gcloud line per trial, printed).

Every launcher hands a trial to `lmresearch.studies.runner`, which records how it ended, so a
sweep rerun skips what finished and retries what failed, whichever launcher ran it.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Sequence

from lmresearch.core import fileio
from lmresearch.core.errors import ConfigError
from lmresearch.studies.runner import BUSY, LOG, is_running
from lmresearch.studies.trials import Trial

POLL_SECONDS = 2.0
PROGRESS_SECONDS = 60.0


def device_groups(parallel: int) -> list[dict]:
  """This host's devices split into `parallel` groups, as environment settings per trial: GPUs by
  CUDA_VISIBLE_DEVICES, else CPU cores (pinned, and as many JAX CPU devices as cores). With more
  trials than devices, groups share them round-robin."""
  gpus = _gpus()
  if gpus:
    per = max(1, len(gpus) // parallel)
    return [{'CUDA_VISIBLE_DEVICES': ','.join(gpus[(i * per + j) % len(gpus)] for j in range(per))}
            for i in range(parallel)]
  cores = sorted(os.sched_getaffinity(0))
  per = max(1, len(cores) // parallel)
  return [{'cpus': [cores[(i * per + j) % len(cores)] for j in range(per)],
           'XLA_FLAGS': f'--xla_force_host_platform_device_count={per}'} for i in range(parallel)]


def devices_per_trial(parallel: int) -> int:
  g = device_groups(parallel)[0]
  return len(g['cpus']) if 'cpus' in g else len(g['CUDA_VISIBLE_DEVICES'].split(','))


def _gpus() -> list[str]:
  """The GPU ids this process may use (CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list)."""
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    return [g for g in visible.split(',') if g.strip()]
  if not shutil.which('nvidia-smi'):
    return []
  out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True)
  return [str(i) for i, line in enumerate(l for l in out.stdout.splitlines() if l.startswith('GPU '))]


def prepare(trials: Sequence[Trial], skip_running: bool = False) -> list[Trial]:
  """Writes each unfinished trial's trial.json (command, cwd) and returns those to run (without
  the ones a runner holds now, with skip_running)."""
  todo = []
  for t in trials:
    if t.status().get('status') == 'done' or (skip_running and is_running(t.workdir)):
      continue
    t.record(status='queued', cwd=os.getcwd())
    todo.append(t)
  return todo


def _progress(t: Trial) -> str:
  lines = [l.strip() for l in open(os.path.join(t.workdir, LOG), errors='replace')
           if l.strip() and not l.startswith('===')] if os.path.exists(
               os.path.join(t.workdir, LOG)) else []
  return (lines[-1] if lines else 'starting')[:100]


def run_local(trials: Sequence[Trial], parallel: int = 1) -> None:
  """Runs the trials `parallel` at a time on this host's devices, a progress line per trial."""
  todo, groups = list(prepare(trials)), device_groups(parallel)
  free, running, total = list(range(len(groups))), {}, len(todo)
  finished = 0
  stop = []
  def on_signal(sig, _):   # pass SIGTERM/SIGINT on: each run checkpoints and stops
    stop.append(sig)
    for proc, _, _ in running.values():
      proc.send_signal(signal.SIGTERM)
  old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  last_progress = time.time()
  try:
    while (todo and not stop) or running:
      while todo and free and not stop:
        t, slot = todo.pop(0), free.pop(0)
        g = dict(groups[slot])
        cpus = g.pop('cpus', None)
        env = dict(os.environ)
        if 'XLA_FLAGS' in g:   # the trial's own device count replaces any inherited one
          env['XLA_FLAGS'] = re.sub(r'--xla_force_host_platform_device_count=\d+', '',
                                    env.get('XLA_FLAGS', '')) + ' ' + g.pop('XLA_FLAGS')
        env.update(g)
        # Its own session: Ctrl-C reaches only this driver, which asks each trial to stop cleanly.
        proc = subprocess.Popen(
            [sys.executable, '-m', 'lmresearch.studies.runner', t.workdir], env=env,
            start_new_session=True,
            preexec_fn=(lambda c=cpus: os.sched_setaffinity(0, c)) if cpus else None)
        running[t.name] = (proc, t, slot)
        where = f'cpus {cpus[0]}-{cpus[-1]}' if cpus else g.get('CUDA_VISIBLE_DEVICES', '')
        print(f'[sweep] start {t.name} ({where})', flush=True)
      time.sleep(POLL_SECONDS)
      for name, (proc, t, slot) in list(running.items()):
        rc = proc.poll()
        if rc is None:
          continue
        del running[name]
        free.append(slot)
        if rc == BUSY:   # an earlier sweep's runner still holds it: wait for that one
          todo.append(t)
          print(f'[sweep] {name} is still running from an earlier sweep; waiting', flush=True)
          time.sleep(POLL_SECONDS)
          continue
        finished += 1
        st = t.status()
        if rc and st.get('status') not in ('failed', 'interrupted'):   # the runner itself died
          t.record(status='failed', returncode=rc, error_tail=f'the trial runner exited with '
                   f'{rc} before recording a result; see {t.workdir}/{LOG}')
          st = t.status()
        print(f'[sweep] {st.get("status", "?")} {name} ({st.get("wall_seconds", 0):.0f} s, '
              f'{finished}/{total})' + (f': {st.get("error_tail", "").strip().splitlines()[-1:]}'
                                        if rc else ''), flush=True)
      if running and time.time() - last_progress > PROGRESS_SECONDS:
        last_progress = time.time()
        for name, (_, t, _) in running.items():
          since = time.time() - t.status().get('started', time.time())
          print(f'[sweep]   {name} ({since:.0f} s): {_progress(t)}', flush=True)
  finally:
    for s, h in old.items():
      signal.signal(s, h)
  if stop:
    raise KeyboardInterrupt(f'signal {stop[0]}: trials stopped; rerun the sweep to resume them.')


def sbatch_script(trials: Sequence[Trial], workdir: str, *, nodes: int = 1, parallel: int = 0,
                  extra: Sequence[str] = (), job_name: str = 'lmr-sweep') -> str:
  """An array job, one task per trial; a multi-node trial runs its command under srun with the
  jax.distributed environment (each node one process; JAX reads SLURM's variables)."""
  logs = os.path.join(os.path.abspath(workdir), 'slurm')
  array = f'0-{len(trials) - 1}' + (f'%{parallel}' if parallel else '')
  lines = ['#!/bin/bash', f'#SBATCH --job-name={job_name}', f'#SBATCH --array={array}',
           f'#SBATCH --output={logs}/%A_%a.out', f'#SBATCH --nodes={nodes}',
           '#SBATCH --ntasks-per-node=1'] + [f'#SBATCH {a}' for a in extra]
  lines += ['set -euo pipefail', f'cd {shlex.quote(os.getcwd())}',
            'TRIALS=(' + ' '.join(shlex.quote(os.path.abspath(t.workdir)) for t in trials) + ')',
            'DIR="${TRIALS[$SLURM_ARRAY_TASK_ID]}"',
            f'exec {shlex.quote(sys.executable)} -m lmresearch.studies.runner "$DIR"']
  return '\n'.join(lines) + '\n'


def run_slurm(trials: Sequence[Trial], workdir: str, *, nodes: int = 1, parallel: int = 0,
              extra: Sequence[str] = (), job_name: str = 'lmr-sweep') -> str:
  """Submits the unfinished trials as one array job and waits for it; returns the job id."""
  if not shutil.which('sbatch'):
    raise ConfigError('--launcher=slurm: sbatch is not on PATH (run the sweep on a SLURM login '
                      'node, or use --launcher=local).')
  todo = prepare(trials, skip_running=True)   # an earlier array job's tasks are left to it
  if not todo:
    return ''
  if nodes > 1:   # every node runs the trial's command; jax.distributed finds its peers
    for t in todo:
      t.command = ['srun', f'--nodes={nodes}', '--ntasks-per-node=1',
                   '--export=ALL,LMR_DISTRIBUTED=1'] + t.command
      t.record(status='queued', cwd=os.getcwd())
  os.makedirs(os.path.join(workdir, 'slurm'), exist_ok=True)
  script = os.path.join(workdir, 'slurm', 'sweep.sbatch')
  fileio.write_text(script, sbatch_script(todo, workdir, nodes=nodes, parallel=parallel,
                                          extra=extra, job_name=job_name))
  out = subprocess.run(['sbatch', '--parsable', script], capture_output=True, text=True)
  if out.returncode:
    raise ConfigError(f'sbatch {script} failed: {out.stderr.strip()}')
  job = out.stdout.strip().split(';')[0]
  print(f'[sweep] submitted SLURM array job {job} ({len(todo)} trials): {script}', flush=True)
  while True:   # until no task of the job is queued or running
    q = subprocess.run(['squeue', '-h', '-j', job, '-o', '%i %T'], capture_output=True, text=True)
    states = [l for l in q.stdout.splitlines() if l.strip()]
    done = sum(t.status().get('status') in ('done', 'failed') for t in todo)
    # Finished jobs leave squeue; one purged already is an "Invalid job id".
    if (q.returncode == 0 and not states) or 'Invalid job id' in q.stderr:
      break
    print(f'[sweep] job {job}: {done}/{len(todo)} trials ended, {len(states)} tasks in the queue',
          flush=True)
    time.sleep(max(POLL_SECONDS, 5.0))
  for t in todo:   # a task SLURM killed before the runner could record it
    if t.status().get('status') not in ('done', 'failed', 'interrupted'):
      t.record(status='failed', error_tail=f'SLURM job {job} ended without a result; see '
               f'{workdir}/slurm/{job}_*.out')
  return job


def tpu_vm_commands(trials: Sequence[Trial], *, tpu_name: str, zone: str, repo_dir: str,
                    project: str = '') -> list[str]:
  """One gcloud line per trial: the same command on every worker of the slice (one process per
  host; jax.distributed finds its peers on Cloud TPU). The workdir should be on GCS (gs://)."""
  out = []
  for t in trials:
    inner = (f'cd {repo_dir} && LMR_DISTRIBUTED=1 '
             + ' '.join(shlex.quote(a) for a in ['python3'] + t.command[1:]))
    cmd = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', tpu_name, f'--zone={zone}',
           '--worker=all'] + ([f'--project={project}'] if project else []) + [f'--command={inner}']
    out.append(' '.join(shlex.quote(a) for a in cmd))
  return out

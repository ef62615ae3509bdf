"""Runs one trial and records how it ended: `python -m lmresearch.sweeps.runner TRIAL_DIR`.

Every launcher runs a trial through this (locally as a child process, on SLURM as an array task),
so status is recorded the same way everywhere: `trial.json` gets status running -> done | failed,
the return code, wall seconds and, on failure, the last lines of `trial.log`. A lock on the trial
directory keeps two runners (say, a sweep rerun while an orphaned trial still runs) off one trial.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

LOG = 'trial.log'
TAIL_LINES = 20
BUSY = 75   # exit code: another runner holds this trial


def tail(path: str, lines: int = TAIL_LINES) -> str:
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except FileNotFoundError:
    return ''


def run_trial(trial_dir: str, env: dict | None = None) -> int:
  """Runs the command in trial_dir/trial.json (cwd: the sweep's), appending to trial.log."""
  from lmresearch import fileio
  status_path = os.path.join(trial_dir, 'trial.json')
  lock = open(os.path.join(trial_dir, '.lock'), 'w')
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    print(f'{trial_dir}: another runner holds this trial', file=sys.stderr)
    return BUSY
  with open(status_path) as f:
    status = json.load(f)
  if status.get('status') == 'done':
    return 0
  start = time.time()
  prior = float(status.get('wall_seconds') or 0.0) if status.get('status') != 'done' else 0.0
  status.update(status='running', started=start, host=os.uname().nodename)
  fileio.write_json(status_path, status, indent=2)
  log_path = os.path.join(trial_dir, LOG)
  with open(log_path, 'a') as log:
    log.write(f'\n=== {time.strftime("%Y-%m-%d %H:%M:%S")} {" ".join(status["command"])}\n')
    log.flush()
    proc = subprocess.Popen(status['command'], cwd=status.get('cwd'), stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    forward = lambda sig, _: proc.send_signal(sig)   # SIGTERM: the run checkpoints and stops
    old = signal.signal(signal.SIGTERM, forward)
    try:
      rc = proc.wait()
    finally:
      signal.signal(signal.SIGTERM, old)
  # Wall time adds up over reruns of an interrupted trial: the compute the result cost.
  status.update(status='done' if rc == 0 else 'failed', returncode=rc, finished=time.time(),
                wall_seconds=prior + time.time() - start)
  if rc:
    status['error_tail'] = tail(log_path)
  else:
    status.pop('error_tail', None)
  fileio.write_json(status_path, status, indent=2)
  return rc


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('usage: python -m lmresearch.sweeps.runner TRIAL_DIR')
  sys.exit(run_trial(sys.argv[1]))

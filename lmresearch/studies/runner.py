"""Runs one trial and records how it ended: `python -m lmresearch.studies.runner TRIAL_DIR`.

Every launcher runs a trial through this (locally as a child process, on SLURM as an array task),
so status is recorded the same way everywhere: `trial.json` gets status running -> done | failed |
interrupted (SIGTERM or Ctrl-C: the run checkpointed and stopped; a rerun resumes it), the return
code, wall seconds and, on failure, the last lines of `trial.log`. A lock on the trial directory,
held by the runner and inherited by the run itself, keeps two runs of one trial from overlapping
(say, a sweep rerun while a trial of a killed sweep still runs).
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
  from lmresearch.core import fileio
  status_path = os.path.join(trial_dir, 'trial.json')
  lock = open(os.path.join(trial_dir, '.lock'), 'w')
  if not try_lock(lock):
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
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            start_new_session=True, pass_fds=(lock.fileno(),))
    stopped = []
    def forward(sig, _):   # SIGTERM or Ctrl-C: the run checkpoints and stops; it is not done
      stopped.append(sig)
      proc.send_signal(signal.SIGTERM)
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
      rc = proc.wait()
    finally:
      while proc.poll() is None:   # never leave the trial running without its runner (and lock)
        proc.wait()
      for s, h in old.items():
        signal.signal(s, h)
  # Wall time adds up over reruns of an interrupted trial: the compute the result cost.
  state = 'interrupted' if stopped else 'done' if rc == 0 else 'failed'
  status.update(status=state, returncode=rc, finished=time.time(),
                wall_seconds=prior + time.time() - start)
  if state == 'failed':
    status['error_tail'] = tail(log_path)
  else:
    status.pop('error_tail', None)
  fileio.write_json(status_path, status, indent=2)
  return BUSY + 1 if rc == BUSY else rc   # BUSY means only "another runner holds it"


def try_lock(f) -> bool:
  """An exclusive lock on an open file, without waiting (False if another process holds it; a
  filesystem without locks counts as unlocked)."""
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False
  except OSError:
    return True


def is_running(trial_dir: str) -> bool:
  """Whether a runner holds this trial now."""
  path = os.path.join(trial_dir, '.lock')
  if not os.path.exists(path):
    return False
  with open(path, 'a') as f:
    held = not try_lock(f)
    if not held:
      fcntl.flock(f, fcntl.LOCK_UN)
    return held


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('usage: python -m lmresearch.studies.runner TRIAL_DIR')
  sys.exit(run_trial(sys.argv[1]))

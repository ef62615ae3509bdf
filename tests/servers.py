"""A `python -m lmresearch.serve` subprocess for the tests that need a real server: started, waited
for until it answers, and stopped (SIGINT, then kill) however the test ends."""
import contextlib
import signal
import socket
import subprocess
import time

import httpx
import pytest


def free_port() -> int:
  with contextlib.closing(socket.socket()) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def running(argv, port: int, log_path, *, cwd=None, env=None, probe='/v1/models',
            timeout: float = 120, stop_wait: float = 20):
  """The server command running until the block ends: yields (url, process) once `probe`
  answers; its output goes to `log_path`, shown when it exits early or never answers."""
  log = open(log_path, 'w')
  proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
  url = f'http://127.0.0.1:{port}'
  try:
    deadline = time.time() + timeout
    while True:
      if proc.poll() is not None:
        pytest.fail(f'the server exited ({proc.returncode}): {open(log_path).read()}')
      try:
        httpx.get(url + probe, timeout=5)
        break
      except httpx.TransportError:
        if time.time() > deadline:
          pytest.fail(f'the server did not answer in {timeout:.0f} s: {open(log_path).read()}')
        time.sleep(0.1)
    yield url, proc
  finally:
    if proc.poll() is None:
      proc.send_signal(signal.SIGINT)
      try:
        proc.wait(stop_wait)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()

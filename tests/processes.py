"""Runs one command as an N-process JAX job on localhost (each process with its own CPU devices,
joined through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID on a free port) and
collects each process's exit code and output."""
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile

from conftest import ROOT


@dataclasses.dataclass
class Result:
  returncode: int
  output: str


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start(args, processes: int, devices_per_process: int, env=None) -> list[subprocess.Popen]:
  """`python ...args` on `processes` local processes of one JAX job (not waited for)."""
  port = free_port()
  procs = []
  for i in range(processes):
    penv = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}',
            'JAX_NUM_PROCESSES': str(processes), 'JAX_PROCESS_ID': str(i),
            'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices_per_process}',
            **(env or {})}
    # Output to a file, not a pipe: a process blocked on a full pipe would stall the collectives
    # of all the others while we wait on one of them.
    log = tempfile.TemporaryFile('w+')
    proc = subprocess.Popen([sys.executable] + list(args), cwd=ROOT, env=penv, text=True,
                            stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    procs.append(proc)
  return procs


def collect(procs, timeout: float = 300) -> list[Result]:
  """Each process's exit code and output; one still running after `timeout` seconds (counted
  from this call) is killed and reported with returncode -9."""
  import time
  deadline = time.time() + timeout
  out = []
  for p in procs:
    try:
      p.wait(timeout=max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()
    p.log.seek(0)
    out.append(Result(p.returncode, p.log.read()))
    p.log.close()
  return out


def run(args, processes: int, devices_per_process: int, timeout: float = 300,
        env=None) -> list[Result]:
  """`python ...args` on `processes` local processes, waited for."""
  return collect(start(args, processes, devices_per_process, env), timeout)

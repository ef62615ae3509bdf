"""Runs one command as an N-process JAX job on localhost (each process with its own CPU devices,
joined through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID on a free port) and
collects each process's exit code and output."""
import dataclasses
import os
import socket
import subprocess
import sys

from conftest import ROOT


@dataclasses.dataclass
class Result:
  returncode: int
  output: str


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run(args, processes: int, devices_per_process: int, timeout: float = 300) -> list[Result]:
  """`python -m ...args` on `processes` local processes; a process that hangs past `timeout`
  is killed and reported with returncode -9."""
  port = free_port()
  procs = []
  for i in range(processes):
    env = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}',
           'JAX_NUM_PROCESSES': str(processes), 'JAX_PROCESS_ID': str(i),
           'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices_per_process}'}
    procs.append(subprocess.Popen([sys.executable] + list(args), cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  out = []
  for p in procs:
    try:
      text, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      p.kill()
      text, _ = p.communicate()
    out.append(Result(p.returncode, text))
  return out

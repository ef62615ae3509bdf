"""Metrics out: `metrics.jsonl` (one object per logged step), TensorBoard events, and MFU."""
from __future__ import annotations

import functools
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from lmresearch.core import fileio

# Dense bf16 peak FLOP/s per chip, from vendor specs, for MFU. CPUs are measured instead.
PEAK_FLOPS = {
    'tpu v4': 275e12, 'tpu v5 lite': 197e12, 'tpu v5e': 197e12, 'tpu v5p': 459e12,
    'tpu v5': 459e12, 'tpu v6 lite': 918e12, 'tpu v6e': 918e12,
    'h100': 989e12, 'h200': 989e12, 'a100': 312e12, 'l4': 121e12, 'b200': 2250e12,
}


@functools.lru_cache(maxsize=1)
def measured_cpu_peak_flops(n: int = 1024, repeats: int = 5) -> float:
  """fp32 matmul FLOP/s of this CPU (all cores): the best of a few n x n matmuls."""
  a = jax.device_put(jnp.ones((n, n), jnp.float32), jax.devices('cpu')[0])
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def peak_flops(override: float = 0.0) -> float:
  """Peak FLOP/s of all devices of the job."""
  if override > 0:
    return override
  dev = jax.devices()[0]
  if dev.platform == 'cpu':
    return measured_cpu_peak_flops()  # simulated CPU devices share the same cores
  kind = dev.device_kind.lower()
  for key, value in PEAK_FLOPS.items():
    if key in kind:
      return value * jax.device_count()
  return 0.0


class MetricWriter:
  """Appends to metrics.jsonl and TensorBoard; only process 0 writes. An object store (gs://)
  has no append: there the file is rewritten whole, from the rows kept in memory."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.path = fileio.join(workdir, 'metrics.jsonl')
    self.rows = None   # remote: the file's text
    self.tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter   # writes gs:// itself (google-cloud-storage)
      self.tb = SummaryWriter(fileio.join(workdir, 'tensorboard'))
      if fileio.is_remote(self.path):
        self.rows = fileio.read_text(self.path) if fileio.exists(self.path) else ''

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {'step': int(step)}
    for k, v in metrics.items():
      v = float(np.asarray(v))
      row[k] = v
      self.tb.add_scalar(k, v, step)
    if self.rows is not None:
      self.rows += json.dumps(row) + '\n'
      fileio.write_text(self.path, self.rows)
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')

  def truncate_after(self, step: int) -> None:
    """On resume, drop rows the killed run logged past its last checkpoint (they are redone)."""
    if not self.enabled or not fileio.exists(self.path):
      return
    rows = [l for l in fileio.read_text(self.path).splitlines(keepends=True)
            if l.strip() and json.loads(l).get('step', 0) <= step]
    fileio.write_text(self.path, ''.join(rows))
    if self.rows is not None:
      self.rows = ''.join(rows)

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


def read_metrics(workdir: str) -> list[dict]:
  path = fileio.join(workdir, 'metrics.jsonl')
  if not fileio.exists(path):
    return []
  return [json.loads(l) for l in fileio.read_text(path).splitlines() if l.strip()]

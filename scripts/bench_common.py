"""What the benchmark processes share (no JAX, no torch here: each process imports only its own
framework): cores, the share of the CPU that OTHER processes used while we timed, peak memory, and
one summary of per-iteration times."""
import os
import resource
import statistics
import time


def cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:   # not Linux
    return os.cpu_count() or 1


class OthersShare:
  """Fraction of the machine's CPU that other processes used between start() and stop(): busy time
  from /proc/stat minus this process's own CPU time (Linux; stop() is None elsewhere)."""

  @staticmethod
  def _snap():
    try:
      with open('/proc/stat') as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
      return None
    busy = sum(v for i, v in enumerate(fields) if i not in (3, 4, 7))   # not idle/iowait/steal
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), busy / os.sysconf('SC_CLK_TCK'), r.ru_utime + r.ru_stime

  def start(self):
    self.s0 = self._snap()
    return self

  def stop(self):
    s1 = self._snap()
    if self.s0 is None or s1 is None:
      return None
    (w0, b0, o0), (w1, b1, o1) = self.s0, s1
    return max(0.0, ((b1 - b0) - (o1 - o0)) / ((w1 - w0) * (os.cpu_count() or 1)))


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def summarize(times, cpu_times, tokens_per_iter: int, others) -> dict:
  """Wall-clock and process-CPU seconds per timed iteration -> the figures both frameworks report."""
  med = statistics.median(times)
  q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (med, med, med)
  return {'ms_per_iter_median': med * 1e3, 'ms_per_iter_mean': statistics.fmean(times) * 1e3,
          'ms_p25': q1 * 1e3, 'ms_p75': q3 * 1e3,
          'ms_per_iter_min': min(times) * 1e3,
          'cpu_ms_per_iter_median': statistics.median(cpu_times) * 1e3,
          'tokens_per_sec': tokens_per_iter / med, 'others_cpu_frac': others,
          'peak_rss_mb': peak_rss_mb()}

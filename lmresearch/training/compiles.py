"""How many XLA programs this process has lowered, and the seconds spent tracing, lowering and
compiling them: the trainer logs both since its loop began (`perf/programs`, `perf/compile_s`),
so a program compiled again inside the loop (a shape or sharding that drifts from step to step)
shows in the metrics and fails a test, instead of hiding in the step time; and the persistent
cache's effect shows as compile seconds, cold against warm."""
from __future__ import annotations

import threading

import jax

# Emitted once per lowering (a jit cache miss), whether or not the persistent cache then has the
# compiled executable: it counts distinct programs.
LOWERED = '/jax/core/compile/jaxpr_to_mlir_module_duration'
TIMED = (LOWERED, '/jax/core/compile/jaxpr_trace_duration',
         '/jax/core/compile/backend_compile_duration')   # the last one: persistent-cache misses
_lock = threading.Lock()
_state = {'count': 0, 'seconds': 0.0, 'listening': False}


def _listen(event: str, duration: float, **kwargs) -> None:
  if event in TIMED:
    with _lock:
      _state['seconds'] += duration
      _state['count'] += event == LOWERED


def _start() -> None:
  if not _state['listening']:
    jax.monitoring.register_event_duration_secs_listener(_listen)
    _state['listening'] = True


def count() -> int:
  """Programs lowered so far (counting starts at the first call of count or seconds)."""
  with _lock:
    _start()
    return _state['count']


def seconds() -> float:
  """Seconds spent tracing, lowering and compiling so far (same start)."""
  with _lock:
    _start()
    return _state['seconds']

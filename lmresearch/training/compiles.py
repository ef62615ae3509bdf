"""How many XLA programs this process has lowered: the trainer logs the count since its loop began
(`perf/programs`), so a program compiled again inside the loop (a shape or sharding that drifts
from step to step) shows in the metrics and fails a test, instead of hiding in the step time."""
from __future__ import annotations

import threading

import jax

# Emitted once per lowering (jit cache miss), whether or not the persistent cache then has the
# compiled executable: the number of distinct programs, not the seconds spent compiling them.
EVENT = '/jax/core/compile/jaxpr_to_mlir_module_duration'
_lock = threading.Lock()
_state = {'count': 0, 'listening': False}


def _listen(event: str, duration: float, **kwargs) -> None:
  if event == EVENT:
    with _lock:
      _state['count'] += 1


def count() -> int:
  """Programs lowered so far (counting starts at the first call)."""
  with _lock:
    if not _state['listening']:
      jax.monitoring.register_event_duration_secs_listener(_listen)
      _state['listening'] = True
    return _state['count']

"""The language-model runs under a workdir, each served by its own engine, loaded on first use;
and the bridge from an engine's thread to the web server's event loop.

A run is a directory with config.json and checkpoints/ (a stage of a pipeline workdir, a single
run, an imported Hugging Face model, a LoRA run); reward models are not served. Its name is its
path under the workdir ('sft', 'ppo', 'qwen').
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
from typing import AsyncIterator, Optional

from lmresearch.generation.engine import Engine, Request, Token

MAX_DEPTH = 3


def discover(workdir: Optional[str]) -> dict:
  """{name: path} of the language-model runs at or under `workdir`."""
  if not workdir:
    return {}
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'--workdir={workdir}: no such directory.')
  found = {}
  root = os.path.abspath(workdir)
  # Symlinks are followed: a pipeline's reused stage (config.reuse) is one, and so is a directory
  # a user gathers runs into. A link back to a directory it is inside is not (a loop).
  for here, dirs, files in os.walk(root, followlinks=True):
    depth = os.path.relpath(here, root).count(os.sep) + (here != root)
    real = os.path.realpath(here)
    dirs[:] = sorted(d for d in dirs if not d.startswith('.') and d not in (
        'checkpoints', 'tensorboard') and not _encloses(os.path.join(here, d), real))
    if depth >= MAX_DEPTH:
      dirs[:] = []
    if 'config.json' not in files or not os.path.isdir(os.path.join(here, 'checkpoints')):
      continue
    try:
      with open(os.path.join(here, 'config.json')) as f:
        stage = json.load(f).get('stage')
    except (OSError, ValueError):
      continue
    if stage == 'reward':
      continue
    name = os.path.relpath(here, root) if here != root else os.path.basename(root)
    found[name.replace(os.sep, '/')] = here
  return found


def _encloses(path: str, real: str) -> bool:
  """Whether `path` resolves to `real` (a resolved directory) or to one of its ancestors."""
  target = os.path.realpath(path)
  return real == target or real.startswith(target.rstrip(os.sep) + os.sep)


def load_lean(path: str):
  """A run to serve, restored about one array at a time with the restore's freed buffers given
  back (Gemma 3 270M: 1.84 -> 1.36 GB after loading 1.0 GB of params); then the threshold goes
  to glibc's largest dynamic one, so that serving's own buffers come from the heap as before."""
  import jax

  from lmresearch.stages import runs
  from lmresearch.core.fileio import mmap_threshold
  mmap_threshold(32 << 10)
  try:
    run = runs.load(path, chat=True, lean=True)
    jax.block_until_ready(run.params)
  finally:
    mmap_threshold(32 << 20)
  return run


class Registry:
  """Names -> engines. `engine(name)` loads the run (its latest checkpoint) on first use."""

  def __init__(self, workdir: Optional[str], slots: int = 16, warm: bool = False,
               max_len: int = 0, kv_cache_gb: Optional[float] = None):
    from lmresearch.generation.engine import KV_CACHE_GB
    self.paths = discover(workdir)
    self.slots, self.warm = slots, warm
    self.max_len = max_len
    self.kv_cache_gb = KV_CACHE_GB if kv_cache_gb is None else kv_cache_gb
    self._engines: dict = {}
    self._loading: dict = {}   # name -> the lock its first load holds
    self._lock = threading.Lock()

  def names(self) -> list:
    return sorted(self.paths)

  def engine(self, name: str) -> Engine:
    """The model's engine; the first call loads its run (seconds: call it off the event loop).
    A loaded engine is returned without taking a lock; loading one model never waits on another."""
    if name not in self.paths:
      raise KeyError(name)
    engine = self._engines.get(name)
    if engine is not None:
      return engine
    with self._lock:
      lock = self._loading.setdefault(name, threading.Lock())
    with lock:
      if name not in self._engines:
        self._engines[name] = Engine(load_lean(self.paths[name]), slots=self.slots,
                                     warm=self.warm, max_len=self.max_len,
                                     kv_cache_gb=self.kv_cache_gb)
      return self._engines[name]

  def loaded(self) -> list:
    return sorted(self._engines)

  def close(self) -> None:
    with self._lock:
      for e in self._engines.values():
        e.close()
      self._engines.clear()


@dataclasses.dataclass
class Result:
  text: str = ''
  tokens: list = dataclasses.field(default_factory=list)   # Token per generated token (and the
                                                           # stop id that ended it: Token.end)
  finish_reason: Optional[str] = None


class EngineError(RuntimeError):
  """The engine failed this request (a step or prefill raised): the API answers 500."""


class _Mailbox:
  """Events from the engine's thread into one event loop's queues, with one wake-up per burst:
  a decode step emits a token for every live stream, and waking the loop once per token (a
  write to its self-pipe each) costs more than the step on a busy 2-core machine."""

  def __init__(self, loop):
    self.loop, self.items, self.lock, self.scheduled = loop, [], threading.Lock(), False

  def post(self, queue, item) -> None:
    """Raises RuntimeError when the loop is closed (the engine then cancels the request)."""
    with self.lock:
      self.items.append((queue, item))
      if self.scheduled:
        return
      self.scheduled = True
    try:
      self.loop.call_soon_threadsafe(self._deliver)
    except RuntimeError:
      with self.lock:
        self.scheduled = False
      raise

  def _deliver(self) -> None:
    with self.lock:
      items, self.items, self.scheduled = self.items, [], False
    for queue, item in items:
      queue.put_nowait(item)


_mailboxes: dict = {}


def _mailbox(loop) -> _Mailbox:
  box = _mailboxes.get(loop)
  if box is None:
    for old in [l for l in _mailboxes if l.is_closed()]:
      del _mailboxes[old]
    box = _mailboxes[loop] = _Mailbox(loop)
  return box


async def stream(engine: Engine, prompt, *, max_tokens: int, **settings) -> AsyncIterator[Token]:
  """Tokens of one generation as they come; the last yielded item is the finish reason (str).
  Leaving the loop early (a client gone) cancels the request and frees its slot."""
  box = _mailbox(asyncio.get_running_loop())
  events: asyncio.Queue = asyncio.Queue()
  req = Request(list(prompt), max_tokens,
                lambda kind, payload: box.post(events, (kind, payload)), **settings)
  engine.submit(req)
  try:
    while True:
      kind, payload = await events.get()
      if kind == 'token':
        yield payload
      elif kind == 'error':
        raise EngineError(payload)
      else:
        yield payload
        return
  finally:
    req.cancelled.set()


async def gather_or_cancel(*coros) -> list:
  """asyncio.gather that cancels the rest when one fails (a 429 on one choice must not leave its
  siblings generating into slots the server needs)."""
  tasks = [asyncio.ensure_future(c) for c in coros]
  try:
    return await asyncio.gather(*tasks)
  except BaseException:
    for t in tasks:
      t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    raise


async def complete(engine: Engine, prompt, *, max_tokens: int, **settings) -> Result:
  out = Result()
  async for ev in stream(engine, prompt, max_tokens=max_tokens, **settings):
    if isinstance(ev, Token):
      out.tokens.append(ev)
      out.text += ev.text
    else:
      out.finish_reason = ev
  return out

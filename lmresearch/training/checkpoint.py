"""Orbax checkpoints: params, the rest of the train state, and the data iterator's position.

Saves are async and atomic (Orbax writes to a temporary directory and renames it when complete),
so a run killed mid-save leaves the previous checkpoint as the latest one.
"""
from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import threading
from typing import Optional

import jax
import orbax.checkpoint as ocp
from etils import epath

from lmresearch.core import fileio

ITEMS = ('params', 'train', 'data')
PART_DAMAGED = '.damaged-part'   # <step>.damaged-part: one process could not read its part
RESTORE_AGREE_MS = int(os.environ.get('LMR_RESTORE_AGREE_MS', 60_000))
_asked = itertools.count()   # every process asks in the same order: one key per question


def abstract_with_shardings(abstract_tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)


class Checkpointer:
  def __init__(self, directory: str, max_to_keep: int = 3, use_async: bool = True,
               save_concurrent_bytes: int = 0, save_chunk_bytes: int = 0, save_file_bytes: int = 0):
    """save_concurrent_bytes > 0: at most that many bytes of params in flight to storage at once
    (at least the largest array). Orbax otherwise writes every array at once, each through its
    own copy in tensorstore: a second model's worth of memory, where `convert` holds the only
    other copy. save_chunk_bytes > 0: params stored in chunks of at most that many bytes (smaller
    write buffers; on the 124M import, 4 MB chunks lowered the peak by a few percent).
    save_file_bytes > 0: params written in OCDBT data files of about that size. Tensorstore
    holds a data file in memory until it is written, and the default target is 2 GiB, so a
    model under that was buffered whole: on the 124M import, 8 MB files lowered the peak of the
    save from about 0.25 GB over the params to about 0.07 GB."""
    self.directory = fileio.absolute(directory)
    self.save_chunk_bytes, self.save_file_bytes = save_chunk_bytes, save_file_bytes
    items = {'item_names': ITEMS}
    if save_concurrent_bytes or save_file_bytes:
      limit = {'save_concurrent_gb': save_concurrent_bytes / 1e9} if save_concurrent_bytes else {}
      items = _items(ocp.PyTreeCheckpointHandler(**limit))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=use_async),
        **items)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, params, train: dict, data_state: dict) -> None:
    save_args = None
    if self.save_chunk_bytes:
      save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=self.save_chunk_bytes), params)
    if self.save_file_bytes:
      params_args = ocp.args.PyTreeSave(params, save_args=save_args,
                                        ocdbt_target_data_file_size=self.save_file_bytes)
    else:
      params_args = ocp.args.StandardSave(params, save_args=save_args)
    self.manager.save(step, args=ocp.args.Composite(
        params=params_args, train=ocp.args.StandardSave(train),
        data=ocp.args.JsonSave(data_state)))

  def restore_latest_intact(self, abstract_params, abstract_train):
    """(step, params, train, data) of the newest checkpoint that restores whole, or None if
    there is none. A damaged newer one is named in one line and set aside as `<step>.damaged`
    (so the run can save that step again); if every checkpoint is damaged, CheckpointError."""
    args = {'params': lambda: ocp.args.StandardRestore(abstract_params),
            'train': lambda: ocp.args.StandardRestore(abstract_train),
            'data': ocp.args.JsonRestore}
    step, items = newest_intact(self.manager, self.directory, args)
    damaged = [s for s in self.manager.all_steps() if step is None or s > step]
    for s in damaged:
      if jax.process_index() == 0:
        epath.Path(self.directory, str(s)).rename(epath.Path(self.directory, f'{s}.damaged'))
        epath.Path(self.directory, f'{s}{PART_DAMAGED}').unlink(missing_ok=True)
    if damaged:
      self.manager.reload()
    return None if step is None else (step, items['params'], items['train'], items['data'])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class CheckpointError(FileNotFoundError):
  """No checkpoint of a run can be restored (each one named, with its damaged item). A kind of
  "not found", so every command line reports it as one line, exit 2."""


def newest_intact(manager, directory: str, args: dict, steps=None):
  """The newest of `steps` (default: all) whose items in `args` (name -> restore args factory)
  all restore -> (step, {name: value}), or (None, {}) when there are no steps. A damaged one is
  named in one line and skipped; when all are damaged, CheckpointError names each."""
  steps = sorted(manager.all_steps() if steps is None else steps, reverse=True)
  problems = []
  _quiet_leftovers()
  for step in steps:
    marker = epath.Path(directory, f'{step}{PART_DAMAGED}')
    if marker.exists():   # a process found its part of this step damaged in an earlier try
      name, why = 'params', f'marked by {marker.name}: {marker.read_text().strip()}'
    else:
      items = {}
      try:
        for name, make in args.items():
          items[name] = manager.restore(step, args=ocp.args.Composite(**{name: make()}))[name]
        return step, items
      except Exception as e:   # a shape mismatch is a config error; anything else, damage
        if isinstance(e, jax.errors.JaxRuntimeError) and jax.process_count() > 1:
          raise   # a collective failed: a process is lost, which is not damage (runtime says so)
        why = _first_line(e)
        if isinstance(e, ValueError) and 'shape' in why.lower() and 'OUT_OF_RANGE' not in why:
          raise ValueError(f'{directory} step {step} does not fit this model ({why}); check that '
                           'config.model matches the run that wrote it.') from None
      if not _every_process_failed(directory, step, why):
        # The others read their parts whole and wait for this one inside Orbax's restore: they
        # cannot go back a step with it. Mark the step so that every process skips it next time.
        i, n = jax.process_index(), jax.process_count()
        marker.write_text(f'process {i} of {n}, item {name!r}: {why}\n')
        print(f'error: {directory}: checkpoint step {step} is damaged in the part process {i} of '
              f'{n} reads (item {name!r}: {why}); marked it ({marker}): rerun the job and every '
              'process goes back to an older step.', file=sys.stderr, flush=True)
        os._exit(2)   # now: a normal exit would wait for the blocked ones at JAX's shutdown
    problems.append(f'step {step} ({name}: {why})')
    print(f'warning: {directory}: checkpoint step {step} is damaged (item {name!r}: {why}); '
          'trying an older one.', file=sys.stderr, flush=True)
  if problems:
    raise CheckpointError(f'{directory}: no intact checkpoint: {"; ".join(problems)}. Delete the '
                          'damaged steps to start over.')
  return None, {}


def _every_process_failed(directory: str, step: int, why: str) -> bool:
  """Whether every process of the job failed to restore `step` (then all go back a step
  together). Asked through the coordination service's key-value store (as Orbax and JAX's own
  array serialization do), not a collective: a process that read its part whole is blocked in
  Orbax's closing barrier and posts nothing, so after RESTORE_AGREE_MS the answer is no."""
  if jax.process_count() == 1:
    return True
  client = jax._src.distributed.global_state.client   # pylint: disable=protected-access
  key = f'lmr/restore_failed/{next(_asked)}/{directory}/{step}'
  client.key_value_set(f'{key}/{jax.process_index()}', why)
  try:
    for p in range(jax.process_count()):
      client.blocking_key_value_get(f'{key}/{p}', RESTORE_AGREE_MS)
  except Exception:   # timed out: some process restored its part
    return False
  return True


def _quiet_leftovers() -> None:
  """If a restore fails, Orbax's other reads of the item still finish on their threads and
  report into a closed event loop ("Event loop is closed", "Task exception was never retrieved"):
  a 30-line echo of the one error already named. Those two messages alone are dropped."""
  def hook(unraisable, previous=sys.unraisablehook):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and 'Event loop is closed' in str(unraisable.exc_value)):
      previous(unraisable)
  if not getattr(sys.unraisablehook, 'lmr_quiet', False):
    hook.lmr_quiet = True
    sys.unraisablehook = hook
    logging.getLogger('asyncio').addFilter(
        lambda record: 'exception was never retrieved' not in record.getMessage())
    threading.excepthook = _thread_hook(threading.excepthook)


def _thread_hook(previous):
  def hook(args):
    if not (args.exc_type is RuntimeError and 'Event loop is closed' in str(args.exc_value)):
      previous(args)
  return hook


def _first_line(e: Exception) -> str:
  """The error in a few words: a TensorStore read error as its status and the array it read."""
  text = str(e)
  status = re.search(r'\b(DATA_LOSS|OUT_OF_RANGE|NOT_FOUND|FAILED_PRECONDITION|INVALID_ARGUMENT)\b',
                     text)
  read = re.search(r'Error reading "([^"]+)"', text)
  if status and read:
    return f'{status.group(1)} reading {read.group(1)}'
  array = re.findall(r"'path': '([^'/]+)/?'", text)   # an array's path inside the checkpoint
  if text.startswith('Encountered error while reading') and array:
    return f'error reading {array[-1]}'
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return (f'{type(e).__name__}: ' + (lines[-1] if lines else ''))[:200]


def _items(params_handler) -> dict:
  """CheckpointManager's items with the params read or written by `params_handler` (its limits
  on bytes in flight); the others as the default handlers."""
  return {'item_handlers': {'params': params_handler, 'train': ocp.StandardCheckpointHandler(),
                            'data': ocp.JsonCheckpointHandler()}}


def largest_bytes(tree) -> int:
  """A limit on bytes in flight that lets the largest array through alone (Orbax admits an
  array only while the total stays under the limit)."""
  return int(max(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)) * 1.01) + (1 << 20)


def restore_params(workdir: str, abstract_params, step: Optional[int] = None,
                   concurrent_bytes: int = 0):
  """Only the params of a run's checkpoint (for sampling, evaluation, or a later stage): the
  given step, or the newest intact one. concurrent_bytes > 0: at most that many bytes read at
  once (Orbax otherwise reads every array at once, and their buffers on the way to the devices
  came on top of the restored model: 1.5 GB at the end of restoring a 1B model)."""
  directory = fileio.join(fileio.absolute(workdir), 'checkpoints')
  if not fileio.isdir(directory):
    raise FileNotFoundError(f'{workdir}: no checkpoints/ directory; train in that workdir first.')
  manager = ocp.CheckpointManager(directory, **(
      _items(ocp.StandardCheckpointHandler(restore_concurrent_gb=concurrent_bytes / 1e9))
      if concurrent_bytes else {'item_names': ITEMS}))
  if step is not None and step not in manager.all_steps():
    raise FileNotFoundError(f'{directory}: no checkpoint of step {step} '
                            f'(there are {manager.all_steps()}).')
  found, items = newest_intact(manager, directory,
                               {'params': lambda: ocp.args.StandardRestore(abstract_params)},
                               None if step is None else [step])
  manager.close()
  if found is None:
    raise FileNotFoundError(f'{directory}: no finished checkpoint.')
  return items['params'], found

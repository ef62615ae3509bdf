"""Orbax checkpoints: params, the rest of the train state, and the data iterator's position.

Saves are async and atomic (Orbax writes to a temporary directory and renames it when complete),
so a run killed mid-save leaves the previous checkpoint as the latest one.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

ITEMS = ('params', 'train', 'data')


def abstract_with_shardings(abstract_tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)


class Checkpointer:
  def __init__(self, directory: str, max_to_keep: int = 3, use_async: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=use_async),
        item_names=ITEMS)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, params, train: dict, data_state: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), train=ocp.args.StandardSave(train),
        data=ocp.args.JsonSave(data_state)))

  def restore(self, step: int, abstract_params, abstract_train) -> tuple[Any, dict, dict]:
    out = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params),
        train=ocp.args.StandardRestore(abstract_train), data=ocp.args.JsonRestore()))
    return out['params'], out['train'], out['data']

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_params(workdir: str, abstract_params, step: Optional[int] = None):
  """Only the params of a run's checkpoint (for sampling, evaluation, or a later stage)."""
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'{workdir}: no checkpoints/ directory; train in that workdir first.')
  manager = ocp.CheckpointManager(directory, item_names=ITEMS)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'{directory}: no finished checkpoint.')
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
  except (ValueError, KeyError) as e:
    raise ValueError(f'{directory} step {step} does not fit this model ({str(e)[:300]}); check '
                     'that config.model matches the run that wrote it.') from None
  manager.close()
  return out['params'], step

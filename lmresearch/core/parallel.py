"""The device mesh, logical-axis rules and shardings.

Model code names axes logically ('batch', 'embed', 'mlp', ...). The config's `rules` map those
names to the mesh axes ('data', 'fsdp', 'tensor'); this file turns both into `NamedSharding`s.
The same code then runs on one CPU, eight simulated devices or a pod: only the config changes.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lmresearch.core.errors import ConfigError

MESH_AXES = ('data', 'fsdp', 'tensor')

# MaxText-style defaults: batch over data+fsdp, weights' embed dim over fsdp (ZeRO-3 style), heads
# and mlp over tensor (Megatron style). An axis already used in a spec is skipped by flax, so an
# activation's 'embed' stays unsharded once 'batch' took 'fsdp'.
DEFAULT_RULES = (
    ('batch', ('data', 'fsdp')),
    ('length', None),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('kv', None),
    ('mlp', 'tensor'),
    ('vocab', 'tensor'),
    ('layers', None),
)


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if sum(s == -1 for s in sizes) > 1:
    raise ConfigError('config.mesh: at most one of data/fsdp/tensor may be -1 (= the rest).')
  for a, s in zip(MESH_AXES, sizes):
    if s == 0 or s < -1:
      raise ConfigError(f'config.mesh.{a}={s}: must be a positive size or -1.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ConfigError(f'config.mesh={dict(zip(MESH_AXES, sizes))}: the fixed axes ({known}) do '
                        f'not divide the {num_devices} devices.')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ConfigError(f'config.mesh={dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} '
                      f'devices but {num_devices} are available; set config.mesh.data=-1 or '
                      'resize the mesh.')
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  slices = sorted({getattr(d, 'slice_index', 0) for d in devices})
  if len(slices) > 1:   # multi-slice TPU: the data axis spans slices (DCN), the rest stays inside
    from jax.experimental import mesh_utils
    if shape[0] % len(slices):
      raise ConfigError(f'config.mesh.data={shape[0]} must be a multiple of the {len(slices)} '
                        'slices (data parallelism crosses slices; fsdp and tensor stay inside one).')
    grid = mesh_utils.create_hybrid_device_mesh(
        (shape[0] // len(slices), shape[1], shape[2]), (len(slices), 1, 1), devices=devices)
  elif devices[0].platform == 'tpu':   # the ICI topology's order
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices)
  else:   # process-major: each process's devices are one contiguous block of the batch
    grid = np.asarray(devices).reshape(shape)
  # Mesh(...) gives Auto axes, which flax's logical constraints need (jax.make_mesh is Explicit).
  return Mesh(grid, MESH_AXES)


def rules_from_config(config) -> tuple:
  rules = config.get('rules', None)
  if not rules:
    return DEFAULT_RULES
  return tuple((name, tuple(ax) if isinstance(ax, list) else ax) for name, ax in rules)


def batch_axes(rules) -> Any:
  return dict(rules).get('batch')


def num_batch_shards(mesh: Mesh, rules) -> int:
  axes = batch_axes(rules)
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def logical_shardings(mesh: Mesh, rules, boxed_tree) -> Any:
  """NamedShardings for a tree of nn.Partitioned (e.g. jax.eval_shape of init)."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def strip_boxes(tree):
  """Partitioned boxes -> their values, without nn.unbox's sharding constraint (which fails on
  abstract values under an active mesh)."""
  return jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, tree,
                      is_leaf=lambda x: isinstance(x, nn.Partitioned))


def abstract_and_shardings(init_fn, mesh: Mesh, rules):
  """Shapes (no memory) and NamedShardings of what init_fn() returns (a boxed tree)."""
  boxed = jax.eval_shape(init_fn)
  return strip_boxes(boxed), logical_shardings(mesh, rules, boxed)


def batch_sharding(mesh: Mesh, rules, ndim: int = 2) -> NamedSharding:
  return NamedSharding(mesh, P(batch_axes(rules), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_divisible(mesh: Mesh, shardings, shapes, what: str = 'param') -> None:
  """Every sharded dim must split evenly; names the offending array so the fix is obvious."""
  flat_s = jax.tree_util.tree_leaves_with_path(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  flat_x = jax.tree_util.tree_leaves(shapes)
  for (path, s), x in zip(flat_s, flat_x):
    for dim, axes in zip(x.shape, s.spec):
      if axes is None:
        continue
      n = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
      if dim % n:
        name = jax.tree_util.keystr(path)
        raise ConfigError(f'{what} {name} of shape {x.shape} cannot be split {n} ways over mesh '
                          f'axes {axes}; change config.model sizes or config.mesh.')


def put_batch(batch: dict, sharding_for) -> dict:
  """Host numpy batch (this process's rows) -> global jax arrays sharded over the batch axes.
  Values that are already jax arrays (made on device by a stage) pass through."""
  out = {}
  for k, v in batch.items():
    if not isinstance(v, jax.Array):
      check_process_rows(sharding_for(v.ndim), (v.shape[0] * jax.process_count(),) + v.shape[1:])
      v = jax.make_array_from_process_local_data(sharding_for(v.ndim), v)
    out[k] = v
  return out


@functools.lru_cache(maxsize=64)
def check_process_rows(sharding: NamedSharding, shape: tuple) -> None:
  """The data iterators give process i block i of the global batch (in the order of the rows), so
  a multi-process job gets the numbers of one process; the mesh must place that block on process
  i's devices."""
  pc, pi = jax.process_count(), jax.process_index()
  if pc == 1:
    return
  spans = [idx[0] for idx in sharding.addressable_devices_indices_map(shape).values()]
  lo, hi = min(s.start or 0 for s in spans), max(shape[0] if s.stop is None else s.stop for s in spans)
  k = shape[0] // pc
  if (lo, hi) != (pi * k, (pi + 1) * k):
    raise ConfigError(f'process {pi} of {pc} holds batch rows {lo}..{hi - 1} under this mesh, not '
                      f'its block {pi * k}..{(pi + 1) * k - 1}: put the batch axes (config.rules '
                      "'batch') over mesh axes that split the processes, in process order.")


def fetch(tree):
  """Device arrays -> host numpy with the whole global value on every process: an array sharded
  across processes (a batch of samples) is all-gathered; in one process this is device_get."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


@contextlib.contextmanager
def activate(mesh: Mesh, rules):
  """The context that model code's logical constraints resolve against."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def mesh_devices(mesh_cfg, available: int) -> int:
  """How many devices config.mesh asks for: the product of its sizes; with one axis -1 (= the
  rest), `available` rounded down to a multiple of the fixed axes (at least one multiple).
  A bad size is left for `parallel.mesh_shape` to report."""
  sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  known = math.prod(s for s in sizes if s > 0)
  return known * max(1, available // known) if -1 in sizes else known

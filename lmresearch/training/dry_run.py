"""Compile-check a config without data or device memory: what a pod job will allocate and run.

Builds the sharded train state with `jax.eval_shape`, lowers and compiles the trainer's own train
step (`Trainer.compile_step`) on abstract inputs, and prints parameter count and XLA's memory
estimate. The caller gives the stage in its abstract form (model, no data or tokenizer).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lmresearch.core import parallel
from lmresearch.models.transformer import count_params
from lmresearch.training.trainer import Trainer

BATCH_KEYS = (('inputs', jnp.int32), ('targets', jnp.int32), ('segment_ids', jnp.int32),
              ('positions', jnp.int32), ('weights', jnp.float32))   # a packed LM batch


def dry_run(config, stage, devices=None, compile: bool = True) -> dict:
  rules = parallel.rules_from_config(config)
  mesh = parallel.make_mesh(config.mesh, devices)
  trainer = Trainer(config, '', stage, mesh, rules)
  abstract, shardings = trainer.abstract_state()
  b, t = config.train.batch_size, config.data.seq_len
  batch = {k: jax.ShapeDtypeStruct((b, t), dt, sharding=parallel.batch_sharding(mesh, rules))
           for k, dt in BATCH_KEYS}
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       abstract, shardings)
  out = {'params': count_params(abstract.params), 'mesh': dict(mesh.shape),
         'flops_per_step': stage.flops_per_step()}
  with parallel.activate(mesh, rules):
    lowered = trainer.compile_step(shardings).lower(state, batch)
    if compile:
      mem = lowered.compile().memory_analysis()
      if mem is not None:
        out['temp_bytes_per_device'] = int(mem.temp_size_in_bytes)
        out['argument_bytes_per_device'] = int(mem.argument_size_in_bytes)
  print('dry run: ' + ' '.join(f'{k}={v}' for k, v in out.items()), flush=True)
  return out

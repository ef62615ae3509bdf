"""Compile-check a config without data or device memory: what a pod job will allocate and run.

Builds the sharded train state with `jax.eval_shape`, lowers and compiles one train step on
abstract inputs, and prints parameter count and XLA's memory estimate.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lmresearch import parallel
from lmresearch.models.transformer import count_params
from lmresearch.stages.pretrain import PretrainStage
from lmresearch.training.trainer import Trainer, make_train_step


def dry_run(config, compile: bool = True, devices=None) -> dict:
  rules = parallel.rules_from_config(config)
  mesh = parallel.make_mesh(config.mesh, devices)
  stage = PretrainStage.abstract(config)
  trainer = Trainer(config, '', stage, mesh, rules)
  abstract, shardings = trainer.abstract_state()
  b, t = config.train.batch_size, config.data.seq_len
  batch = {k: jax.ShapeDtypeStruct((b, t), dt, sharding=parallel.batch_sharding(mesh, rules))
           for k, dt in (('inputs', jnp.int32), ('targets', jnp.int32), ('segment_ids', jnp.int32),
                         ('positions', jnp.int32), ('weights', jnp.float32))}
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       abstract, shardings)
  flops = stage.flops_per_step()
  with parallel.activate(mesh, rules):
    step = jax.jit(make_train_step(stage.loss_fn, trainer.optimizer, config.train.grad_accum,
                                   trainer.schedule),
                   in_shardings=(shardings, None), out_shardings=(shardings, None),
                   donate_argnums=(0,))
    lowered = step.lower(state, batch)
    out = {'params': count_params(abstract.params), 'mesh': dict(mesh.shape),
           'flops_per_step': flops}
    if compile:
      compiled = lowered.compile()
      mem = compiled.memory_analysis()
      if mem is not None:
        out['temp_bytes_per_device'] = int(mem.temp_size_in_bytes)
        out['argument_bytes_per_device'] = int(mem.argument_size_in_bytes)
  print('dry run: ' + ' '.join(f'{k}={v}' for k, v in out.items()), flush=True)
  return out

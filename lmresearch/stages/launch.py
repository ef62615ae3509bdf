"""Run one stage from a config: what `python -m lmresearch.main` and the pipeline call.

Kept apart from main.py, which defines command-line flags at import.
"""
from __future__ import annotations


def run(config, workdir: str, dry_run: bool = False, devices=None) -> dict:
  """Runs config.stage in workdir; `devices` (default: all) is for tests that compare meshes."""
  import jax
  from lmresearch.training import config as lmc
  from lmresearch.core import fileio, parallel
  from lmresearch.stages import REGISTRY
  from lmresearch.training.trainer import Trainer

  devices = list(jax.devices() if devices is None else devices)
  lmc.inherit_model(config)
  lmc.validate(config, len(devices), REGISTRY)
  if dry_run:   # the LM step on the config's model and mesh (what every LM stage compiles)
    from lmresearch.stages.pretrain import PretrainStage
    from lmresearch.training.dry_run import dry_run as do_dry_run
    return do_dry_run(config, PretrainStage.abstract(config), devices)
  fileio.makedirs(workdir)
  lmc.check_same_model(config, workdir)
  if jax.process_index() == 0:
    lmc.save(config, workdir)
  rules = parallel.rules_from_config(config)
  mesh = parallel.make_mesh(config.mesh, devices)
  stage = REGISTRY[config.stage](config, workdir)
  return Trainer(config, workdir, stage, mesh, rules).run()

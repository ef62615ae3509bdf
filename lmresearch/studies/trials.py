"""An experiment file -> its trials: each a name, overrides, a run directory and the exact command.

An experiment is a Python file with `get_config(arg=None)` (a configs/ family: the pipeline, or
one stage) and optionally `get_sweep(h)` (lmresearch.studies.hyper) and `get_report()` (which
metrics to tabulate and plot: lmresearch.studies.results). A trial is an ordinary run: the same
config file passed to `lmresearch.main` or `lmresearch.pipeline`, with its overrides as
`--config.KEY=VALUE` flags, so a trial can be rerun by hand from the command it lists.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import re
import sys
from typing import Any, Optional

from lmresearch.training import config as lmc
from lmresearch.core import fileio
from lmresearch.core.errors import ConfigError
from lmresearch.studies import hyper

STATUS = 'trial.json'   # in each trial's directory: what it runs and how it ended


@dataclasses.dataclass
class Experiment:
  path: str                # the config file
  arg: Optional[str]       # its ':arg'
  module: Any

  @property
  def spec(self) -> str:
    return self.path + (f':{self.arg}' if self.arg else '')

  def config(self):
    return self.module.get_config(self.arg) if self.arg is not None else self.module.get_config()

  def sweep(self) -> list[dict]:
    if not hasattr(self.module, 'get_sweep'):
      return [{}]
    trials = self.module.get_sweep(hyper)
    if not trials or not all(isinstance(t, dict) for t in trials):
      raise ConfigError(f'{self.path}: get_sweep(h) must return a non-empty list of override '
                        'dicts (h.sweep, h.product, h.zipit, h.chain).')
    return trials

  def report_spec(self) -> dict:
    return self.module.get_report() if hasattr(self.module, 'get_report') else {}


@dataclasses.dataclass
class Trial:
  name: str
  overrides: dict
  workdir: str             # this trial's run directory
  command: list            # argv, runnable from the repository root

  @property
  def status_path(self) -> str:
    return os.path.join(self.workdir, STATUS)

  def status(self) -> dict:
    try:
      with open(self.status_path) as f:
        return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
      return {'status': 'pending'}

  def record(self, **fields) -> None:
    os.makedirs(self.workdir, exist_ok=True)
    fileio.write_json(self.status_path, {
        **self.status(), 'name': self.name, 'overrides': self.overrides,
        'command': self.command, **fields}, indent=2)


def load_experiment(spec: str) -> Experiment:
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise ConfigError(f'--config={spec}: no such file {path!r}.')
  name = 'experiment_' + ''.join(c if c.isalnum() else '_' for c in os.path.abspath(path))
  mod_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'{path}: an experiment file defines get_config(arg=None).')
  return Experiment(path, arg or None, module)


def is_pipeline(config) -> bool:
  return 'stages' in config and 'run' in config


def flag_value(value) -> str:
  """How config_flags reads a value back: tuples and lists as Python literals."""
  return repr(value) if isinstance(value, (tuple, list)) else str(value)


FLAG_TYPES = (bool, int, float, str, tuple)   # what config_flags can set from a command line


def apply(config, overrides: dict, where: str):
  """The config with `overrides` set, each key checked to exist, to be settable from the command
  line, and to take the value's type (linked fields follow, as with config_flags)."""
  config = copy.deepcopy(config)
  for key, value in overrides.items():
    parent, leaf = config, key.split('.')
    for part in leaf[:-1]:
      if part not in parent:
        raise ConfigError(f'{where}: override {key!r}: the config has no key {part!r} there.')
      parent = parent[part]
    if not hasattr(parent, 'keys') or leaf[-1] not in parent:
      raise ConfigError(f'{where}: override {key!r}: the config has no such key.')
    old = parent[leaf[-1]]
    if not isinstance(old, FLAG_TYPES) or not isinstance(value, FLAG_TYPES):
      raise ConfigError(f'{where}: override {key}={value!r}: a trial passes overrides as '
                        f'--config flags, which set {", ".join(t.__name__ for t in FLAG_TYPES)} '
                        f'values only (the config holds {type(old).__name__}).')
    try:
      with parent.unlocked():
        parent[leaf[-1]] = value
    except (TypeError, ValueError) as e:
      raise ConfigError(f'{where}: override {key}={value!r}: {e}') from None
  return config


def reused(config) -> list[str]:
  """A pipeline's stages taken from config.upstream rather than trained."""
  return lmc.reused_stages(config) if is_pipeline(config) else []


def validate(config, num_devices: int, where: str) -> None:
  """The checks `lmresearch.main` runs before training, for every stage the trial would train."""
  from lmresearch.core.parallel import mesh_devices
  from lmresearch.stages import REGISTRY
  stages = ([config.stages[n] for n in config.run.split(',') if n not in reused(config)]
            if is_pipeline(config) else [config])
  for sc in stages:
    try:
      lmc.validate(sc, mesh_devices(sc.mesh, num_devices), REGISTRY)
    except ConfigError as e:
      raise ConfigError(f'{where}: {e}') from None


def expand(exp: Experiment, workdir: str, only: Optional[str] = None,
           num_devices: int = 1) -> list[Trial]:
  """Every trial of the experiment, each override checked against the config before any runs."""
  overrides = exp.sweep()
  names = hyper.names(overrides)
  try:
    pattern = re.compile(only or '')
  except re.error as e:
    raise ConfigError(f'--only={only!r} is not a regular expression: {e}.') from None
  base = exp.config()
  module = 'lmresearch.pipeline' if is_pipeline(base) else 'lmresearch.main'
  trials = []
  for name, ov in zip(names, overrides):
    where = f'{exp.path}, trial {name}'
    config = apply(base, ov, where)
    for key in ov:   # a reused stage is not trained: sweeping its settings would change nothing
      if key.split('.')[:1] == ['stages'] and key.split('.')[1] in reused(config):
        raise ConfigError(f'{where}: override {key!r} sets a stage that config.reuse takes '
                          f'finished from {config.upstream}; train it (drop it from reuse) '
                          'or sweep another key.')
    validate(config, num_devices, where)
    if not pattern.search(name):
      continue
    tdir = os.path.join(workdir, name)
    cmd = [sys.executable, '-m', module, f'--config={os.path.relpath(exp.path)}'
           + (f':{exp.arg}' if exp.arg else ''), f'--workdir={tdir}']
    cmd += [f'--config.{k}={flag_value(v)}' for k, v in ov.items()]
    trials.append(Trial(name, ov, tdir, cmd))
  if not trials:
    raise ConfigError(f'--only={only!r} matches none of the {len(names)} trials.')
  return trials

"""What each stage optimizes. A stage is a small class the one trainer runs; see base.py.

`REGISTRY` maps config.stage to its class (imported on first use); pass it to
`config.validate(config, num_devices, REGISTRY)` so that the stage checks its own keys.
"""
import collections.abc
import importlib

_STAGES = {
    'pretrain': 'lmresearch.stages.pretrain:PretrainStage',
    'sft': 'lmresearch.stages.sft:SFTStage',
    'reward': 'lmresearch.stages.reward:RewardStage',
    'dpo': 'lmresearch.stages.dpo:DPOStage',
    'ppo': 'lmresearch.stages.ppo:PPOStage',
    'grpo': 'lmresearch.stages.grpo:GRPOStage',
}
STAGES = tuple(_STAGES)
# The run each stage starts from (config.init_from) in the pipeline.
PARENT = {'sft': 'pretrain', 'reward': 'sft', 'ppo': 'sft', 'dpo': 'sft', 'grpo': 'sft'}


def get_stage(name: str):
  if name not in _STAGES:
    raise ValueError(f'config.stage={name!r}: expected one of {STAGES}.')
  module, cls = _STAGES[name].split(':')
  return getattr(importlib.import_module(module), cls)


class _Registry(collections.abc.Mapping):
  """name -> stage class, importing a stage's module only when it is looked up."""

  def __getitem__(self, name):
    if name not in _STAGES:
      raise KeyError(name)
    return get_stage(name)

  def __iter__(self):
    return iter(_STAGES)

  def __len__(self):
    return len(_STAGES)


REGISTRY = _Registry()

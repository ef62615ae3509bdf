"""What each stage optimizes. A stage is a small class the one trainer runs; see base.py."""
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


def get_stage(name: str):
  if name not in _STAGES:
    raise ValueError(f'config.stage={name!r}: expected one of {STAGES}.')
  module, cls = _STAGES[name].split(':')
  return getattr(importlib.import_module(module), cls)

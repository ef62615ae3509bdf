"""What each stage optimizes. A stage is a small class the one trainer runs; see pretrain.py."""

STAGES = ('pretrain',)


def get_stage(name: str):
  if name == 'pretrain':
    from lmresearch.stages.pretrain import PretrainStage
    return PretrainStage
  raise ValueError(f'config.stage={name!r}: expected one of {STAGES}.')

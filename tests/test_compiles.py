"""A recompile inside the training loop is a bug: every stage compiles its programs in the first
steps (the step, the evaluation, the sampler's per-bucket programs) and none after, which the
trainer's `perf/programs` (programs lowered since its loop began) shows step by step."""
import json

import jax
import pytest

from conftest import stage_config, tiny, load_config
from lmresearch.stages import launch


def _programs(workdir):
  rows = [json.loads(l) for l in open(f'{workdir}/metrics.jsonl')]
  return {r['step']: r['perf/programs'] for r in rows if 'perf/programs' in r}


@pytest.mark.parametrize('stage', ['pretrain', 'sft', 'reward', 'dpo', 'ppo', 'grpo'])
def test_no_program_is_compiled_after_the_first_steps(stage, pipeline_dirs, tmp_path):
  c = tiny(load_config('pretrain')) if stage == 'pretrain' else stage_config(stage, pipeline_dirs)
  c.train.update(steps=6, log_every=1, eval_every=3, eval_batches=1)
  c.checkpoint.every = 0
  c.data.synthetic.num_docs = max(c.data.synthetic.num_docs, 200)   # a held-out batch to evaluate
  if stage in ('ppo', 'grpo'):
    # Every rollout's prompts in one prompt-length bucket (the sampler compiles once per bucket):
    # the world's arithmetic prompts, all within 8 tokens of each other at this length.
    c.rl.max_prompt_len = 128
  launch.run(c, str(tmp_path / stage), devices=jax.devices()[:1])
  seen = _programs(tmp_path / stage)
  assert seen[1] > 0                           # the step itself was compiled in the loop ...
  # ... and by the first evaluation everything was: steps 4-6 compile nothing new.
  assert seen[6] == seen[3], f'{stage}: programs per step {seen}'

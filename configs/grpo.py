"""GRPO with verifiable rewards (answer checking), policy from the SFT run.

  configs/grpo.py              the embedded world's arithmetic problems
  configs/grpo.py:data=gsm8k   GSM8K train.jsonl as prompts (config.data.path)
"""
import os

import ml_collections

from lmresearch.training.config import DATA_DIR, Choice, base_config, parse_arg


def get_config(arg=None):
  args = parse_arg(arg, data=Choice('world', 'gsm8k'))
  c = base_config('grpo', init_from='runs/sft')
  c.rl = ml_collections.ConfigDict(dict(max_prompt_len=64, max_new_tokens=48, temperature=1.0,
                                        eval_prompts=64))
  c.data.synthetic.num_docs = 2000
  # One step = batch_size prompts x group_size samples, then epochs x minibatches updates.
  c.train.update(steps=40, batch_size=16, lr=2e-5, min_lr=2e-5, warmup_steps=0, weight_decay=0.0,
                 clip_norm=1.0, log_every=5, eval_every=10)
  c.checkpoint.every = 10
  c.grpo = ml_collections.ConfigDict(dict(group_size=8, clip=0.2, kl_coef=0.0, epochs=1,
                                          minibatches=2))
  if args.data == 'gsm8k':
    c.data.update(source='jsonl', path=os.path.join(DATA_DIR, 'gsm8k', 'train.jsonl'),
                  eval_path=os.path.join(DATA_DIR, 'gsm8k', 'test.jsonl'))
    c.rl.update(max_prompt_len=256, max_new_tokens=256)
  return c

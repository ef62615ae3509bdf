"""Supervised fine-tuning presets: the base model -> an assistant.

  configs/sft.py                   embedded world chats, from runs/base (config.init_from)
  configs/sft.py:data=gsm8k        GSM8K train.jsonl as chats (config.data.path)
"""
import os

from lmresearch.training.config import DATA_DIR, Choice, base_config, parse_arg


def get_config(arg=None):
  args = parse_arg(arg, data=Choice('world', 'gsm8k'))
  c = base_config('sft', init_from='runs/base')
  c.data.synthetic.num_docs = 4000
  c.train.update(steps=300, batch_size=16, lr=1e-3, min_lr=1e-4, warmup_steps=20,
                 weight_decay=0.0, log_every=25, eval_every=100, eval_batches=10)
  c.checkpoint.every = 100
  if args.data == 'gsm8k':
    c.data.update(source='jsonl', path=os.path.join(DATA_DIR, 'gsm8k', 'train.jsonl'),
                  eval_path=os.path.join(DATA_DIR, 'gsm8k', 'test.jsonl'), seq_len=512)
  return c

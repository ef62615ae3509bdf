"""Pretraining presets.

  configs/pretrain.py                          size=tiny on the embedded world (the default)
  configs/pretrain.py:preset=shakespeare_char  nanoGPT's CPU recipe on tinyshakespeare
  configs/pretrain.py:preset=gpt2_124m         GPT-2 small shape on TFDS lm1b, 8-chip mesh
"""
import os

from lmresearch.config import DATA_DIR, base_config, parse_arg


def get_config(arg=None):
  args = parse_arg(arg)
  c = base_config()
  preset = args.get('preset', '')
  size = args.get('size', 'tiny')
  if preset == 'shakespeare_char':
    # nanoGPT README, "I only have a macbook": 4 layers, 4 heads, 128 embed, context 64, batch 12.
    c.model.update(style='gpt2', num_layers=4, num_heads=4, embed_dim=128, mlp_dim=512,
                   max_len=64, dropout=0.0)
    c.data.update(source='text', tokenizer='char', seq_len=64, val_fraction=0.1,
                  path=os.path.join(DATA_DIR, 'tinyshakespeare', 'input.txt'))
    c.train.update(steps=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=100,
                   decay_steps=2000, b2=0.99, weight_decay=0.1, clip_norm=1.0,
                   log_every=100, eval_every=500, eval_batches=100)
    c.checkpoint.every = 500
  elif preset == 'gpt2_124m':
    c.model.update(style='gpt2', num_layers=12, num_heads=12, embed_dim=768, mlp_dim=3072,
                   max_len=1024, vocab_size=50304, dtype='bfloat16', scan_layers=True,
                   remat='dots_no_batch')
    c.data.update(source='tfds', tfds_name='lm1b', tokenizer='bpe', vocab_size=50257,
                  seq_len=1024, tfds_eval_split='test')
    c.train.update(steps=100_000, batch_size=512, grad_accum=4, lr=6e-4, min_lr=6e-5,
                   warmup_steps=2000, b2=0.95, log_every=100, eval_every=2000)
    c.checkpoint.every = 2000
    c.mesh.update(data=1, fsdp=8, tensor=1)
  elif preset:
    raise ValueError(f'configs/pretrain.py: unknown preset={preset!r} '
                     '(expected shakespeare_char or gpt2_124m).')
  elif size == 'tiny':
    # base_config()'s Llama-style 4 x 128 model on the embedded world, context 256.
    c.train.update(steps=600, batch_size=16, eval_every=200, log_every=25)
    c.checkpoint.every = 200
  else:
    raise ValueError(f'configs/pretrain.py: unknown size={size!r} (expected tiny).')
  return c

"""Pretraining presets.

  configs/pretrain.py                          size=tiny on the embedded world (the default)
  configs/pretrain.py:preset=shakespeare_char  nanoGPT's CPU recipe on tinyshakespeare
  configs/pretrain.py:preset=gpt2_124m         GPT-2 small shape on TFDS lm1b, 8-chip mesh
  configs/pretrain.py:preset=llama_1b          Llama-3.2-1B shape, FSDP over a 32-chip slice
  configs/pretrain.py:preset=llama3_8b         Llama-3-8B shape, FSDP over a 64-chip slice

The Llama presets read a prepared corpus (`python -m lmresearch.data.prepare`; its directory:
`:preset=llama_1b,data=DIR`, default data/prepared); their memory and
FLOPs per device, from `--dry_run`, are in docs/pods.md.
"""
import os

from lmresearch.training.config import DATA_DIR, Choice, base_config, parse_arg


# name: (model shape, mesh, global batch in sequences, context, remat, gradient accumulation). The shapes are the
# published ones (Llama 3.2 1B, Llama 3 8B; untied head here); the mesh is plain FSDP over the
# slice, batch ~0.5M / 1M tokens.
LLAMA = {
    'llama_1b': (dict(num_layers=16, embed_dim=2048, num_heads=32, num_kv_heads=8, mlp_dim=8192),
                 dict(data=1, fsdp=32, tensor=1), 256, 2048, 'dots_no_batch', 4),
    'llama3_8b': (dict(num_layers=32, embed_dim=4096, num_heads=32, num_kv_heads=8, mlp_dim=14336),
                  dict(data=1, fsdp=64, tensor=1), 256, 4096, 'full', 4),
}


def get_config(arg=None):
  args = parse_arg(arg, preset=Choice('', 'shakespeare_char', 'gpt2_124m', *LLAMA),
                   size=Choice('tiny'), data='data/prepared', tokenizer='')
  c = base_config()
  preset = args.preset
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
                   warmup_steps=2000, b2=0.95, log_every=100, eval_every=2000,
                   loss_chunk=256)   # 50k-vocab logits 256 positions at a time (docs/pods.md)
    c.checkpoint.every = 2000
    c.mesh.update(data=1, fsdp=8, tensor=1)
  elif preset in LLAMA:
    shape, mesh, batch, seq_len, remat, accum = LLAMA[preset]
    c.model.update(style='llama', max_len=seq_len, vocab_size=128256, dtype='bfloat16',
                   rope_theta=500000.0, scan_layers=True, remat=remat, **shape)
    c.data.update(source='prepared', path=args.data, tokenizer_path=args.tokenizer,
                  seq_len=seq_len)
    c.train.update(steps=100_000, batch_size=batch, grad_accum=accum, lr=3e-4, min_lr=3e-5, warmup_steps=2000,
                   b2=0.95, weight_decay=0.1, log_every=100, eval_every=2000, loss_chunk=512)
    c.checkpoint.update(every=1000, max_to_keep=3)
    c.mesh.update(**mesh)
  else:   # size=tiny: base_config()'s Llama-style 4 x 128 model on the embedded world, context 256
    c.train.update(steps=600, batch_size=16, eval_every=200, log_every=25)
    c.checkpoint.every = 200
  return c

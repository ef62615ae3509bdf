"""PyTorch eager references for the train-step benchmarks: nanoGPT's model and step (--style gpt2,
shakespeare_char) and our default pipeline model's Llama style (--style llama: RMSNorm, RoPE,
SwiGLU, untied head; the same optimizer and schedule).

A nanoGPT-equivalent GPT: learned positions, pre-LayerNorm with bias, causal self-attention through
F.scaled_dot_product_attention(is_causal=True), GELU MLP (tanh approximation, as our model and
GPT-2; nanoGPT uses the exact erf form), tied input/output embeddings, AdamW
(decay on >=2-d weights only) with linear warmup + cosine decay and global-norm clipping, fp32,
torch.set_num_threads(<cores>). Batches are nanoGPT's `get_batch`: random windows of the char-
encoded first 90% of the text (random tokens when the file is missing).

tests/test_torch_reference.py loads our model's weights into this GPT and checks that logits and
loss agree (fp32, 1e-4): the benchmark compares equal work.

Prints ONE JSON line: tokens/s, median ms/iter, peak RSS (this process only), losses, settings.
`scripts/bench_pretrain.py` runs it in a subprocess so each framework's memory is its own.

  .venv/bin/python scripts/torch_reference.py --iters 30 --vocab 128
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_common import OthersShare, cores, summarize  # noqa: E402


class CausalSelfAttention(nn.Module):
  def __init__(self, d, heads, bias):
    super().__init__()
    self.heads = heads
    self.c_attn = nn.Linear(d, 3 * d, bias=bias)   # q, k, v in one matmul, as nanoGPT
    self.c_proj = nn.Linear(d, d, bias=bias)

  def forward(self, x):
    b, t, d = x.shape
    q, k, v = self.c_attn(x).split(d, dim=2)
    q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))


class MLP(nn.Module):
  def __init__(self, d, hidden, bias):
    super().__init__()
    self.c_fc = nn.Linear(d, hidden, bias=bias)
    self.c_proj = nn.Linear(hidden, d, bias=bias)

  def forward(self, x):
    return self.c_proj(F.gelu(self.c_fc(x), approximate='tanh'))   # as ours (flax nn.gelu)


class Block(nn.Module):
  def __init__(self, d, heads, hidden, bias):
    super().__init__()
    self.ln_1 = nn.LayerNorm(d, bias=bias)
    self.attn = CausalSelfAttention(d, heads, bias)
    self.ln_2 = nn.LayerNorm(d, bias=bias)
    self.mlp = MLP(d, hidden, bias)

  def forward(self, x):
    x = x + self.attn(self.ln_1(x))
    return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
  def __init__(self, vocab, context, layers, heads, d, hidden, bias=True):
    super().__init__()
    self.wte = nn.Embedding(vocab, d)
    self.wpe = nn.Embedding(context, d)
    self.h = nn.ModuleList([Block(d, heads, hidden, bias) for _ in range(layers)])
    self.ln_f = nn.LayerNorm(d, bias=bias)
    self.lm_head = nn.Linear(d, vocab, bias=False)
    self.wte.weight = self.lm_head.weight          # tied embeddings
    self.apply(self._init)
    for name, p in self.named_parameters():        # GPT-2's scaled residual projections
      if name.endswith('c_proj.weight'):
        torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * layers))

  @staticmethod
  def _init(m):
    if isinstance(m, nn.Linear):
      torch.nn.init.normal_(m.weight, mean=0.0, std=0.02)
      if m.bias is not None:
        torch.nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
      torch.nn.init.normal_(m.weight, mean=0.0, std=0.02)

  def forward(self, idx, targets=None):
    """(logits, mean cross-entropy or None), as nanoGPT's GPT.forward."""
    t = idx.shape[1]
    pos = torch.arange(t, dtype=torch.long, device=idx.device)
    x = self.wte(idx) + self.wpe(pos)
    for block in self.h:
      x = block(x)
    logits = self.lm_head(self.ln_f(x))
    if targets is None:
      return logits, None
    return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class LlamaAttention(nn.Module):
  """Llama's attention: q/k/v/o without biases, RoPE (half-split, as ours and transformers'),
  grouped-query heads, F.scaled_dot_product_attention(is_causal=True)."""
  def __init__(self, d, heads, kv_heads, theta):
    super().__init__()
    self.heads, self.kv_heads, self.hd = heads, kv_heads, d // heads
    self.q_proj = nn.Linear(d, d, bias=False)
    self.k_proj = nn.Linear(d, kv_heads * self.hd, bias=False)
    self.v_proj = nn.Linear(d, kv_heads * self.hd, bias=False)
    self.o_proj = nn.Linear(d, d, bias=False)
    half = self.hd // 2
    self.register_buffer('freq', 1.0 / theta ** (torch.arange(half, dtype=torch.float64) / half).float(),
                         persistent=False)

  def rope(self, x):   # x [b, heads, t, hd]
    angle = torch.arange(x.shape[2], dtype=torch.float32)[:, None] * self.freq
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

  def forward(self, x):
    b, t, d = x.shape
    q = self.q_proj(x).view(b, t, self.heads, self.hd).transpose(1, 2)
    k = self.k_proj(x).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
    v = self.v_proj(x).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
    y = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True,
                                       enable_gqa=self.kv_heads != self.heads)
    return self.o_proj(y.transpose(1, 2).contiguous().view(b, t, d))


class LlamaBlock(nn.Module):
  def __init__(self, d, heads, kv_heads, hidden, theta, eps):
    super().__init__()
    self.input_layernorm = nn.RMSNorm(d, eps=eps)
    self.attn = LlamaAttention(d, heads, kv_heads, theta)
    self.post_attention_layernorm = nn.RMSNorm(d, eps=eps)
    self.gate_proj = nn.Linear(d, hidden, bias=False)
    self.up_proj = nn.Linear(d, hidden, bias=False)
    self.down_proj = nn.Linear(hidden, d, bias=False)

  def forward(self, x):
    x = x + self.attn(self.input_layernorm(x))
    h = self.post_attention_layernorm(x)
    return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
  """Our default model's style: RMSNorm, RoPE, SwiGLU, untied head, no biases (as transformers'
  LlamaForCausalLM); same forward signature as GPT."""
  def __init__(self, vocab, layers, heads, kv_heads, d, hidden, theta=10000.0, eps=1e-5):
    super().__init__()
    self.embed = nn.Embedding(vocab, d)
    self.layers = nn.ModuleList([LlamaBlock(d, heads, kv_heads, hidden, theta, eps) for _ in range(layers)])
    self.norm = nn.RMSNorm(d, eps=eps)
    self.lm_head = nn.Linear(d, vocab, bias=False)
    for p_ in self.parameters():
      if p_.dim() >= 2:
        torch.nn.init.normal_(p_, mean=0.0, std=0.02)

  def forward(self, idx, targets=None):
    x = self.embed(idx)
    for block in self.layers:
      x = block(x)
    logits = self.lm_head(self.norm(x))
    if targets is None:
      return logits, None
    return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def lr_at(it, a):
  """nanoGPT's get_lr: linear warmup, cosine decay to min_lr at decay_steps."""
  if it < a.warmup:
    return a.lr * (it + 1) / (a.warmup + 1)
  if it > a.decay_steps:
    return a.min_lr
  ratio = (it - a.warmup) / (a.decay_steps - a.warmup)
  return a.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (a.lr - a.min_lr)


def load_data(path, vocab, val_fraction):
  """nanoGPT's char prepare.py: sorted chars of the whole text -> ids; the first 90% trains."""
  if path and os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      text = f.read()
    chars = sorted(set(text))
    if len(chars) > vocab:
      raise SystemExit(f'{path}: {len(chars)} distinct characters > --vocab {vocab}')
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.int64)
    return torch.from_numpy(ids[:int(len(ids) * (1 - val_fraction))]), 'text'
  gen = torch.Generator().manual_seed(0)
  return torch.randint(0, vocab, (1_000_000,), generator=gen), 'random tokens (no data file)'


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--iters', type=int, default=100, help='timed iterations')
  p.add_argument('--warmup', type=int, default=10, help='untimed iterations first')
  p.add_argument('--data', default='', help='tinyshakespeare input.txt (random tokens if missing)')
  p.add_argument('--val-fraction', type=float, default=0.1)
  p.add_argument('--vocab', type=int, default=65, help='embedding rows (JAX pads the char vocab)')
  p.add_argument('--style', choices=('gpt2', 'llama'), default='gpt2',
                 help='gpt2: nanoGPT (shakespeare_char); llama: the default pipeline model\'s style')
  p.add_argument('--kv-heads', dest='kv_heads', type=int, default=0, help='llama: 0 = --heads')
  p.add_argument('--layers', type=int, default=4)
  p.add_argument('--heads', type=int, default=4)
  p.add_argument('--embed', type=int, default=128)
  p.add_argument('--mlp', type=int, default=512)
  p.add_argument('--context', type=int, default=64)
  p.add_argument('--batch', type=int, default=12)
  p.add_argument('--lr', type=float, default=1e-3)
  p.add_argument('--min-lr', type=float, default=1e-4)
  p.add_argument('--lr-warmup', dest='lr_warmup', type=int, default=100)
  p.add_argument('--decay-steps', type=int, default=2000)
  p.add_argument('--b1', type=float, default=0.9)
  p.add_argument('--b2', type=float, default=0.99)
  p.add_argument('--weight-decay', type=float, default=0.1)
  p.add_argument('--clip', type=float, default=1.0)
  p.add_argument('--threads', type=int, default=0, help='torch threads (default: all cores)')
  p.add_argument('--seed', type=int, default=1337)
  p.add_argument('--compile', action='store_true', help='torch.compile the model (inductor)')
  a = p.parse_args()

  threads = a.threads or cores()
  torch.set_num_threads(threads)
  torch.manual_seed(a.seed)
  data, data_kind = load_data(a.data, a.vocab, a.val_fraction)

  def get_batch():
    ix = torch.randint(len(data) - a.context, (a.batch,))
    x = torch.stack([data[i:i + a.context] for i in ix])
    y = torch.stack([data[i + 1:i + 1 + a.context] for i in ix])
    return x, y

  if a.style == 'llama':
    model = Llama(a.vocab, a.layers, a.heads, a.kv_heads or a.heads, a.embed, a.mlp)
  else:
    model = GPT(a.vocab, a.context, a.layers, a.heads, a.embed, a.mlp, bias=True)
  params = [p_ for p_ in model.parameters() if p_.requires_grad]
  step_model = torch.compile(model) if a.compile else model
  groups = [{'params': [p_ for p_ in params if p_.dim() >= 2], 'weight_decay': a.weight_decay},
            {'params': [p_ for p_ in params if p_.dim() < 2], 'weight_decay': 0.0}]
  opt = torch.optim.AdamW(groups, lr=a.lr, betas=(a.b1, a.b2), eps=1e-8)

  sched = argparse.Namespace(lr=a.lr, min_lr=a.min_lr, warmup=a.lr_warmup, decay_steps=a.decay_steps)
  times, cpu_times, losses = [], [], []
  x, y = get_batch()
  for it in range(a.warmup + a.iters):
    if it == a.warmup:
      others = OthersShare().start()
    t0, c0 = time.perf_counter(), time.process_time()
    for g in opt.param_groups:
      g['lr'] = lr_at(it, sched)
    _, loss = step_model(x, y)
    loss.backward()
    if a.clip > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    x, y = get_batch()          # nanoGPT fetches the next batch inside the timed iteration
    lossf = loss.item()         # the sync point (eager CPU is synchronous anyway)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    losses.append(lossf)
    if it >= a.warmup:
      times.append(dt)
      cpu_times.append(dc)

  out = {'framework': 'torch', 'compiled': a.compile, 'style': a.style, 'torch_version': torch.__version__, 'threads': threads,
         'data': data_kind, 'iters': a.iters, 'warmup': a.warmup,
         'params': sum(p_.numel() for p_ in params), 'first_loss': losses[0], 'last_loss': losses[-1],
         **summarize(times, cpu_times, a.batch * a.context, others.stop())}
  print(json.dumps(out), flush=True)


if __name__ == '__main__':
  sys.exit(main())

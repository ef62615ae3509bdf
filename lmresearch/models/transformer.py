"""A decoder-only Transformer in functional Flax Linen.

One file, read top to bottom: embeddings -> N x Block(attention, MLP) -> norm -> logits.
Two families share the code, chosen by `cfg.style`:
  gpt2:  learned positions, LayerNorm, GELU MLP, tied embeddings, biases.
  llama: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, untied head, no biases.
Options that imported checkpoints need (models/hf/: head size, q/k/v biases, a tied head, Llama
3.1's RoPE scaling, a sliding window on all or on a pattern of layers, QK-norm, Gemma's extra
norms, GeGLU, scaled embeddings and soft-capping, a padded vocabulary) and LoRA adapters beside any
projection (models/lora.py) are fields of ModelConfig, off by default.

Sharding is declared, not coded: every parameter and large activation carries logical axis
names (batch, length, embed, heads, kv_heads, kv, mlp, vocab, layers); `parallel.py` maps them to
mesh axes through rules that live in the config.

Decoding reads a KV cache in the flax 'cache' collection that generation lays out: `decode=` takes
the layout (lmresearch/generation/kvcache.py's KV_CACHE), which the attention layers call to write
each chunk's keys and values and to say what a query attends. Initialise it with
`decode=KV_CACHE` on a [batch, cache_len] input, then call with it on chunks (a prompt prefill,
then one token at a time); `kv_mask` marks which cache slots hold real tokens.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmresearch.models import attention, lora as lora_lib
from lmresearch.models.rope import rope, rope_frequencies  # noqa: F401  (the model's RoPE)

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 0          # 0 -> num_heads (plain multi-head attention)
  embed_dim: int = 128
  mlp_dim: int = 512
  max_len: int = 256
  style: str = 'llama'           # 'llama' | 'gpt2'
  dropout: float = 0.0
  dtype: str = 'float32'         # compute dtype
  param_dtype: str = 'float32'
  scan_layers: bool = False
  remat: str = 'none'            # 'none' | 'full' | 'dots' | 'dots_no_batch'
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  attention_impl: str = ''       # '' (einsum on CPU, JAX's choice elsewhere) | 'einsum' | 'xla' | 'cudnn'
  # Options of imported families (models/hf/); the defaults are our own models.
  head_size: int = 0             # 0 -> embed_dim // num_heads
  qkv_bias: bool = False         # biases on query/key/value (Qwen2; gpt2 has every bias)
  tie_embeddings: bool = False   # llama style: logits from the embedding (gpt2 always ties)
  rope_scaling: str = ''         # '' | 'llama3' (Llama 3.1's frequency-dependent scaling)
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  sliding_window: int = 0        # > 0: each query sees at most this many keys (Mistral)
  sliding_pattern: int = 0       # > 0: every Nth layer sees all keys, the others the window
                                 # (Gemma 2: 2, Gemma 3: 6); 0: every layer alike
  rope_local_theta: float = 0.0  # > 0: the sliding layers' RoPE base, unscaled (Gemma 3)
  norm_plus_one: bool = False    # RMSNorm as x / rms(x) * (1 + w) (Gemma)
  qk_norm: bool = False          # RMSNorm on each head's queries and keys before RoPE (Qwen3, Gemma 3)
  post_norms: bool = False       # norms on the attention and MLP outputs too (Gemma 2, 3)
  mlp_act: str = 'silu'          # the gated MLP: 'silu' (SwiGLU) | 'gelu_tanh' (GeGLU, Gemma)
  embed_scale: bool = False      # token embeddings x sqrt(embed_dim) (Gemma; the tied head is not)
  query_scale: float = 0.0       # > 0: scores scaled by query_scale**-0.5, not head_dim's (Gemma)
  attn_softcap: float = 0.0      # > 0: scores -> cap * tanh(scores / cap) (Gemma 2)
  final_softcap: float = 0.0     # > 0: the same on the logits (Gemma 2)
  lora_rank: int = 0             # > 0: LoRA adapters beside the `lora_targets` projections
  lora_alpha: float = 16.0
  lora_dropout: float = 0.0
  lora_targets: str = 'query,value'
  lora_tokens: tuple = ()        # with lora_rank: ids whose embedding (and head) rows train too
  vocab_used: int = 0            # ids >= this pad the vocabulary for sharding: their logits are
                                 # masked, so never sampled (imported models); 0 = none masked
  sample_vocab: int = 0          # ids >= this are never sampled (our models' padding: their
                                 # logits stay in training, as they always were)

  @property
  def head_dim(self) -> int:
    return self.head_size or self.embed_dim // self.num_heads

  def lora(self, name: str, in_shape, out_shape, in_names, out_names):
    """The adapter beside projection `name`, or None (models/lora.py)."""
    if not self.lora_rank or name not in lora_lib.targets(self.lora_targets):
      return None
    return lora_lib.LoRA(tuple(in_shape), tuple(out_shape), tuple(in_names), tuple(out_names),
                         self.lora_rank, self.lora_alpha, self.lora_dropout,
                         jnp.dtype(self.dtype), jnp.dtype(self.param_dtype), name=name + lora_lib.SUFFIX)

  def token_rows(self, name: str):
    """Trainable rows of the lora_tokens in table `name` ('embed' or 'head'), or None."""
    if not (self.lora_rank and self.lora_tokens):
      return None
    return lora_lib.TokenRows(tuple(self.lora_tokens), self.embed_dim, jnp.dtype(self.dtype),
                              jnp.dtype(self.param_dtype), name=name + lora_lib.SUFFIX)

  def is_sliding(self, layer):
    """Whether `layer` (an int, or a traced index under scan_layers) uses the sliding window."""
    if not self.sliding_window:
      return False
    if not self.sliding_pattern:
      return True
    return (layer + 1) % self.sliding_pattern != 0

  def window(self, layer):
    """Layer `layer`'s window (0 = every key); traced where the layer index is."""
    sliding = self.is_sliding(layer)
    if isinstance(sliding, bool):
      return self.sliding_window if sliding else 0
    return jnp.where(sliding, self.sliding_window, 0)

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def gpt2(self) -> bool:
    return self.style == 'gpt2'

  @classmethod
  def from_config(cls, model_cfg, vocab_size: int) -> 'ModelConfig':
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in model_cfg.items() if k in fields}
    kwargs['vocab_size'] = vocab_size
    return cls(**kwargs)


def _init(std: float, names):
  return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def _zeros(names):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _ones(names):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


def matmul(x, kernel, in_dims: int = 1):
  """x [..., *in] @ kernel [*in, *out] -> [..., *out], as one 2-d matmul over the flattened
  leading (batch, length) dims. Written as an N-d einsum, autodiff's weight gradient contracts
  over two dims at once, which XLA:CPU runs as a transpose fused into the producer plus a
  non-canonical dot: the 2-d form made the default model's MLP forward + backward ~2x faster
  (profile in docs/benchmarks.md). Same function; the sharding of the leading dims
  carries over (batch is the major one)."""
  lead, k_in = x.shape[:x.ndim - in_dims], math.prod(kernel.shape[:in_dims])
  out = kernel.shape[in_dims:]
  y = jnp.dot(x.reshape(-1, k_in), kernel.reshape(k_in, -1))
  return y.reshape(*lead, *out)


def _norm(cfg: ModelConfig, name: str, axis: str = 'embed'):
  dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
  if cfg.gpt2:
    return nn.LayerNorm(epsilon=cfg.norm_eps, dtype=dt, param_dtype=pdt, name=name,
                        scale_init=_ones((axis,)), bias_init=_zeros((axis,)))
  if cfg.norm_plus_one:
    return PlusOneRMSNorm(cfg.norm_eps, axis, dt, pdt, name=name)
  return nn.RMSNorm(epsilon=cfg.norm_eps, dtype=dt, param_dtype=pdt, name=name,
                    scale_init=_ones((axis,)))


class PlusOneRMSNorm(nn.Module):
  """Gemma's RMSNorm: x / rms(x) * (1 + w), w starting at zero, the product in float32 (so an
  imported w, and its export, stay bit for bit what the checkpoint holds)."""
  eps: float
  axis: str
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    w = self.param('scale', _zeros((self.axis,)), (x.shape[-1],), self.param_dtype)
    y = nn.RMSNorm(epsilon=self.eps, use_scale=False, dtype=jnp.float32, name='norm')(x)
    return (y * (1.0 + w.astype(jnp.float32))).astype(self.dtype)


class Proj(nn.Module):
  """x @ kernel over the trailing `in_dims` axes of x, with the kernel in its full N-d shape
  (flax's DenseGeneral initialises a flattened kernel, which breaks logical constraints)."""
  shape: tuple            # kernel shape: in dims + out dims
  names: tuple            # a logical axis name per kernel dim
  in_dims: int = 1
  std: float = 0.02
  use_bias: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', _init(self.std, self.names), self.shape, self.param_dtype)
    y = matmul(x.astype(self.dtype), kernel.astype(self.dtype), self.in_dims)
    if self.use_bias:
      out_shape, out_names = self.shape[self.in_dims:], self.names[self.in_dims:]
      y = y + self.param('bias', _zeros(out_names), out_shape, self.param_dtype).astype(self.dtype)
    return y


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, positions, mask, decode: bool, kv_mask, deterministic: bool = True,
               layer=0):
    cfg = self.cfg
    window = cfg.window(layer)
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    d, h, kvh, hd = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim
    proj = functools.partial(Proj, use_bias=cfg.gpt2, dtype=dt, param_dtype=pdt)
    qkv = functools.partial(proj, use_bias=cfg.gpt2 or cfg.qkv_bias)

    def project(make, shape, names, name, inp, in_dims=1):
      y = make(shape, names, name=name, **({'in_dims': in_dims} if in_dims > 1 else {}))(inp)
      adapter = cfg.lora(name, shape[:in_dims], shape[in_dims:], names[:in_dims], names[in_dims:])
      return y if adapter is None else y + adapter(inp, deterministic)

    q = project(qkv, (d, h, hd), ('embed', 'heads', 'kv'), 'query', x)
    k = project(qkv, (d, kvh, hd), ('embed', 'kv_heads', 'kv'), 'key', x)
    v = project(qkv, (d, kvh, hd), ('embed', 'kv_heads', 'kv'), 'value', x)
    if cfg.qk_norm:
      q = _norm(cfg, 'query_norm', 'kv')(q)
      k = _norm(cfg, 'key_norm', 'kv')(k)
    if not cfg.gpt2:
      local = cfg.is_sliding(layer) if cfg.rope_local_theta else False
      q, k = rope(q, positions, cfg, local), rope(k, positions, cfg, local)
    if cfg.query_scale:   # attention scales by head_dim**-0.5: make it query_scale**-0.5
      q = q * jnp.asarray((hd / cfg.query_scale) ** 0.5, q.dtype)
    q = nn.with_logical_constraint(q, ('batch', 'length', 'heads', 'kv'))
    k = nn.with_logical_constraint(k, ('batch', 'length', 'kv_heads', 'kv'))

    heads_first = False
    if decode:
      if not hasattr(decode, 'update'):
        raise TypeError('decode=True: pass the KV cache layout instead, decode='
                        'lmresearch.generation.kvcache.KV_CACHE (the model reads the cache it is '
                        'given; generation/ lays it out).')
      k, v, mask, heads_first = decode.update(self, k, v, kv_mask, window)
    elif not isinstance(window, int) or window:   # by token index: rows are contiguous
      idx = jnp.arange(x.shape[1])
      mask = mask & in_window(idx[:, None], idx[None, :], window)[None, None]

    if isinstance(k, tuple):   # the serving engine's row blocks: each block attends on its own
      outs, lo = [], 0
      for kb, vb, mb in zip(k, v, mask):
        outs.append(attention.dot_product_attention(q[lo:lo + mb.shape[0]], kb, vb, mb,
                                                    cfg.attention_impl, kv_heads_first=True,
                                                    softcap=cfg.attn_softcap))
        lo += mb.shape[0]
      out = jnp.concatenate(outs)
    else:
      out = attention.dot_product_attention(q, k, v, mask, cfg.attention_impl, causal=not decode,
                                            kv_heads_first=heads_first, softcap=cfg.attn_softcap)
    out = nn.with_logical_constraint(out, ('batch', 'length', 'heads', 'kv'))
    # GPT-2 scales residual projections by 1/sqrt(2 * layers) at init.
    out_std = 0.02 / (2 * cfg.num_layers) ** 0.5
    return project(functools.partial(proj, std=out_std), (h, hd, d), ('heads', 'kv', 'embed'),
                   'out', out, in_dims=2)


def in_window(q_pos, k_pos, window):
  """Keys a query may see under a sliding window (window 0: all); broadcasts its arguments.
  Under scan_layers the window is a traced per-layer value, so this is then a select."""
  if isinstance(window, int):
    return k_pos > q_pos - window if window else jnp.ones((), jnp.bool_)
  return (window <= 0) | (k_pos > q_pos - window)


class Mlp(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    cfg = self.cfg
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    d, f = cfg.embed_dim, cfg.mlp_dim
    dense = functools.partial(Proj, use_bias=cfg.gpt2, dtype=dt, param_dtype=pdt)

    def project(name, inp, shape, names, std=0.02):
      y = dense(shape, names, std=std, name=name)(inp)
      adapter = cfg.lora(name, shape[:1], shape[1:], names[:1], names[1:])
      return y if adapter is None else y + adapter(inp, deterministic)

    up = lambda inp: project('up', inp, (d, f), ('embed', 'mlp'))
    if cfg.gpt2:
      h = nn.gelu(up(x))
    else:
      act = {'silu': nn.silu, 'gelu_tanh': functools.partial(nn.gelu, approximate=True)}[cfg.mlp_act]
      h = act(project('gate', x, (d, f), ('embed', 'mlp'))) * up(x)
    h = nn.with_logical_constraint(h, ('batch', 'length', 'mlp'))
    out_std = 0.02 / (2 * cfg.num_layers) ** 0.5
    return project('down', h, (f, d), ('mlp', 'embed'), std=out_std)


class Block(nn.Module):
  """Pre-norm residual block. Returns (x, None) so that nn.scan can carry x."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, positions, mask, kv_mask, decode: bool, deterministic: bool, layer=0):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout)
    h = Attention(cfg, name='attn')(_norm(cfg, 'ln_attn')(x), positions, mask, decode, kv_mask,
                                    deterministic, layer)
    if cfg.post_norms:
      h = _norm(cfg, 'ln_attn_post')(h)
    x = x + drop(h, deterministic=deterministic)
    h = Mlp(cfg, name='mlp')(_norm(cfg, 'ln_mlp')(x), deterministic)
    if cfg.post_norms:
      h = _norm(cfg, 'ln_mlp_post')(h)
    x = x + drop(h, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    return x, None


REMAT_POLICIES = {
    'full': None,  # save nothing: recompute the whole block
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Transformer(nn.Module):
  """tokens [b, t] -> logits [b, t, vocab] (or final hidden states with return_hidden)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens, positions=None, segment_ids=None, *, kv_mask=None,
               decode: bool = False, deterministic: bool = True, return_hidden: bool = False):
    cfg = self.cfg
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    b, t = tokens.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    mask = None
    if not decode:
      mask = nn.make_causal_mask(tokens, dtype=jnp.bool_)
      if segment_ids is not None:
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        mask = mask & same[:, None]

    embed = nn.Embed(cfg.vocab_size, cfg.embed_dim, dtype=dt, param_dtype=pdt, name='embed',
                     embedding_init=_init(0.02, ('vocab', 'embed')))
    x = embed(tokens)
    if cfg.embed_scale:
      x = x * jnp.asarray(cfg.embed_dim ** 0.5, dt)
    embed_rows = cfg.token_rows('embed')
    if embed_rows is not None:
      x = x + embed_rows(tokens)
    if cfg.gpt2:
      pos_table = self.param('pos_embed', _init(0.01, (None, 'embed')),
                             (cfg.max_len, cfg.embed_dim), pdt)
      x = x + jnp.take(pos_table, positions, axis=0).astype(dt)
    x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

    block = Block
    if cfg.remat != 'none':
      block = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers,
                       static_argnums=(5, 6))  # decode, deterministic (self counts as 0)
    if cfg.scan_layers:   # the layer index is scanned over: layers may differ by their window
      x, _ = nn.scan(block, variable_axes={'params': 0, 'cache': 0},
                     split_rngs={'params': True, 'dropout': True},
                     in_axes=(nn.broadcast,) * 5 + (0,),
                     length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: 'layers'},
                     )(cfg, name='layers')(x, positions, mask, kv_mask, decode, deterministic,
                                           jnp.arange(cfg.num_layers))
    else:
      for i in range(cfg.num_layers):
        x, _ = block(cfg, name=f'layer_{i}')(x, positions, mask, kv_mask, decode, deterministic, i)

    x = _norm(cfg, 'ln_final')(x)
    if return_hidden:
      return x
    if cfg.gpt2 or cfg.tie_embeddings:
      logits = matmul(x, embed.embedding.astype(dt).T)
      head_rows = embed_rows
    else:
      logits = Proj((cfg.embed_dim, cfg.vocab_size), ('embed', 'vocab'), dtype=dt, param_dtype=pdt,
                    name='head')(x)
      head_rows = cfg.token_rows('head')
    if head_rows is not None:
      logits = lora_lib.add_logits(logits, cfg.lora_tokens, head_rows.attend(x))
    return nn.with_logical_constraint(mask_padding(cfg, softcap(logits, cfg.final_softcap)),
                                      ('batch', 'length', 'vocab'))


def softcap(x, cap: float):
  """cap * tanh(x / cap) (Gemma 2's soft-capping); cap 0 leaves x as it is."""
  return x if not cap else jnp.tanh(x / cap) * jnp.asarray(cap, x.dtype)


def mask_padding(cfg: ModelConfig, logits):
  """Padding ids of the vocabulary get a logit no softmax gives mass to (finite: 0 x it is 0)."""
  if not cfg.vocab_used or cfg.vocab_used >= logits.shape[-1]:
    return logits
  keep = jnp.arange(logits.shape[-1]) < cfg.vocab_used
  return jnp.where(keep, logits, jnp.asarray(-1e9, logits.dtype))


def unembed(cfg: ModelConfig, params, x):
  """Final hidden states -> logits, the same computation as the end of Transformer.__call__ (tied
  embedding for gpt2, the head for llama), for losses that make logits a chunk at a time."""
  dt = jnp.dtype(cfg.dtype)
  table = 'embed' if cfg.gpt2 or cfg.tie_embeddings else 'head'
  w = params['embed']['embedding'].astype(dt).T if table == 'embed' else params['head']['kernel'].astype(dt)
  logits = matmul(x.astype(dt), w)
  rows = params.get(table + lora_lib.SUFFIX) if cfg.lora_rank and cfg.lora_tokens else None
  if rows is not None:
    logits = lora_lib.add_logits(logits, cfg.lora_tokens, x.astype(dt) @ rows['rows'].astype(dt).T)
  return nn.with_logical_constraint(mask_padding(cfg, softcap(logits, cfg.final_softcap)),
                                    ('batch', 'length', 'vocab'))


def count_params(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


VOCAB_TABLES = ('embed', 'pos_embed', 'head')   # token embedding, learned positions, untied head


def param_counts(params: Any) -> dict:
  """All parameters, those in vocabulary- and position-sized tables, and the rest: Kaplan et al.'s
  non-embedding N, the count scaling laws and size axes use (16·L·d² for our Llama-style blocks
  with mlp_dim = 4d, 12·L·d² for GPT-2's)."""
  table = 0
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    if any(getattr(k, 'key', None) in VOCAB_TABLES for k in path):
      table += int(x.size)
  total = count_params(params)
  return {'params': total, 'params_embedding': table, 'params_non_embedding': total - table}


def flops_per_token(cfg: ModelConfig, seq_len: int, n_params: Optional[int] = None) -> float:
  """Training FLOPs per token (fwd + bwd), PaLM appendix B: 6N + 12 L T d."""
  d, l = cfg.embed_dim, cfg.num_layers
  if n_params is None:
    per_layer = 4 * d * d if cfg.kv_heads == cfg.num_heads else 2 * d * d + 2 * d * cfg.kv_heads * cfg.head_dim
    per_layer += (2 if cfg.gpt2 else 3) * d * cfg.mlp_dim
    n_params = l * per_layer + cfg.vocab_size * d
  return 6.0 * n_params + 12.0 * l * seq_len * d

"""LoRA (Hu et al. 2021): low-rank adapters beside the model's own projections.

An adapter of rank r beside a projection W (kernel [in..., out...]) adds (alpha / r) · (x A) B,
A [in..., r] random, B [r, out...] zero, so that at step 0 the model is its base exactly. The
adapters carry the logical axis names of the weight they adapt (the rank axis unsharded), so
they shard like it, scanned layers too. They are sibling modules named `<projection>_lora`
(query_lora, ..., down_lora), which is how `split` tells them from the base.

Token rows (PEFT's `trainable_token_indices`): with config.lora.tokens the embedding row and the
head row of those tokens train too, as zero-initialised deltas (`embed_lora/rows`, and for an
untied head `head_lora/rows`). Tokens a base model never saw in pretraining (our chat roles and
<|end|>) keep the rows pretraining left them (pushed down by every softmax), which adapters on
the projections cannot undo: a LoRA SFT model then rarely ends its turn.

With config.lora.rank > 0 a stage trains only the adapters (and any new scalar head); the base
is read from init_from and kept frozen beside the train state (`TrainState.frozen`), never in the
optimizer state or the stage's checkpoints, and a frozen reference is the base with adapters
off: the same arrays, no second copy.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

TARGETS = ('query', 'key', 'value', 'out', 'gate', 'up', 'down')   # our projections' names
SUFFIX = '_lora'


def targets(spec: str) -> tuple:
  names = tuple(t.strip() for t in spec.split(',') if t.strip())
  bad = [t for t in names if t not in TARGETS]
  if bad:
    raise ValueError(f'config.lora.targets: {bad[0]!r} is not a projection of the model '
                     f'(expected some of {", ".join(TARGETS)}).')
  return names


class LoRA(nn.Module):
  """(alpha / rank) · dropout(x) A B over the trailing `in_dims` axes of x."""
  in_shape: tuple
  out_shape: tuple
  in_names: tuple
  out_names: tuple
  rank: int
  alpha: float
  dropout: float = 0.0
  dtype: object = jnp.float32
  param_dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    fan_in = int(np.prod(self.in_shape))
    a = self.param('a', nn.with_logical_partitioning(
        nn.initializers.normal(1.0 / fan_in ** 0.5), self.in_names + (None,)),
        self.in_shape + (self.rank,), self.param_dtype)
    b = self.param('b', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                     (None,) + self.out_names),
                   (self.rank,) + self.out_shape, self.param_dtype)
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic or not self.dropout)
    letters = 'abcdefgh'
    k_in = letters[:len(self.in_shape)]
    k_out = letters[len(self.in_shape):len(self.in_shape) + len(self.out_shape)]
    h = jnp.einsum(f'...{k_in},{k_in}r->...r', x.astype(self.dtype), a.astype(self.dtype))
    y = jnp.einsum(f'...r,r{k_out}->...{k_out}', h, b.astype(self.dtype))
    return y * (self.alpha / self.rank)


class TokenRows(nn.Module):
  """Trainable deltas for the rows of `ids` in a [vocab, embed] table: `embed` adds them to the
  looked-up embeddings, `attend` gives the extra logits of those ids (for `add_logits`)."""
  ids: tuple
  embed_dim: int
  dtype: object = jnp.float32
  param_dtype: object = jnp.float32

  def setup(self):
    self.rows = self.param('rows', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                (None, 'embed')),
                           (len(self.ids), self.embed_dim), self.param_dtype)

  def embed(self, tokens):
    hit = (tokens[..., None] == jnp.asarray(self.ids, tokens.dtype)).astype(self.dtype)
    return hit @ self.rows.astype(self.dtype)

  def attend(self, x):
    return x.astype(self.dtype) @ self.rows.astype(self.dtype).T

  def __call__(self, tokens):
    return self.embed(tokens)


def add_logits(logits, ids: tuple, extra):
  """logits [..., vocab] with `extra` [..., len(ids)] added at the columns of ids."""
  return logits.at[..., jnp.asarray(ids)].add(extra.astype(logits.dtype))


def token_ids(spec, tok) -> tuple:
  """config.lora.tokens -> sorted token ids: 'specials' (the tokenizer's special tokens), or a
  comma list of ids and token strings ('<|user|>,<|end|>,7')."""
  spec = str(spec or '').strip()
  if not spec:
    return ()
  if spec == 'specials':
    return tuple(sorted(int(i) for i in tok.special_ids))
  ids = []
  for t in (t.strip() for t in spec.split(',') if t.strip()):
    if t.lstrip('-').isdigit():
      i = int(t)
    else:
      try:
        i = tok.special_id(t) if hasattr(tok, 'special_id') else None
      except KeyError:
        i = None
      if i is None and hasattr(tok, 'hf'):
        i = tok.hf.token_to_id(t)
      if i is None:
        raise ValueError(f'config.lora.tokens: {t!r} is not a token of this tokenizer (give ids '
                         "or token strings, or 'specials').")
    if not 0 <= i < tok.vocab_size:
      raise ValueError(f'config.lora.tokens: id {i} is outside the vocabulary (0..{tok.vocab_size - 1}).')
    ids.append(i)
  return tuple(sorted(set(ids)))


def is_adapter(path) -> bool:
  return any(str(getattr(k, 'key', k)).endswith(SUFFIX) for k in path)


def trainable_path(path) -> bool:
  """What a LoRA stage trains: the adapters, and a scalar head (the reward or value model's
  `score`, new on top of a language model)."""
  return is_adapter(path) or any(getattr(k, 'key', k) == 'score' for k in path)


def _flat(tree):
  """path -> leaf, a boxed param (nn.Partitioned: its logical axis names) counting as a leaf."""
  boxed = lambda x: isinstance(x, nn.meta.AxisMetadata)
  return {tuple(getattr(k, 'key', k) for k in p): v
          for p, v in jax.tree_util.tree_flatten_with_path(tree, is_leaf=boxed)[0]}


def _nest(flat: dict):
  out: dict = {}
  for path, v in flat.items():
    d = out
    for k in path[:-1]:
      d = d.setdefault(k, {})
    d[path[-1]] = v
  return out


def split(params, pred=trainable_path):
  """params -> (trainable, frozen): two nested dicts whose leaves together are params'."""
  flat = _flat(params)
  return (_nest({p: v for p, v in flat.items() if pred(p)}),
          _nest({p: v for p, v in flat.items() if not pred(p)}))


def merge(frozen, trainable):
  """The whole tree again (either may be empty)."""
  if not frozen:
    return trainable
  if not trainable:
    return frozen
  return _nest({**_flat(frozen), **_flat(trainable)})


def base(params):
  """The tree without its adapters: the base model, as a reference model reads it."""
  return _nest({p: v for p, v in _flat(params).items() if not is_adapter(p)})


def fold(params, scale: float, token_ids: tuple = ()):
  """Every adapter folded into its weight, W + scale · A B, and token rows added to their rows
  of the embedding (columns of the head), in each weight's own sharding; the tree without
  adapters. (Loading a LoRA run, `stages/parents.py`, and export.)"""
  flat = _flat(params)
  out = {p: v for p, v in flat.items() if not is_adapter(p)}
  place = lambda new, w: jax.device_put(new, w.sharding) if hasattr(w, 'sharding') else new
  for p, rows in flat.items():
    if is_adapter(p) and p[-1] == 'rows':
      target, ids = _rows_target(p), jnp.asarray(token_ids)
      w = out[target]
      w2 = (jnp.asarray(w).at[:, ids].add(rows.T.astype(w.dtype)) if target[-1] == 'kernel' else
            jnp.asarray(w).at[ids].add(rows.astype(w.dtype)))
      out[target] = place(w2, w)
  for p, a in flat.items():
    if is_adapter(p) and p[-1] == 'a':
      i = next(j for j, k in enumerate(p) if str(k).endswith(SUFFIX))
      target = p[:i] + (p[i][:-len(SUFFIX)],) + p[i + 1:-1] + ('kernel',)
      b, w = flat[p[:-1] + ('b',)], out[target]
      if 'layers' in p:   # scanned layers: a leading [layers] axis on a, b and w
        delta = jax.vmap(lambda x, y: jnp.tensordot(x, y, axes=1))(a, b)
      else:
        delta = jnp.tensordot(a, b, axes=1)
      out[target] = place((w + scale * delta).astype(w.dtype), w)
  return _nest(out)


def merged(params, scale: float, token_ids: tuple = ()):
  """`fold` in float32 on the host (for export and serving): a bf16 run's adapters are added to
  its weights at full precision, rounded once by the caller's export dtype."""
  host = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  return jax.tree.map(lambda x: np.asarray(x, np.float32), fold(host, scale, token_ids))


def _rows_target(path) -> tuple:
  """('embed_lora', 'rows') -> ('embed', 'embedding'); ('head_lora', 'rows') -> ('head', 'kernel')."""
  owner = path[-2][:-len(SUFFIX)]
  return path[:-2] + (owner, 'embedding' if owner == 'embed' else 'kernel')

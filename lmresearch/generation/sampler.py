"""The one token sampler: every generation path (the CLI, evaluation, RL rollouts, labeling and
the server's engine) draws its next token here, so that the same settings and seed give the same
tokens wherever they run.

  filter_logits  temperature, then top-k, then top-p on what is left
  sample_rows    one token per row, each row with its own key (and settings)
  row_key        a row's key: fold_in(PRNGKey(seed), row); step t draws with fold_in(row key, t)

Rules, the same as Hugging Face's warpers:
  temperature 0   greedy (argmax)
  top_k > 0       every token at or above the k-th largest logit survives (ties with the k-th
                  included, so a tie never depends on the order of the vocabulary)
  top_p < 1       the smallest set of most likely tokens whose probability reaches top_p, and
                  every token tied with the last one kept; the most likely token always survives
Settings are Python numbers (one for the batch: what is off costs nothing) or [rows] arrays (the
engine's slots, each request its own).
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp


def _static(x) -> bool:
  return isinstance(x, numbers.Number)


def check(temperature, top_k, top_p) -> None:
  """Validates settings given as numbers (ValueError naming the setting)."""
  if _static(temperature) and temperature < 0:
    raise ValueError(f'temperature={temperature} must be >= 0 (0 = greedy).')
  if _static(top_p) and not 0.0 < top_p <= 1.0:
    raise ValueError(f'top_p={top_p} must be in (0, 1].')
  if _static(top_k) and top_k < 0:
    raise ValueError(f'top_k={top_k} must be >= 0 (0 = off).')


def _truncate(scaled, top_k, top_p):
  """scaled logits [rows, vocab] -> the same with -inf where top-k or top-p cuts."""
  vocab = scaled.shape[-1]
  srt = -jnp.sort(-scaled, axis=-1)                                        # descending
  top_k = jnp.broadcast_to(jnp.asarray(top_k, jnp.int32), scaled.shape[:-1])
  top_p = jnp.broadcast_to(jnp.asarray(top_p, jnp.float32), scaled.shape[:-1])
  k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
  kth = jnp.take_along_axis(srt, (k - 1)[..., None], axis=-1)
  srt = jnp.where(jnp.arange(vocab) < k[..., None], srt, -jnp.inf)
  probs = jax.nn.softmax(srt, axis=-1)
  keep = jnp.sum((jnp.cumsum(probs, axis=-1) - probs) < top_p[..., None], axis=-1)   # >= 1
  pth = jnp.take_along_axis(srt, (keep - 1)[..., None], axis=-1)
  return jnp.where((scaled >= kth) & (scaled >= pth), scaled, -jnp.inf)


def filter_logits(logits, temperature=1.0, top_k=0, top_p=1.0):
  """Logits [..., vocab] -> float32 logits to sample from, -inf on excluded tokens. With a
  temperature of 0 (a number) only the argmax survives."""
  check(temperature, top_k, top_p)
  logits = jnp.asarray(logits).astype(jnp.float32)
  if _static(temperature) and temperature == 0:
    keep = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.bool_)
    return jnp.where(keep, logits, -jnp.inf)
  t = jnp.asarray(temperature, jnp.float32)
  scaled = logits / (jnp.maximum(t, 1e-6)[..., None] if t.ndim else jnp.maximum(t, 1e-6))
  if _static(top_k) and _static(top_p):
    if top_k > 0 or top_p < 1.0:
      scaled = _truncate(scaled, top_k, top_p)
    return scaled
  # per-row settings: the sort runs only when some row asks for it
  needs = jnp.any((jnp.asarray(top_k) > 0) | (jnp.asarray(top_p) < 1.0))
  return jax.lax.cond(needs, lambda x: _truncate(x, top_k, top_p), lambda x: x, scaled)


def row_key(key, row):
  """Row `row`'s key from a seed's key: the CLI's row i and the server's choice i of a request
  with the same seed draw alike."""
  return jax.random.fold_in(key, row)


def row_keys(key, rows: int):
  return jax.vmap(lambda r: row_key(key, r))(jnp.arange(rows))


def step_keys(keys, steps):
  """Each row's key for its token number `steps` ([rows] or a number)."""
  steps = jnp.broadcast_to(jnp.asarray(steps, jnp.int32), keys.shape[:1])
  return jax.vmap(jax.random.fold_in)(keys, steps)


def sample_rows(logits, keys, temperature=1.0, top_k=0, top_p=1.0):
  """One token per row of logits [rows, vocab], row r drawn with keys[r]; temperature 0 (per row,
  or for all) is greedy. Returns int32 [rows]."""
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if _static(temperature) and temperature == 0:
    return greedy
  scaled = filter_logits(logits, temperature, top_k, top_p)
  draw = lambda: jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)
  if _static(temperature):
    return draw()
  # A Gumbel variate per vocabulary entry and row only when some row samples.
  sampled = jax.lax.cond(jnp.any(temperature > 0), draw, lambda: greedy)
  return jnp.where(temperature <= 0, greedy, sampled)

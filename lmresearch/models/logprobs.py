"""Token log-probabilities and negative log-likelihoods under a language model, in one place.

Pretraining/SFT's token loss, PPO-ptx's pretraining loss and the perplexity task read `token_nll`;
DPO, PPO and GRPO optimize `token_logprobs` of sequences (all fp32).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def positions_from_mask(mask):
  """Per-row positions counting real tokens only (left or right padding)."""
  return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0).astype(jnp.int32)


def token_nll(logits, targets):
  """-log p(target) per position as logsumexp(logits) - logits[target] (fp32), and the logsumexp
  (for a z-loss)."""
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  return lse - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0], lse


def target_logprobs(logits, targets):
  """log p(target) per position from a log-softmax (fp32), and the full log-softmax."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], logp


def token_logprobs(model, params, tokens, mask, rng=None, dropout: float = 0.0, with_entropy=False):
  """log p(tokens[:, t+1] | tokens[:, :t+1]) for t < T-1, as [b, T-1] (fp32); padding (mask 0)
  is its own segment, so it never attends to or is attended by real tokens."""
  deterministic = rng is None or dropout == 0
  logits = model.apply({'params': params}, tokens, positions_from_mask(mask), mask.astype(jnp.int32),
                       deterministic=deterministic, rngs=None if deterministic else {'dropout': rng})
  lp, logp = target_logprobs(logits[:, :-1], tokens[:, 1:])
  if not with_entropy:
    return lp
  return lp, -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def nll_sums(logits, targets, weights):
  """[sum(nll·w), sum(logsumexp²·w), sum(correct·w)] over all positions (fp32): a token loss,
  its z-loss and accuracy, as sums so chunks of positions add up."""
  nll, lse = token_nll(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return jnp.stack([jnp.sum(nll * weights), jnp.sum(jnp.square(lse) * weights),
                    jnp.sum(correct * weights)])


def chunked_nll_sums(hidden, unembed, targets, weights, chunk: int):
  """`nll_sums` of unembed(hidden) made `chunk` positions at a time under a rematerialized scan, so
  neither pass holds more than [batch, chunk, vocab] logits (the full [batch, length, vocab] fp32
  logits dominate a large-vocabulary model's memory). chunk 0 or >= length: one piece."""
  b, t = targets.shape
  if not chunk or chunk >= t:
    return nll_sums(unembed(hidden), targets, weights)
  split = lambda a: jnp.moveaxis(a.reshape(b, t // chunk, chunk, *a.shape[2:]), 1, 0)

  def body(total, xs):
    h, tg, w = xs
    return total + nll_sums(unembed(h), tg, w), None

  total, _ = jax.lax.scan(jax.checkpoint(body), jnp.zeros(3, jnp.float32),
                          (split(hidden), split(targets), split(weights)))
  return total

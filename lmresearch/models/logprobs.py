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

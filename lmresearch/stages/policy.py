"""Log-probabilities of sequences under a language model: what DPO, PPO and GRPO optimize."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def positions_from_mask(mask):
  """Per-row positions counting real tokens only (left or right padding)."""
  return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0).astype(jnp.int32)


def token_logprobs(model, params, tokens, mask, rng=None, dropout: float = 0.0, with_entropy=False):
  """log p(tokens[:, t+1] | tokens[:, :t+1]) for t < T-1, as [b, T-1] (fp32); padding (mask 0)
  is its own segment, so it never attends to or is attended by real tokens."""
  deterministic = rng is None or dropout == 0
  logits = model.apply({'params': params}, tokens, positions_from_mask(mask), mask.astype(jnp.int32),
                       deterministic=deterministic, rngs=None if deterministic else {'dropout': rng})
  logits = logits[:, :-1].astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  lp = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  if not with_entropy:
    return lp
  return lp, -jnp.sum(jnp.exp(logp) * logp, axis=-1)

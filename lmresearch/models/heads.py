"""A transformer with a scalar head: the reward model, and PPO's value model.

The backbone's params are exactly the language model's (the LM head is kept, unused, so that an
SFT checkpoint restores into `params['backbone']` as it is); `score` maps each position's final
hidden state to a scalar.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from lmresearch.models.transformer import ModelConfig, Transformer, _init, _zeros


class ScalarHeadModel(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens, positions=None, segment_ids=None, *, deterministic: bool = True):
    """-> per-position scalars [batch, length] (reward: read at the last real token)."""
    backbone = Transformer(self.cfg, name='backbone')
    if self.is_initializing():   # create the LM head too: the param tree equals the SFT model's
      backbone(tokens, positions, segment_ids, deterministic=True)
    h = backbone(tokens, positions, segment_ids, deterministic=deterministic, return_hidden=True)
    score = nn.Dense(1, dtype=jnp.float32, param_dtype=jnp.dtype(self.cfg.param_dtype), name='score',
                     kernel_init=_init(0.02, ('embed', None)), bias_init=_zeros((None,)))
    return score(h.astype(jnp.float32))[..., 0]


def last_token_index(mask):
  """Index of each row's last real token in a right-padded [batch, length] 0/1 mask."""
  length = mask.shape[-1]
  return length - 1 - jnp.argmax(mask[..., ::-1], axis=-1)

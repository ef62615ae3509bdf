"""The GRPO family as named options: each piece as its paper defines it, and the published recipes.

One GRPO stage (stages/grpo.py) runs every variant; config.grpo picks each piece by name:

  advantage    'grpo'      A_i = (r_i - mean(r)) / (std(r) + eps)       Shao et al. 2024 (DeepSeekMath)
               'dr_grpo'   A_i = r_i - mean(r)                           Liu et al. 2025 (Dr. GRPO)
               'rloo'      A_i = r_i - mean_{j != i} r_j                 Ahmadian et al. 2024 (RLOO)
  aggregation  'sequence'  mean over responses of each one's token mean  GRPO
               'token'     sum over every token of the batch / their count   DAPO (Yu et al. 2025)
               'constant'  sum over every token / (responses x max_new_tokens)  Dr. GRPO
               'sum'       mean over responses of each one's token sum   REINFORCE / RLOO
  ratio        'token'     r_t = pi(y_t) / pi_old(y_t)                    PPO, GRPO
               'sequence'  s_i = (pi(y_i) / pi_old(y_i)) ** (1 / |y_i|), every token of y_i  GSPO
                           (Zheng et al. 2025)
  clip         [1 - clip_low, 1 + clip_high]; clip_high > clip_low is DAPO's clip-higher
  dynamic sampling  groups whose rewards are all equal carry no signal: dropped, and the batch
               refilled with groups of new prompts (DAPO)
  overlong     'none'; 'mask' (a truncated reply leaves the loss: DAPO's overlong filtering);
               'soft' (DAPO's soft overlong punishment, below)
  kl           'none', or 'k1' / 'k3' estimators of KL(pi || pi_ref) (Schulman 2020), in the loss
               (GRPO: k3) or subtracted from the reward (RLOO / InstructGPT: k1)
  tis          truncated importance sampling: each token's loss weighted by
               min(pi_old_trainer(y_t) / pi_sampler(y_t), tis_cap), for the gap between the
               sampler's and the trainer's numerics (Yao et al. 2025)

Every function here is pure jnp on [rows, T] arrays whose `mask` marks the reply's tokens.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

ADVANTAGES = ('grpo', 'dr_grpo', 'rloo')
AGGREGATIONS = ('sequence', 'token', 'constant', 'sum')
RATIOS = ('token', 'sequence')
OVERLONG = ('none', 'mask', 'soft')
KL_ESTIMATORS = ('none', 'k1', 'k3')
KL_PLACES = ('loss', 'reward')

# The published recipes: config.grpo's keys as each paper sets them (what `configs/grpo.py
# :recipe=NAME` applies). Keys a recipe does not name keep the config's values.
RECIPES = {
    # Shao et al. 2024, DeepSeekMath section 4.1: outcome supervision, per-response mean, symmetric
    # clip 0.2, k3 KL to the reference in the loss with beta 0.04.
    'grpo': dict(advantage='grpo', aggregation='sequence', ratio='token', clip_low=0.2,
                 clip_high=0.2, dynamic_sampling=False, overlong='none', kl='k3', kl_in='loss',
                 kl_coef=0.04),
    # Yu et al. 2025 (DAPO): clip-higher (0.2 / 0.28), dynamic sampling, token-level loss, soft
    # overlong punishment, no KL term.
    'dapo': dict(advantage='grpo', aggregation='token', ratio='token', clip_low=0.2,
                 clip_high=0.28, dynamic_sampling=True, overlong='soft', kl='none', kl_coef=0.0),
    # Liu et al. 2025 (Dr. GRPO): no std normalization, no per-response length normalization (a
    # constant normalizer), no KL.
    'dr_grpo': dict(advantage='dr_grpo', aggregation='constant', ratio='token', clip_low=0.2,
                    clip_high=0.2, dynamic_sampling=False, overlong='none', kl='none',
                    kl_coef=0.0),
    # Zheng et al. 2025 (GSPO): the length-normalized sequence ratio, clipped per sequence with
    # their ranges (3e-4 / 4e-4), group-normalized advantages, no KL.
    'gspo': dict(advantage='grpo', aggregation='sequence', ratio='sequence', clip_low=3e-4,
                 clip_high=4e-4, dynamic_sampling=False, overlong='none', kl='none', kl_coef=0.0),
    # Ahmadian et al. 2024 (RLOO): the leave-one-out baseline, REINFORCE on the reply's summed
    # log-probability, one on-policy update per batch, k1 KL in the reward.
    'rloo': dict(advantage='rloo', aggregation='sum', ratio='token', clip_low=0.2, clip_high=0.2,
                 dynamic_sampling=False, overlong='none', kl='k1', kl_in='reward', kl_coef=0.05,
                 epochs=1, minibatches=1),
}


def advantages(rewards, group: int, kind: str = 'grpo', eps: float = 1e-4):
  """rewards [n * group] (each prompt's group contiguous) -> one advantage per response."""
  r = rewards.reshape(-1, group)
  mean = r.mean(1, keepdims=True)
  if kind == 'grpo':
    adv = (r - mean) / (r.std(1, keepdims=True) + eps)
  elif kind == 'dr_grpo':
    adv = r - mean
  elif kind == 'rloo':   # r_i - (sum_j r_j - r_i) / (G - 1) = G / (G - 1) * (r_i - mean)
    adv = (r - (r.sum(1, keepdims=True) - r) / max(group - 1, 1)) if group > 1 else r * 0
  else:
    raise ValueError(f'advantage {kind!r}: expected one of {ADVANTAGES}')
  return adv.reshape(-1)


def aggregate(x, mask, kind: str = 'sequence', max_len: int = 0):
  """Per-token values [b, T] -> the scalar loss, by `kind` (the module docstring)."""
  mask = mask.astype(x.dtype)
  total = x * mask
  if kind == 'sequence':
    return jnp.mean(jnp.sum(total, 1) / jnp.maximum(jnp.sum(mask, 1), 1))
  if kind == 'token':
    return jnp.sum(total) / jnp.maximum(jnp.sum(mask), 1)
  if kind == 'constant':
    if max_len < 1:
      raise ValueError("aggregation 'constant' needs max_len (the longest reply allowed)")
    return jnp.sum(total) / (x.shape[0] * max_len)
  if kind == 'sum':
    return jnp.mean(jnp.sum(total, 1))
  raise ValueError(f'aggregation {kind!r}: expected one of {AGGREGATIONS}')


def ratios(logp, old_logp, mask, kind: str = 'token'):
  """The importance ratio of every reply token [b, T]: per token, or GSPO's sequence ratio
  exp(mean_t (logp - old_logp)) given to each token of its reply."""
  if kind == 'token':
    return jnp.exp(logp - old_logp)
  if kind == 'sequence':
    m = mask.astype(logp.dtype)
    mean = jnp.sum((logp - old_logp) * m, 1) / jnp.maximum(jnp.sum(m, 1), 1)
    return jnp.broadcast_to(jnp.exp(mean)[:, None], logp.shape)
  raise ValueError(f'ratio {kind!r}: expected one of {RATIOS}')


def clipped_objective(ratio, adv, clip_low: float, clip_high: float):
  """Per token: -min(ratio A, clip(ratio, 1 - clip_low, 1 + clip_high) A), and where the clip
  bound was the one taken, split by side: (loss, clipped below, clipped above)."""
  clipped = jnp.clip(ratio, 1 - clip_low, 1 + clip_high)
  loss = -jnp.minimum(ratio * adv, clipped * adv)
  low = (ratio < 1 - clip_low) & (adv < 0)    # the bound binds only in the pessimistic direction
  high = (ratio > 1 + clip_high) & (adv > 0)
  return loss, low, high


def kl_estimate(logp, ref_logp, kind: str):
  """Per-token estimators of KL(pi || pi_ref) from the sampled token (Schulman 2020): k1 =
  log pi - log pi_ref (unbiased, any sign); k3 = exp(d) - d - 1 with d = log pi_ref - log pi
  (unbiased, >= 0)."""
  if kind == 'k1':
    return logp - ref_logp
  if kind == 'k3':
    d = ref_logp - logp
    return jnp.exp(d) - d - 1
  raise ValueError(f'kl {kind!r}: expected one of {KL_ESTIMATORS[1:]}')


def overlong_penalty(lengths, finished, max_len: int, cache: int):
  """DAPO's soft overlong punishment (eq. 13): 0 up to max_len - cache tokens, then falling
  linearly to -1 at max_len; a reply the sampler cut off (not finished) is past max_len: -1."""
  lengths = lengths.astype(jnp.float32)
  start = max_len - cache
  ramp = jnp.where(lengths <= start, 0.0, (start - lengths) / max(cache, 1))
  return jnp.where(finished, jnp.maximum(ramp, -1.0), -1.0)


def all_equal_groups(rewards, group: int):
  """[n * group] -> [n] whether a group's rewards are all equal (no signal: DAPO drops it)."""
  r = rewards.reshape(-1, group)
  return jnp.all(r == r[:, :1], axis=1)


def select_groups(rewards_per_rollout, group: int, n: int):
  """DAPO's dynamic sampling over rollouts made one after another: [rewards of each rollout]
  -> (rows of their concatenation to train on, keep [rows]). Groups with a signal (rewards not
  all equal) are taken in order, n in all; if fewer exist, the batch is filled with the first
  dropped groups, kept out of the loss (keep 0)."""
  kept, dropped, offset = [], [], 0
  for r in rewards_per_rollout:
    flat = np.asarray(all_equal_groups(jnp.asarray(r), group))
    for i, f in enumerate(flat):
      (dropped if f else kept).append(offset + i * group)
    offset += len(r)
  starts = (kept + dropped)[:n]
  rows = np.concatenate([s + np.arange(group) for s in starts])
  keep = np.repeat((np.arange(n) < len(kept)).astype(np.float32), group)
  return rows, keep


def tis_weights(old_logp, sampler_logp, cap: float):
  """Truncated importance sampling: min(pi_trainer / pi_sampler, cap) per token, no gradient."""
  return jax.lax.stop_gradient(jnp.minimum(jnp.exp(old_logp - sampler_logp), cap))


def logprob_gap(old_logp, sampler_logp, mask, threshold: float = 0.1) -> dict:
  """How far the sampler's log-probs of the sampled tokens are from the trainer's: mean and max
  |d log p| over reply tokens, and the share of tokens above `threshold`."""
  m = mask.astype(jnp.float32)
  d = jnp.abs(old_logp - sampler_logp) * m
  n = jnp.maximum(jnp.sum(m), 1)
  return {'mean': jnp.sum(d) / n, 'max': jnp.max(d), 'share_above': jnp.sum((d > threshold) * m) / n}

"""AdamW with linear warmup and cosine decay, global-norm clipping (optax)."""
from __future__ import annotations

import jax
import optax


def learning_rate_schedule(train_cfg) -> optax.Schedule:
  decay = train_cfg.decay_steps or train_cfg.steps
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train_cfg.lr, warmup_steps=train_cfg.warmup_steps,
      decay_steps=max(decay, train_cfg.warmup_steps + 1), end_value=train_cfg.min_lr)


def make_optimizer(train_cfg) -> optax.GradientTransformation:
  # Weight decay on matrices only (not biases, norm scales), as nanoGPT and most LLM recipes do.
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  parts = []
  if train_cfg.clip_norm > 0:
    clip = optax.clip_by_global_norm(train_cfg.clip_norm)
    parts.append(clip_each_model(clip) if train_cfg.get('clip_per_model') else clip)
  parts.append(optax.adamw(learning_rate_schedule(train_cfg), b1=train_cfg.b1, b2=train_cfg.b2,
                           eps=1e-8, weight_decay=train_cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts)


def clip_each_model(clip: optax.GradientTransformation) -> optax.GradientTransformation:
  """Applies a stateless clip to each top-level subtree on its own. For PPO's {'policy', 'value'}
  params: under one global norm, the value loss's larger gradients would use up the clip budget
  and scale the policy's update down with them."""
  def update(updates, state, params=None):
    del params
    return {k: clip.update(v, clip.init(v))[0] for k, v in updates.items()}, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)

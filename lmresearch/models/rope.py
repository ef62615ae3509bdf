"""Rotary position embeddings (Su et al. 2021) in the half-split layout `transformers` uses for the
Llama family, with Llama 3.1's frequency scaling, linear scaling, and Gemma 3's own base for its
sliding layers."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rope_frequencies(cfg, half: int):
  """RoPE's inverse frequencies; with rope_scaling='llama3', Llama 3.1's: wavelengths past
  original_max_len / low_freq_factor slowed by `factor`, those under / high_freq_factor kept,
  a smooth blend between (as `transformers` computes them)."""
  freq = 1.0 / (cfg.rope_theta ** (np.arange(half, dtype=np.float64) / half))
  if cfg.rope_scaling == 'linear':   # positions divided by the factor (Gemma 3's global layers)
    freq = freq / cfg.rope_factor
  elif cfg.rope_scaling == 'llama3':
    low_wavelen = cfg.rope_original_max_len / cfg.rope_low_freq_factor
    high_wavelen = cfg.rope_original_max_len / cfg.rope_high_freq_factor
    wavelen = 2 * np.pi / freq
    smooth = ((cfg.rope_original_max_len / wavelen - cfg.rope_low_freq_factor)
              / (cfg.rope_high_freq_factor - cfg.rope_low_freq_factor))
    blended = (1 - smooth) * freq / cfg.rope_factor + smooth * freq
    freq = np.where(wavelen > low_wavelen, freq / cfg.rope_factor,
                    np.where(wavelen < high_wavelen, freq, blended))
  elif cfg.rope_scaling:
    raise ValueError(f"rope_scaling={cfg.rope_scaling!r}: only 'llama3' and 'linear' are implemented.")
  return freq.astype(np.float32)


def local_frequencies(cfg, half: int):
  """The sliding layers' frequencies where they have a base of their own: unscaled."""
  return (1.0 / (cfg.rope_local_theta ** (np.arange(half, dtype=np.float64) / half))).astype(np.float32)


def rope(x: jax.Array, positions: jax.Array, cfg, local=False) -> jax.Array:
  """Rotary position embedding on x [batch, length, heads, head_dim] (half-split layout). `local`
  (a bool, or traced per layer under scan_layers): use the sliding layers' base."""
  half = x.shape[-1] // 2
  freq = jnp.asarray(rope_frequencies(cfg, half))
  if not isinstance(local, bool):
    freq = jnp.where(local, jnp.asarray(local_frequencies(cfg, half)), freq)
  elif local:
    freq = jnp.asarray(local_frequencies(cfg, half))
  angle = positions[..., None].astype(jnp.float32) * freq              # [b, t, half]
  sin, cos = jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)

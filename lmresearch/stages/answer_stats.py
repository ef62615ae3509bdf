"""What RL does to the spread of answers, from n sampled replies per prompt: pass@k with the
unbiased estimator, maj@k, and the length of right and of wrong replies.

  pass@k = E_prompts[1 - C(n - c, k) / C(n, k)]     Chen et al. 2021 (Codex), eq. 1
           (n samples of a prompt, c of them right; unbiased for every k <= n, unlike the share
           of prompts whose first k samples hold a right one)
  maj@k  = the share of prompts whose most frequent final answer among the first k samples is
           right (ties: the answer seen first), as Wang et al. 2023 vote

Yue et al. 2025 compare the RL model's pass@k curve with its starting model's over k = 1 ... 256:
`curve` gives the points for every power of two up to n.
"""
from __future__ import annotations

import collections
from typing import Optional, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """1 - C(n - c, k) / C(n, k), as the product Chen et al. compute it (no huge binomials)."""
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f'pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})')
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def ks(n: int) -> list[int]:
  """1, 2, 4, ... up to n (n itself included)."""
  out = [1 << i for i in range(max(n, 1).bit_length()) if 1 << i <= n]
  return out + ([n] if out[-1] != n else [])


def majority_right(answers: Sequence[Optional[str]], right: Sequence[bool]) -> bool:
  """Whether the most frequent answer (None = no answer, never counted) is a right one."""
  votes = collections.Counter(a for a in answers if a is not None)
  if not votes:
    return False
  top = max(votes.values())
  first = next(a for a in answers if a is not None and votes[a] == top)
  return bool(right[list(answers).index(first)])


def curve(right: np.ndarray, answers: Optional[Sequence[Sequence[Optional[str]]]] = None,
          lengths: Optional[np.ndarray] = None) -> dict:
  """right [prompts, n] bools (and each sample's final answer, its reply length) -> metrics:
  pass@k for k in ks(n), maj@k where answers are given, and the mean reply length of right
  and of wrong samples (nan where there are none)."""
  right = np.asarray(right, bool)
  prompts, n = right.shape
  c = right.sum(1)
  out = {f'pass@{k}': float(np.mean([pass_at_k(n, int(ci), k) for ci in c])) for k in ks(n)}
  if answers is not None:
    for k in ks(n):
      out[f'maj@{k}'] = float(np.mean([majority_right(a[:k], r[:k])
                                       for a, r in zip(answers, right)]))
  if lengths is not None:
    lengths = np.asarray(lengths, np.float64)
    out['len_right'] = float(lengths[right].mean()) if right.any() else float('nan')
    out['len_wrong'] = float(lengths[~right].mean()) if (~right).any() else float('nan')
  return out

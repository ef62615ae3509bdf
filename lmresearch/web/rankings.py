"""Rankings with ties, and ratings from pairwise votes. Pure functions.

A ranking of K responses is held as *levels*: `levels[i]` is response i's rank level, 0 = best;
responses sharing a level are tied. `levels(order, ties)` builds them from a labeler's order (best
first) and tied pairs; `order_and_ties(levels)` goes back, listing every tied pair (the ranking
JSONL's "ties", which the reward and DPO stages read pairwise, not transitively).

  pairwise_agreement, kendall_tau_b   two rankings of one item
  agreement                           inter-labeler (and labeler-vs-gold) agreement over a store
  merge_ranked_pairs                  several labelers' rankings of one item -> one (Tideman)
  bradley_terry, bootstrap_ratings    arena votes -> Elo-scale ratings with 95% intervals
  win_rates                           per model pair, with Wilson intervals
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Iterable, Optional, Sequence

import numpy as np

ELO_SCALE = 400 / math.log(10)   # rating points per unit of log-strength (400 per 10x odds)
ELO_MEAN = 1000.0


# ---- levels ----------------------------------------------------------------------------------
def levels(order: Sequence[int], ties: Iterable[Sequence[int]] = ()) -> list[int]:
  """Rank levels (0 = best) of responses 0..K-1 from `order` (a permutation, best first) and
  tied pairs. A tie between responses that are not next to each other in `order` ties everything
  ranked between them too (a > b > c with a ~ c leaves no order to keep)."""
  k = len(order)
  if sorted(order) != list(range(k)):
    raise ValueError(f'order {list(order)!r} is not a permutation of 0..{k - 1}.')
  place = {r: n for n, r in enumerate(order)}
  joined = [False] * k   # joined[n]: the response at place n shares the level of the one above
  for a, b in ties:
    lo, hi = sorted((place[a], place[b]))
    for n in range(lo + 1, hi + 1):
      joined[n] = True
  out = [0] * k
  level = 0
  for n, r in enumerate(order):
    if n and not joined[n]:
      level += 1
    out[r] = level
  return out


def order_and_ties(lv: Sequence[int]) -> tuple[list[int], list[list[int]]]:
  """(order best first, every tied pair [i, j] with i < j) of a levels list; ties in response
  indices, responses of one level in index order."""
  order = sorted(range(len(lv)), key=lambda i: (lv[i], i))
  ties = [[i, j] for i, j in itertools.combinations(range(len(lv)), 2) if lv[i] == lv[j]]
  return order, ties


def gold_levels(gold: Sequence[float]) -> list[int]:
  """Levels from gold qualities (higher is better; equal quality is a tie)."""
  distinct = sorted(set(gold), reverse=True)
  return [distinct.index(g) for g in gold]


def _check_pair(r1, r2) -> tuple[np.ndarray, np.ndarray]:
  a, b = np.asarray(r1), np.asarray(r2)
  if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
    raise ValueError(f'two rankings of the same 2+ responses needed, got {len(a)} and {len(b)}.')
  return a, b


def _pair_signs(r1, r2) -> tuple[np.ndarray, np.ndarray]:
  """sign(level_i - level_j) under each ranking, over the pairs i < j."""
  a, b = _check_pair(r1, r2)
  i, j = np.triu_indices(len(a), 1)
  return np.sign(a[i] - a[j]), np.sign(b[i] - b[j])


def pairwise_agreement(r1: Sequence[int], r2: Sequence[int]) -> float:
  """The share of response pairs two rankings (levels) agree on: the same strict order, or both
  tied. (InstructGPT reports ~73% between its labelers.)"""
  s1, s2 = _pair_signs(r1, r2)
  return float(np.mean(s1 == s2))


def kendall_tau_b(r1: Sequence[int], r2: Sequence[int]) -> float:
  """Kendall's tau-b of two rankings (levels): (concordant - discordant) / sqrt((n0 - ties1) *
  (n0 - ties2)); pairs tied in either count in neither. NaN when either ranking ties everything."""
  s1, s2 = _pair_signs(r1, r2)
  strict1, strict2 = np.count_nonzero(s1), np.count_nonzero(s2)
  if strict1 == 0 or strict2 == 0:
    return float('nan')
  return float(np.sum(s1 * s2) / math.sqrt(strict1 * strict2))


def agreement(submissions: Iterable[dict]) -> dict:
  """Agreement over a store's submissions (dicts with 'item_id', 'labeler_id', 'ranking' and
  'ties' in original indices, and 'gold' or None):

    pairs               labeler pairs that ranked the same item (each one comparison)
    pairwise, tau       their mean pairwise agreement and mean Kendall tau-b (None: no pairs)
    gold_n              submissions of items with gold qualities
    gold_pairwise, gold_tau   those submissions against the gold order (None: no gold)

  Tau skips comparisons where it is undefined (a ranking that ties everything)."""
  by_item = defaultdict(list)
  gold_agree, gold_tau = [], []
  for s in submissions:
    lv = levels(s['ranking'], s['ties'])
    by_item[s['item_id']].append(lv)
    if s.get('gold') is not None:
      g = gold_levels(s['gold'])
      gold_agree.append(pairwise_agreement(lv, g))
      gold_tau.append(kendall_tau_b(lv, g))
  agree, tau = [], []
  for rankings in by_item.values():
    for r1, r2 in itertools.combinations(rankings, 2):
      agree.append(pairwise_agreement(r1, r2))
      tau.append(kendall_tau_b(r1, r2))
  return {'pairs': len(agree), 'pairwise': _mean(agree), 'tau': _mean(tau),
          'gold_n': len(gold_agree), 'gold_pairwise': _mean(gold_agree),
          'gold_tau': _mean(gold_tau)}


def _mean(xs: list[float]) -> Optional[float]:
  xs = [x for x in xs if not math.isnan(x)]
  return float(np.mean(xs)) if xs else None


# ---- merging several labelers' rankings ------------------------------------------------------
def merge_ranked_pairs(rankings: Sequence[Sequence[int]], k: int
                       ) -> tuple[list[int], list[list[int]]]:
  """Several rankings (levels) of the same k responses merged into one by Tideman's ranked pairs.

  Each pair's margin is (rankings putting i above j) - (putting j above i); ties count for
  neither. Pairs with a positive margin are locked in order of margin (larger first; equal
  margins by more rankings for, then by index), each unless it would close a cycle with pairs
  already locked. The merged order then peels the locked graph: every response no remaining
  locked pair puts below another forms the next level. So responses that no locked pair (nor a
  chain of them) separates and that sit at the same depth share a level: they come out tied,
  e.g. a pair with margin 0 that nothing else orders.

  Returns (order best first, every tied pair [i, j], i < j), in response indices.
  """
  if not rankings:
    raise ValueError('merge_ranked_pairs: no rankings to merge.')
  lv = np.asarray(rankings)
  if lv.ndim != 2 or lv.shape[1] != k:
    raise ValueError(f'merge_ranked_pairs: each ranking needs {k} levels, got shape {lv.shape}.')
  above = (lv[:, :, None] < lv[:, None, :]).sum(0)   # above[i, j]: rankings with i over j
  margin = above - above.T
  pairs = sorted(((margin[i, j], above[i, j], -i, -j) for i in range(k) for j in range(k)
                  if margin[i, j] > 0), reverse=True)
  below = [set() for _ in range(k)]   # locked edges: i -> j means i over j
  for _, _, i, j in pairs:
    i, j = -i, -j
    if not _reaches(below, j, i):
      below[i].add(j)
  indegree = [0] * k
  for i in range(k):
    for j in below[i]:
      indegree[j] += 1
  merged = [0] * k
  todo, level = set(range(k)), 0
  while todo:
    top = [i for i in todo if indegree[i] == 0]
    for i in top:
      merged[i] = level
      for j in below[i]:
        indegree[j] -= 1
    todo -= set(top)
    level += 1
  return order_and_ties(merged)


def _reaches(below: list[set], start: int, goal: int) -> bool:
  """Whether a path of locked edges leads from `start` to `goal`."""
  stack, seen = [start], {start}
  while stack:
    node = stack.pop()
    if node == goal:
      return True
    for nxt in below[node] - seen:
      seen.add(nxt)
      stack.append(nxt)
  return False


# ---- ratings from pairwise votes -------------------------------------------------------------
_OUTCOME = {'a': 1.0, 'b': 0.0, 'tie': 0.5, 'both_bad': 0.5}   # model_a's share of the win


def _models(votes, models) -> list[str]:
  names = set(models or ())
  for a, b, _ in votes:
    names.update((a, b))
  return sorted(names)


def _wins(votes, index: dict) -> np.ndarray:
  """wins[i, j]: i's wins over j (ties and both-bad as half a win each way)."""
  m = len(index)
  wins = np.zeros((m, m))
  for a, b, v in votes:
    if v not in _OUTCOME:
      raise ValueError(f'vote {v!r}: expected one of {", ".join(_OUTCOME)}.')
    if a == b:
      continue   # a model against itself says nothing about the ratings
    wins[index[a], index[b]] += _OUTCOME[v]
    wins[index[b], index[a]] += 1 - _OUTCOME[v]
  return wins


def _fit(wins: np.ndarray, prior: float, iters: int = 100, tol: float = 1e-10) -> np.ndarray:
  """Log-strengths maximising the Bradley-Terry likelihood P(i beats j) = sigmoid(t_i - t_j),
  plus a prior: each model played `prior` virtual games against a reference of strength 0, half
  won, so an undefeated model (or one never seen) stays finite. Newton's method with step
  halving; the prior makes the objective strictly concave, so it converges in a few steps."""
  m = len(wins)
  games = wins + wins.T
  won = wins.sum(1) + prior / 2

  def objective(t):
    d = t[:, None] - t[None, :]
    return float(np.sum(wins * -np.logaddexp(0, -d)) - prior * np.sum(np.logaddexp(0, t))
                 + prior / 2 * np.sum(t))

  t = np.zeros(m)
  value = objective(t)
  for _ in range(iters):
    p = 1 / (1 + np.exp(-(t[:, None] - t[None, :])))
    q = 1 / (1 + np.exp(-t))
    grad = won - np.sum(games * p, 1) - prior * q
    w = games * p * (1 - p)
    hess = w - np.diag(w.sum(1) + prior * q * (1 - q))   # negative definite
    step = np.linalg.solve(hess, -grad)
    scale = 1.0
    while True:
      new = t + scale * step
      new_value = objective(new)
      if new_value >= value - 1e-12 or scale < 1e-6:
        break
      scale /= 2
    t, value, done = new, new_value, np.max(np.abs(scale * step)) < tol
    if done:
      break
  return t


def _to_elo(t: np.ndarray) -> np.ndarray:
  r = t * ELO_SCALE
  return r - r.mean() + ELO_MEAN


def bradley_terry(votes: Iterable[Sequence[str]], models: Optional[Iterable[str]] = None,
                  prior: float = 1.0) -> dict[str, float]:
  """Ratings of the models in `votes` ((model_a, model_b, vote) with vote in 'a', 'b', 'tie',
  'both_bad'; the last two half a win each way) and in `models` (listed even without votes), on
  an Elo-like scale: 400 points per 10x odds of winning, mean 1000. `prior`: virtual games
  against an average model that keep unbeaten (or unseen) models finite."""
  votes = list(votes)
  names = _models(votes, models)
  if not names:
    return {}
  index = {n: i for i, n in enumerate(names)}
  return dict(zip(names, _to_elo(_fit(_wins(votes, index), prior)).tolist()))


def bootstrap_ratings(votes: Iterable[Sequence[str]], n: int = 1000, seed: int = 0,
                      models: Optional[Iterable[str]] = None, prior: float = 1.0
                      ) -> dict[str, tuple[float, float]]:
  """95% percentile intervals of `bradley_terry` ratings over `n` resamplings of the votes (with
  replacement). The votes fall into few kinds (model pair, outcome), so each resample is drawn
  as multinomial counts of those kinds, not as a list."""
  votes = list(votes)
  names = _models(votes, models)
  if not votes:
    return {m: (ELO_MEAN, ELO_MEAN) for m in names}
  index = {m: i for i, m in enumerate(names)}
  kinds = sorted({(a, b, v) for a, b, v in votes})
  kind_index = {kd: i for i, kd in enumerate(kinds)}
  counts = np.bincount([kind_index[tuple(v)] for v in votes], minlength=len(kinds))
  per_kind = np.stack([_wins([kd], index) for kd in kinds])   # [kinds, m, m]
  rng = np.random.default_rng(seed)
  draws = rng.multinomial(len(votes), counts / counts.sum(), size=n)
  ratings = np.stack([_to_elo(_fit(np.tensordot(d, per_kind, 1), prior)) for d in draws])
  lo, hi = np.percentile(ratings, [2.5, 97.5], axis=0)
  return {m: (float(lo[i]), float(hi[i])) for m, i in index.items()}


def wilson(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
  """Wilson score interval of a proportion ((0, 1) when n is 0)."""
  if n <= 0:
    return 0.0, 1.0
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)


def win_rates(votes: Iterable[Sequence[str]]) -> dict[tuple[str, str], dict]:
  """Per model pair (a, b) with a < b by name: {'n', 'wins', 'losses', 'ties' (tie and
  both_bad), 'rate' (a's win share, ties half), 'lo', 'hi' (95% Wilson interval)}."""
  out = {}
  for a, b, v in votes:
    if v not in _OUTCOME:
      raise ValueError(f'vote {v!r}: expected one of {", ".join(_OUTCOME)}.')
    share = _OUTCOME[v]
    if a > b:
      a, b, share = b, a, 1 - share
    s = out.setdefault((a, b), {'n': 0, 'wins': 0, 'losses': 0, 'ties': 0})
    s['n'] += 1
    s['wins' if share == 1 else 'losses' if share == 0 else 'ties'] += 1
  for s in out.values():
    won = s['wins'] + s['ties'] / 2
    s['rate'] = won / s['n']
    s['lo'], s['hi'] = wilson(won, s['n'])
  return out


MIN_BATTLES = 5   # battles a model needs before its rating gets a bootstrap interval


def arena_table(votes: Iterable[Sequence[str]], models: Optional[Iterable[str]] = None,
                n: int = 1000, seed: int = 0) -> dict:
  """The arena's ratings as JSON: {'votes': count, 'models': [{'model', 'rating', 'lo', 'hi'
  (bootstrap 95%; None below MIN_BATTLES battles), 'battles'}] best first, 'pairs': [{'a', 'b', 'n', 'a_win_rate', 'lo', 'hi'
  (Wilson 95%), 'wins', 'losses', 'ties'}]}."""
  votes = [tuple(v) for v in votes]
  ratings = bradley_terry(votes, models)
  intervals = bootstrap_ratings(votes, n=n, seed=seed, models=models)
  battles = defaultdict(int)
  for a, b, _ in votes:
    battles[a] += 1
    battles[b] += 1
  # Below MIN_BATTLES a resampled interval is not an interval (one vote resamples to itself).
  ok = lambda m: battles[m] >= MIN_BATTLES
  table = [{'model': m, 'rating': r, 'lo': intervals[m][0] if ok(m) else None,
            'hi': intervals[m][1] if ok(m) else None, 'battles': battles[m]}
           for m, r in ratings.items()]
  table.sort(key=lambda row: (-row['rating'], row['model']))
  pairs = [{'a': a, 'b': b, 'n': s['n'], 'a_win_rate': s['rate'], 'lo': s['lo'], 'hi': s['hi'],
            'wins': s['wins'], 'losses': s['losses'], 'ties': s['ties']}
           for (a, b), s in sorted(win_rates(votes).items())]
  return {'votes': len(votes), 'models': table, 'pairs': pairs}

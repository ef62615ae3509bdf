"""The sweep vocabulary of big_vision / XManager: a sweep is a list of override dicts.

  h.sweep('stages.ppo.ppo.ptx_coef', [0.0, 0.1])   -> [{key: 0.0}, {key: 0.1}]
  h.product([a, b])   every combination (later lists vary fastest)
  h.zipit([a, b])     element-wise (the lists must be equally long)
  h.chain([a, b])     one list after the other
  h.fixed(key, v)     one value (a one-trial sweep)

An experiment's `get_sweep(h)` returns such a list; each dict becomes one trial.
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence

Overrides = dict[str, Any]


def sweep(key: str, values: Sequence) -> list[Overrides]:
  if isinstance(values, (str, bytes)) or not len(values):
    raise ValueError(f'h.sweep({key!r}, ...): expected a non-empty list of values.')
  return [{key: v} for v in values]


def fixed(key: str, value) -> list[Overrides]:
  return [{key: value}]


def _merge(dicts: Sequence[Overrides]) -> Overrides:
  out: Overrides = {}
  for d in dicts:
    for k, v in d.items():
      if k in out and out[k] != v:
        raise ValueError(f'the sweep sets {k!r} twice in one trial ({out[k]!r} and {v!r}).')
      out[k] = v
  return out


def product(lists: Sequence[list[Overrides]]) -> list[Overrides]:
  return [_merge(combo) for combo in itertools.product(*lists)]


def zipit(lists: Sequence[list[Overrides]]) -> list[Overrides]:
  lengths = {len(lst) for lst in lists}
  if len(lengths) > 1:
    raise ValueError(f'h.zipit: the lists have different lengths {sorted(lengths)}.')
  return [_merge(combo) for combo in zip(*lists)]


def chain(lists: Sequence[list[Overrides]]) -> list[Overrides]:
  return [dict(d) for lst in lists for d in lst]


def _short(value) -> str:
  text = repr(value) if isinstance(value, (tuple, list)) else str(value)
  return ''.join(c if c.isalnum() or c in '.-_+' else '_' for c in text)


def short_names(trials: Sequence[Overrides]) -> dict[str, str]:
  """Each swept key -> its column name: the last component, lengthened where two keys of the
  sweep would share it (`ppo.train.lr`, `sft.train.lr`). Keys in the order the sweep declares."""
  keys = list(dict.fromkeys(k for t in trials for k in t))
  parts = {k: 1 for k in keys}
  while True:
    short = {k: '.'.join(k.split('.')[-parts[k]:]) for k in keys}
    clash = [k for k in keys if list(short.values()).count(short[k]) > 1]
    if not clash:
      return short
    for k in clash:
      parts[k] += 1


def names(trials: Sequence[Overrides]) -> list[str]:
  """Readable, stable trial names: `ptx_coef=0.1,seed=2` (short_names). The trial without
  overrides is `base`."""
  short = short_names(trials)
  keys = list(short)
  out = [','.join(f'{short[k]}={_short(t[k])}' for k in keys if k in t) or 'base' for t in trials]
  seen: dict[str, int] = {}
  for i, name in enumerate(out):
    if name in seen:
      same = trials[seen[name]] == trials[i]
      raise ValueError(f'trials {seen[name]} and {i} ' + (
          f'are the same ({name}): a sweep lists each trial once.' if same else
          f'get the same name {name!r} (their values differ only in characters a directory name '
          'cannot hold); use plainer values.'))
    if len(name.encode()) > 200:
      raise ValueError(f'trial {i}: its name {name[:80]}... is over 200 bytes (a directory '
                       'name); sweep fewer keys at once or use shorter values.')
    seen[name] = i
  return out

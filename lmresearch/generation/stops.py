"""Stop strings, compiled so that a row stops on the device the step its text first holds one.

A stop string may fall inside one token (Gemma's ".\n\n") or across several ("\n" + "Question"),
so a list of stop ids cannot express it. Instead the strings become a small automaton over
characters (Aho-Corasick: state = the longest tail of the text that is a prefix of a stop
string), and the automaton is run once over every token's text, from every state, on the host:

  table[state, token] = the state after the token's text, or MATCHED when a stop string ends
                        inside it

The sampler carries one int per row and does `state = table[state, token]` per step: exact
for any split, one gather per step, and S x V int16 of memory (a dozen states x 262k tokens is
6 MB). Generation stops early; the text is still cut at the string on the host
(`cut_at_stop_strings`), so the table only decides when to stop, never what is kept.

A token's text is what it adds when decoded after another token (an anchor), so tokenizers that
strip a leading space at the start of a text (SentencePiece's metaspace) give it back.
"""
from __future__ import annotations

import weakref
from typing import Optional, Sequence

import numpy as np

MATCHED = -1
_CACHE: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def token_texts(tok, vocab_size: Optional[int] = None) -> list[str]:
  """Each id's text as it appears inside a decoded sequence (specials as '')."""
  n = vocab_size or tok.vocab_size
  hf = getattr(tok, 'hf', None)
  if hf is not None and hasattr(hf, 'decode_batch'):
    anchor = tok.encode('a')[:1]
    lead = hf.decode(anchor, skip_special_tokens=True) if anchor else ''
    texts = hf.decode_batch([anchor + [i] for i in range(n)], skip_special_tokens=True)
    return [t[len(lead):] if t.startswith(lead) else t for t in texts]
  return [tok.decode([i], skip_special=True) for i in range(n)]


def _automaton(stops: Sequence[str]) -> tuple[list[str], dict, np.ndarray]:
  """-> (states as the prefixes they stand for, char -> class, delta [S, C] with MATCHED)."""
  prefixes = sorted({s[:i] for s in stops for i in range(len(s))}, key=lambda p: (len(p), p))
  index = {p: i for i, p in enumerate(prefixes)}
  alphabet = sorted({c for s in stops for c in s})
  classes = {c: i + 1 for i, c in enumerate(alphabet)}   # class 0: any other character
  delta = np.zeros((len(prefixes), len(alphabet) + 1), np.int32)
  for p, s in index.items():
    for c, k in classes.items():
      text = p + c
      if any(text.endswith(t) for t in stops):
        delta[s, k] = MATCHED
        continue
      # the longest tail of text that still starts some stop string
      delta[s, k] = next(index[text[j:]] for j in range(len(text) + 1) if text[j:] in index)
  return prefixes, classes, delta


def compile_stops(tok, stops: Sequence[str], vocab_size: Optional[int] = None) -> Optional[np.ndarray]:
  """table[state, token] (int16; MATCHED where a stop string completes), for `generate`'s
  `stop_table`; None when there is no stop string. Cached per tokenizer."""
  stops = tuple(sorted({s for s in stops if s}))
  if not stops:
    return None
  n = vocab_size or tok.vocab_size
  key = (stops, n)
  per_tok = _CACHE.setdefault(tok, {}) if _weakrefable(tok) else {}
  if key in per_tok:
    return per_tok[key]
  prefixes, classes, delta = _automaton(stops)
  texts = token_texts(tok, min(n, tok.vocab_size)) + [''] * max(0, n - tok.vocab_size)
  # Every token's characters as classes, padded with -1 past its end, longest tokens last.
  lengths = np.fromiter((len(t) for t in texts), np.int64, len(texts))
  width = int(lengths.max()) if len(texts) else 0
  chars = np.full((len(texts), max(width, 1)), -1, np.int32)
  for i, t in enumerate(texts):
    if t and any(c in classes for c in t):
      chars[i, :len(t)] = [classes.get(c, 0) for c in t]
    elif t:
      chars[i, 0] = 0   # no stop character: every state falls back to the start
  table = np.empty((len(prefixes), len(texts)), np.int16)
  for s in range(len(prefixes)):
    state = np.full(len(texts), s, np.int32)
    for j in range(chars.shape[1]):
      c = chars[:, j]
      live = (c >= 0) & (state != MATCHED)
      if not live.any():
        break
      state = np.where(live, delta[np.maximum(state, 0), np.maximum(c, 0)], state)
    table[s] = state
  per_tok[key] = table
  return table


def _weakrefable(obj) -> bool:
  try:
    weakref.ref(obj)
    return True
  except TypeError:
    return False

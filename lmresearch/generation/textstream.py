"""A reply's text as its tokens come, one slot at a time (the engine's host side): decoding only
the last few tokens, holding back half a UTF-8 character or what may be the start of a stop
string, and cutting at the first stop string."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence


@dataclasses.dataclass
class Live:
  """One request in a slot: its tokens so far and how much of their text was handed out."""
  req: Any          # the engine's Request
  key: Any
  prompt_len: int
  ids: list = dataclasses.field(default_factory=list)
  sent: int = 0     # characters of text handed out so far
  text: str = ''    # the text of ids[:read]
  prefix: int = 0   # ids[prefix:read]: the window the next token's text is read against
  read: int = 0


def detokenize(tok, state: Live) -> str:
  """The reply's text so far, decoding only its last few tokens (vLLM's prefix / read offsets):
  a token's text can depend on the one before it (a space, a byte of UTF-8), so the new text is
  the window's decoding minus what the window decoded to before this token. Text whose last
  character is incomplete UTF-8 waits for the next token."""
  ids = state.ids
  before = tok.decode(ids[state.prefix:state.read], skip_special=True)
  window = tok.decode(ids[state.prefix:], skip_special=True)
  if len(window) > len(before) and not window.endswith('\ufffd'):
    state.text += window[len(before):]
    state.prefix, state.read = state.read, len(ids)
  return state.text


def final_text(tok, state: Live) -> str:
  """The whole reply's text, the tokens held back included (the reply has ended)."""
  if state.read >= len(state.ids):
    return state.text
  return state.text + tok.decode(state.ids[state.read:], skip_special=True)


def first_stop(text: str, stops: Sequence[str], start: int = 0) -> Optional[int]:
  """Where the earliest stop string begins, looking only where one could begin after `start`
  characters were handed out (the rest was checked on earlier tokens)."""
  hits = [i for i in (text.find(s, max(0, start - len(s) + 1)) for s in stops if s) if i != -1]
  return min(hits) if hits else None


def safe_len(text: str, stops: Sequence[str], start: int = 0) -> int:
  """How much of `text` can be handed out: not a trailing replacement character (half of a UTF-8
  sequence), nor a tail that may be the start of a stop string."""
  end = len(text)
  while end > start and text[end - 1] == '\ufffd':
    end -= 1
  hold = 0
  for s in stops:
    for j in range(min(len(s) - 1, end), 0, -1):
      if text[end - j:end] == s[:j]:
        hold = max(hold, j)
        break
  return end - hold

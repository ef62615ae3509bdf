"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""
from __future__ import annotations

import contextlib
import json
import os


@contextlib.contextmanager
def replacing(path: str):
  """Yields a temporary path beside `path`; once the block has written it, it replaces `path` in
  one step (os.replace). If the block fails, `path` is left as it was."""
  tmp = path + '.tmp'
  yield tmp
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  with replacing(path) as tmp, open(tmp, 'w') as f:
    f.write(text)


def write_json(path: str, obj, **dump_kwargs) -> None:
  write_text(path, json.dumps(obj, **dump_kwargs))

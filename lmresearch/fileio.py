"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

In a multi-process job only the primary process (jax process 0; runtime.init_distributed says
which) writes: every process computes the same results, and one copy lands once."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile


_primary = True


def set_primary(primary: bool) -> None:
  global _primary
  _primary = primary


def is_primary() -> bool:
  return _primary


@contextlib.contextmanager
def replacing(path: str):
  """Yields a temporary path beside `path`; once the block has written it, it replaces `path` in
  one step (os.replace). If the block fails, `path` is left as it was. On a non-primary process
  the block writes a private temporary that is then dropped."""
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp',
                             dir=os.path.dirname(os.path.abspath(path)) if _primary else None)
  os.close(fd)   # unique: two writers of one file never share a temporary
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)   # mkstemp's 0600 would make results unreadable to the group
  try:
    yield tmp
    if _primary:
      os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  with replacing(path) as tmp, open(tmp, 'w') as f:
    f.write(text)


def write_json(path: str, obj, **dump_kwargs) -> None:
  write_text(path, json.dumps(obj, **dump_kwargs))

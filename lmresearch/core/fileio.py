"""Every file a run reads or writes goes through here or through `etils.epath` (as Orbax and TFDS
do), so a workdir can be a local directory or `gs://bucket/dir` on a pod.

Writes are atomic: a reader (or a resumed run) never sees a half-written file. Locally that is a
temporary beside the file and os.replace; on an object store (gs://, s3://) an upload replaces the
whole object in one step, so a local temporary is uploaded once it is complete.

In a multi-process job only the primary process (jax process 0; runtime.init_distributed says
which) writes: every process computes the same results, and one copy lands once."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile

from etils import epath

_primary = True


def set_primary(primary: bool) -> None:
  global _primary
  _primary = primary


def is_primary() -> bool:
  return _primary


def is_remote(path) -> bool:
  """gs://, s3://, ...: an object store, where there are no symlinks, renames or appends."""
  return '://' in os.fspath(path)


def absolute(path) -> str:
  """`path` made absolute (a run directory is recorded and reused from elsewhere); a remote one
  as it is (os.path.abspath would turn gs://b/x into $PWD/gs:/b/x)."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def join(*parts) -> str:
  """A path under a local or remote directory, as a string (configs and JSON record strings)."""
  return os.fspath(epath.Path(*parts))


def exists(path) -> bool:
  return epath.Path(path).exists()


def isdir(path) -> bool:
  return epath.Path(path).is_dir()


def makedirs(path) -> None:
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def read_text(path) -> str:
  return epath.Path(path).read_text(encoding='utf-8')


def read_bytes(path) -> bytes:
  return epath.Path(path).read_bytes()


def read_json(path):
  return json.loads(read_text(path))


@contextlib.contextmanager
def replacing(path):
  """Yields a local temporary path; once the block has written it, it replaces `path` in one step
  (os.replace locally, one upload remotely). If the block fails, `path` is left as it was. On a
  non-primary process the block writes a private temporary that is then dropped."""
  path = os.fspath(path)
  beside = _primary and not is_remote(path)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp',
                             dir=os.path.dirname(os.path.abspath(path)) if beside else None)
  os.close(fd)   # unique: two writers of one file never share a temporary
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)   # mkstemp's 0600 would make results unreadable to the group
  try:
    yield tmp
    if beside:
      os.replace(tmp, path)
    elif _primary:
      with open(tmp, 'rb') as f:
        epath.Path(path).write_bytes(f.read())
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path, text: str) -> None:
  write_bytes(path, text.encode('utf-8'))


def write_bytes(path, data: bytes) -> None:
  with replacing(path) as tmp, open(tmp, 'wb') as f:
    f.write(data)


def write_json(path, obj, **dump_kwargs) -> None:
  write_text(path, json.dumps(obj, **dump_kwargs))


def mmap_threshold(nbytes: int) -> bool:
  """glibc's M_MMAP_THRESHOLD, fixed at `nbytes`: host buffers of that size and up are mmapped,
  so freeing one gives its memory back at once (convert.return_freed_buffers, the server's
  checkpoint restore). Returns whether it applied (glibc only)."""
  import ctypes
  import ctypes.util
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    return bool(libc.mallopt(-3, int(nbytes)))
  except (OSError, AttributeError):
    return False

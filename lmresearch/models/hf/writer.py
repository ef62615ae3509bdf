"""A safetensors file written one tensor at a time.

safetensors' own `save_file` takes every tensor of a file at once, so exporting through it holds a
whole shard (up to `max_shard_bytes`) in memory beside the model. Here each tensor's bytes go to a
side file as soon as it is gathered; `close` writes the format's 8-byte header length, the JSON
header (dtype, shape, data offsets; padded to 8 bytes) and then copies the bytes behind it, so the
host never holds more than the tensor being written. The result is an ordinary safetensors file
(read back by `safe_open` and by transformers' loader in the tests).
"""
from __future__ import annotations

import json
import os
import shutil
import struct

import numpy as np

SLAB_BYTES = 16 << 20   # what one write holds beside the tensor it reads from
DTYPES = {'float32': 'F32', 'float16': 'F16', 'bfloat16': 'BF16', 'int32': 'I32', 'int64': 'I64'}


class StreamingWriter:

  def __init__(self, path: str, metadata: dict | None = None):
    self.path, self.metadata = path, dict(metadata or {})
    self._data = open(path + '.data', 'wb')
    self.header, self.offset = {}, 0

  def add(self, name: str, array: np.ndarray, dtype=None) -> None:
    """Appends `array` (any layout: a transposed view is fine) as `dtype` (default its own).
    It is written in slabs along its first axis, each made contiguous and cast on its own: the
    C-order bytes of consecutive slabs are the whole array's, and the host never holds a second
    whole copy of a transposed or cast tensor (on a 1B model's untied head, 1 GB)."""
    out = np.dtype(dtype) if dtype is not None else array.dtype
    code = DTYPES.get(out.name)
    if code is None:
      raise ValueError(f'{self.path}: tensor {name} has dtype {out}, which this writer '
                       f'does not store (one of {sorted(DTYPES)}).')
    array = np.asarray(array)
    shape = list(array.shape)
    if array.ndim == 0:
      array = array.reshape(1)
    row_bytes = max(1, array[0].size * out.itemsize) if len(array) else 1
    step = max(1, SLAB_BYTES // row_bytes)
    for i in range(0, len(array), step):
      np.ascontiguousarray(array[i:i + step], dtype=out).tofile(self._data)
    nbytes = array.size * out.itemsize
    self.header[name] = {'dtype': code, 'shape': shape,
                         'data_offsets': [self.offset, self.offset + nbytes]}
    self.offset += nbytes

  def close(self) -> None:
    self._data.close()
    header = {'__metadata__': self.metadata, **self.header} if self.metadata else dict(self.header)
    blob = json.dumps(header, separators=(',', ':')).encode()
    blob += b' ' * (-len(blob) % 8)
    tmp = self.path + '.tmp'
    with open(tmp, 'wb') as out, open(self.path + '.data', 'rb') as data:
      out.write(struct.pack('<Q', len(blob)))
      out.write(blob)
      shutil.copyfileobj(data, out, 64 << 20)
    os.remove(self.path + '.data')
    os.replace(tmp, self.path)

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

DTYPES = {'float32': 'F32', 'float16': 'F16', 'bfloat16': 'BF16', 'int32': 'I32', 'int64': 'I64'}


class StreamingWriter:

  def __init__(self, path: str, metadata: dict | None = None):
    self.path, self.metadata = path, dict(metadata or {})
    self._data = open(path + '.data', 'wb')
    self.header, self.offset = {}, 0

  def add(self, name: str, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    dtype = DTYPES.get(array.dtype.name)
    if dtype is None:
      raise ValueError(f'{self.path}: tensor {name} has dtype {array.dtype}, which this writer '
                       f'does not store (one of {sorted(DTYPES)}).')
    array.tofile(self._data)   # raw little-endian bytes, no copy
    self.header[name] = {'dtype': dtype, 'shape': list(array.shape),
                         'data_offsets': [self.offset, self.offset + array.nbytes]}
    self.offset += array.nbytes

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

"""A llama.cpp GGUF file read as the Hugging Face checkpoint it was converted from.

A GGUF holds the model config as metadata under llama.cpp's key names, the tokenizer as arrays
(tokens, scores, token types, merges, special ids, chat template), and each tensor under
llama.cpp's name, possibly quantized. `GGUFFile` turns these back into what `--from_hf` reads:

  .config            config.json as transformers has it for that model_type (`ARCHS`: one small
                     table per llama.cpp architecture)
  .write_tokenizer   tokenizer.json (built with HF `tokenizers`, as transformers' own GGUF loader
                     builds it), tokenizer_config.json, generation_config.json
  .files/.shape/.rows  the `Reader` interface of hf/__init__.py: HF tensor names, HF shapes, and
                     rows dequantized to float32 in HF layout, with llama.cpp's changes undone
                     (Llama's q/k row permutation, Gemma's norms stored as w + 1)

Quantization blocks run along a tensor's last (ggml's first) axis, so a row is whole blocks and
`rows(name, r0, r1)` maps and dequantizes only those rows' bytes: a device reads its shard.
Reading uses the `gguf` package (llama.cpp's own): GGUFReader for the header, gguf.quants for
the blocks. Adding a family is an entry in ARCHS (its tensor names and config keys).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Callable, Optional

import numpy as np

from lmresearch.core.errors import ConfigError

def _need_gguf():
  try:
    import gguf
  except ImportError as e:
    raise ImportError('reading a GGUF needs llama.cpp\'s `gguf` package: pip install gguf') from e
  return gguf


# ---- names ------------------------------------------------------------------------------------
# GGUF tensor names (without .weight/.bias) -> HF names. Top level, then per block `blk.{i}.`.
TOP = {'token_embd': 'model.embed_tokens', 'output_norm': 'model.norm', 'output': 'lm_head'}
LLAMA_BLOCK = {'attn_norm': 'input_layernorm', 'ffn_norm': 'post_attention_layernorm',
               'attn_q': 'self_attn.q_proj', 'attn_k': 'self_attn.k_proj',
               'attn_v': 'self_attn.v_proj', 'attn_output': 'self_attn.o_proj',
               'ffn_gate': 'mlp.gate_proj', 'ffn_up': 'mlp.up_proj', 'ffn_down': 'mlp.down_proj'}
QK_NORM = {'attn_q_norm': 'self_attn.q_norm', 'attn_k_norm': 'self_attn.k_norm'}
# Gemma 2/3 norm around both sublayers: llama.cpp's ffn_norm is the pre-MLP norm there.
GEMMA_BLOCK = {**LLAMA_BLOCK, 'ffn_norm': 'pre_feedforward_layernorm',
               'post_attention_norm': 'post_attention_layernorm',
               'post_ffw_norm': 'post_feedforward_layernorm'}


class Meta:
  """The file's metadata; `arch(key)` reads `{architecture}.{key}`."""

  def __init__(self, fields: dict, path: str, shapes: dict):
    self.fields, self.path = fields, path
    self.shapes = shapes          # GGUF tensor name -> its HF shape
    self.arch_name = fields['general.architecture']
    self.llama3_rope: Optional[dict] = None   # from rope_freqs.weight, where the file has it

  def get(self, key, default=None):
    return self.fields.get(key, default)

  def arch(self, key, default=None):
    return self.fields.get(f'{self.arch_name}.{key}', default)

  def need(self, key):
    full = f'{self.arch_name}.{key}'
    if full not in self.fields:
      raise ConfigError(f'{self.path}: metadata key {full} is missing; llama.cpp writes it for '
                        'every model of this architecture, so the file is incomplete.')
    return self.fields[full]


def _common_config(m: Meta, model_type: str, architecture: str) -> dict:
  """The keys every decoder family here shares, as config.json spells them."""
  heads = int(m.need('attention.head_count'))
  hidden = int(m.need('embedding_length'))
  vocab = int(m.arch('vocab_size') or len(m.get('tokenizer.ggml.tokens') or ()) or
              m.shapes['token_embd.weight'][0])
  out = {'architectures': [architecture], 'model_type': model_type, 'vocab_size': vocab,
         'hidden_size': hidden, 'intermediate_size': int(m.need('feed_forward_length')),
         'num_hidden_layers': int(m.need('block_count')), 'num_attention_heads': heads,
         'num_key_value_heads': int(m.arch('attention.head_count_kv') or heads),
         'max_position_embeddings': int(m.arch('context_length') or 2048),
         'rms_norm_eps': float(m.need('attention.layer_norm_rms_epsilon')),
         'rope_theta': float(m.arch('rope.freq_base') or 10000.0),
         # llama.cpp writes the output projection only when it is not the embedding matrix
         'tie_word_embeddings': 'output.weight' not in m.shapes}
  for key, name in (('bos_token_id', 'bos_token_id'), ('eos_token_id', 'eos_token_id'),
                    ('pad_token_id', 'padding_token_id')):
    if m.get(f'tokenizer.ggml.{name}') is not None:
      out[key] = int(m.get(f'tokenizer.ggml.{name}'))
  scaling = m.arch('rope.scaling.type')
  if scaling not in (None, 'none'):
    raise ConfigError(f'{m.path}: {m.arch_name}.rope.scaling.type={scaling!r}: RoPE scaling '
                      'of this kind is not implemented by lmresearch\'s families.')
  return out


def _head_dim(m: Meta, cfg: dict) -> int:
  return int(m.arch('attention.key_length') or m.arch('rope.dimension_count') or
             cfg['hidden_size'] // cfg['num_attention_heads'])


def _llama_config(m: Meta) -> dict:
  # llama.cpp converts Mistral as 'llama'; a sliding window, where the file states one, makes it
  # Mistral again (a file that states none runs without a window in llama.cpp too).
  window = m.arch('attention.sliding_window')
  kind, arch = ('mistral', 'MistralForCausalLM') if window else ('llama', 'LlamaForCausalLM')
  cfg = _common_config(m, kind, arch)
  cfg.update(hidden_act='silu', head_dim=_head_dim(m, cfg))
  if window:
    cfg['sliding_window'] = int(window)
  else:
    cfg.update(attention_bias=False, mlp_bias=False)
  if m.llama3_rope:   # Llama 3.1+'s RoPE scaling, stored as per-frequency factors
    cfg['rope_scaling'] = {'rope_type': 'llama3', **m.llama3_rope}
  return cfg


def _qwen2_config(m: Meta) -> dict:
  cfg = _common_config(m, 'qwen2', 'Qwen2ForCausalLM')
  head_dim = _head_dim(m, cfg)
  if head_dim * cfg['num_attention_heads'] != cfg['hidden_size']:
    raise ConfigError(f'{m.path}: qwen2.attention.key_length={head_dim} is not hidden_size / '
                      'head_count; Qwen2 has no separate head_dim.')
  return {**cfg, 'hidden_act': 'silu', 'use_sliding_window': False}


def _qwen3_config(m: Meta) -> dict:
  cfg = _common_config(m, 'qwen3', 'Qwen3ForCausalLM')
  return {**cfg, 'hidden_act': 'silu', 'head_dim': _head_dim(m, cfg), 'attention_bias': False,
          'use_sliding_window': False}


def _gemma_layer_types(m: Meta, layers: int, default_pattern: int) -> list:
  pattern = m.arch('attention.sliding_window_pattern', default_pattern)
  if isinstance(pattern, list):   # newer files: one flag per layer (true: sliding)
    return ['sliding_attention' if p else 'full_attention' for p in pattern]
  return ['full_attention' if (i + 1) % int(pattern) == 0 else 'sliding_attention'
          for i in range(layers)]


def _gemma2_config(m: Meta) -> dict:
  cfg = _common_config(m, 'gemma2', 'Gemma2ForCausalLM')
  head_dim = _head_dim(m, cfg)
  # llama.cpp scales queries by 1/sqrt(hidden/heads) for the 27B (46 layers), 1/sqrt(head_dim)
  # otherwise: what config.json calls query_pre_attn_scalar
  scalar = cfg['hidden_size'] // cfg['num_attention_heads'] if cfg['num_hidden_layers'] == 46 \
      else head_dim
  return {**cfg, 'head_dim': head_dim, 'hidden_activation': 'gelu_pytorch_tanh',
          'query_pre_attn_scalar': scalar,
          'sliding_window': int(m.need('attention.sliding_window')),
          'attn_logit_softcapping': m.arch('attn_logit_softcapping'),
          'final_logit_softcapping': m.arch('final_logit_softcapping'),
          'layer_types': _gemma_layer_types(m, cfg['num_hidden_layers'], 2),
          'attention_bias': False}


def _gemma3_config(m: Meta) -> dict:
  # The GGUF of a Gemma 3 holds the text model only: transformers' Gemma3TextConfig.
  cfg = _common_config(m, 'gemma3_text', 'Gemma3ForCausalLM')
  head_dim = _head_dim(m, cfg)
  scalar = cfg['hidden_size'] // cfg['num_attention_heads'] if cfg['num_hidden_layers'] == 62 \
      else head_dim   # llama.cpp: 1/sqrt(hidden/heads) for the 27B, 1/sqrt(head_dim) otherwise
  theta = cfg.pop('rope_theta')
  full = {'rope_type': 'default', 'rope_theta': theta}
  factor = m.arch('rope.scaling.factor')
  if m.arch('rope.scaling.type') == 'linear' and factor:
    full = {'rope_type': 'linear', 'factor': float(factor), 'rope_theta': theta}
  return {**cfg, 'head_dim': head_dim, 'hidden_activation': 'gelu_pytorch_tanh',
          'query_pre_attn_scalar': scalar,
          'sliding_window': int(m.need('attention.sliding_window')),
          'layer_types': _gemma_layer_types(m, cfg['num_hidden_layers'], 6),
          'rope_parameters': {'full_attention': full, 'sliding_attention': {
              'rope_type': 'default',
              'rope_theta': float(m.arch('rope.freq_base_swa') or 10000.0)}},
          'attn_logit_softcapping': None, 'final_logit_softcapping': None,
          'attention_bias': False}


@dataclasses.dataclass(frozen=True)
class Arch:
  """How one llama.cpp architecture maps back to transformers."""
  config: Callable[[Meta], dict]
  block: dict                      # blk.{i}.<gguf> -> model.layers.{i}.<hf>
  permute_qk: bool = False         # llama.cpp permuted q/k rows (its rotary pairs are adjacent)
  norm_offset: float = 0.0         # llama.cpp stored every norm weight as w + offset


# The keys (llama.cpp architectures) are the families the importer reads; an architecture whose
# model_type has no family file in lmresearch.models.hf is refused by `hf.family`.
ARCHS = {
    'llama': Arch(_llama_config, LLAMA_BLOCK, permute_qk=True),
    'qwen2': Arch(_qwen2_config, LLAMA_BLOCK),
    'qwen3': Arch(_qwen3_config, {**LLAMA_BLOCK, **QK_NORM}),
    'gemma2': Arch(_gemma2_config, GEMMA_BLOCK, norm_offset=1.0),
    'gemma3': Arch(_gemma3_config, {**GEMMA_BLOCK, **QK_NORM}, norm_offset=1.0),
}


def _llama3_rope(factors: np.ndarray, theta: float, head_dim: int, path: str) -> dict:
  """Llama 3.1's rope_scaling from the per-frequency divisors llama.cpp stores instead
  (rope_freqs.weight): 1 for short wavelengths, `factor` for long ones, and between them
  1/r = (1-s)/factor + s with s linear in 1/wavelength. Only the two wavelength bounds are
  determined, so low_freq_factor is taken as 1 (as every Llama 3 release has it); the result is
  checked by recomputing the divisors."""
  freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  f = float(factors.max())
  mid = (factors > 1 + 1e-6) & (factors < f - 1e-6)
  if f > 1 and mid.sum() >= 2:
    s = (1 / factors[mid] - 1 / f) / (1 - 1 / f)          # = a * freq + b
    a, b = np.polyfit(freqs[mid], s, 1)
    high = 1 - 1 / b                                        # with low_freq_factor = 1
    old = a * 2 * math.pi * (high - 1)
    old = round(old) if abs(old - round(old)) < 1e-3 * old else old
    # rounded: the file holds float32 factors; the recomputation below checks the result
    rope = {'factor': float(round(f, 3)), 'low_freq_factor': 1.0,
            'high_freq_factor': float(round(high, 3)), 'original_max_position_embeddings': old}
    wavelen = 2 * math.pi / freqs
    smooth = (old / wavelen - 1.0) / (rope['high_freq_factor'] - 1.0)
    want = np.where(wavelen < old / rope['high_freq_factor'], 1.0,
                    np.where(wavelen > old, f, 1 / ((1 - smooth) / f + smooth)))
    if np.allclose(want, factors, rtol=1e-4):
      return rope
  raise ConfigError(f'{path}: rope_freqs.weight holds RoPE factors that are not Llama 3\'s '
                    'rope_scaling; lmresearch implements only that scaling. Convert from the HF '
                    'checkpoint (--from_hf) instead.')


# ---- the file ---------------------------------------------------------------------------------
@dataclasses.dataclass
class _Tensor:
  gguf_name: str
  qtype: object          # gguf.GGMLQuantizationType
  hf_shape: tuple        # HF order (ggml's reversed)
  offset: int            # of the data, in the file
  row_bytes: int         # bytes per row (the last HF axis)
  permute_heads: int = 0   # undo llama.cpp's q/k row permutation over this many heads
  norm_offset: float = 0.0


class GGUFFile:
  """A GGUF as config.json + tokenizer files + a `Reader` (files/shape/rows) of HF tensors."""

  def __init__(self, path: str):
    gguf = _need_gguf()
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path} not found: --from_gguf names a llama.cpp .gguf file.')
    self.path = os.path.abspath(path)
    try:
      reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
      raise ValueError(f'{path}: not a GGUF file gguf.GGUFReader can read ({e}).') from e
    fields = {}
    for name, field in reader.fields.items():
      if name.startswith('GGUF.'):
        continue
      fields[name] = field.contents()
    raw = {}
    for t in reader.tensors:
      qtype = gguf.GGMLQuantizationType(int(t.tensor_type))
      raw[t.name] = (tuple(int(d) for d in reversed(t.shape.tolist())), qtype,
                     int(t.data_offset), int(t.n_bytes))
    del reader   # the header is read; tensors are mapped per read
    self.meta = Meta(fields, path, {k: v[0] for k, v in raw.items()})
    arch_name = self.meta.arch_name
    if arch_name not in ARCHS:
      raise ConfigError(f'{path}: general.architecture={arch_name!r}: lmresearch reads GGUFs of '
                        f'{", ".join(sorted(ARCHS))}.')
    self.arch = ARCHS[arch_name]
    self.types = {}
    for _, qtype, _, _ in raw.values():
      self.types[qtype.name] = self.types.get(qtype.name, 0) + 1
    if 'rope_freqs.weight' in raw:   # a buffer of Llama 3.1+, turned into config (not a param)
      shape, qtype, offset, n = raw['rope_freqs.weight']
      factors = self._dequantize(qtype, np.fromfile(path, np.uint8, n, offset=offset), shape[-1])
      probe = {'hidden_size': int(self.meta.need('embedding_length')),
               'num_attention_heads': int(self.meta.need('attention.head_count'))}
      self.meta.llama3_rope = _llama3_rope(factors.reshape(-1).astype(np.float64),
                           float(self.meta.arch('rope.freq_base') or 10000.0),
                           _head_dim(self.meta, probe), path)
    self.config = self.arch.config(self.meta)
    self._tensors = self._map(raw)
    self.files = {name: self.path for name in self._tensors}

  # -- tensors --
  def _hf_name(self, gguf_name: str) -> Optional[str]:
    stem, dot, suffix = gguf_name.rpartition('.')
    if stem in TOP:
      return f'{TOP[stem]}.{suffix}'
    match = re.fullmatch(r'blk\.(\d+)\.(.+)', stem)
    if match and match.group(2) in self.arch.block:
      return f'model.layers.{match.group(1)}.{self.arch.block[match.group(2)]}.{suffix}'
    return None

  def _map(self, raw: dict) -> dict:
    gguf = _need_gguf()
    cfg = self.config
    heads, kv_heads = cfg['num_attention_heads'], cfg['num_key_value_heads']
    out = {}
    for gguf_name, (shape, qtype, offset, nbytes) in raw.items():
      if gguf_name == 'rope_freqs.weight':
        continue   # read into config.json's rope_scaling above
      name = self._hf_name(gguf_name)
      if name is None:
        raise ConfigError(f'{self.path}: tensor {gguf_name} has no Hugging Face name for '
                          f'architecture {self.meta.arch_name!r} (gguf_file.ARCHS); refusing to '
                          'drop weights.')
      if qtype.name not in SUPPORTED:
        raise ConfigError(f'{self.path}: tensor {gguf_name} is {qtype.name}; lmresearch '
                          f'dequantizes {", ".join(SUPPORTED)}.')
      block, type_size = gguf.GGML_QUANT_SIZES[qtype]
      cols = shape[-1]
      if cols % block:
        raise ValueError(f'{self.path}: tensor {gguf_name} has rows of {cols} values, not whole '
                         f'{qtype.name} blocks of {block}: the file is damaged.')
      rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
      row_bytes = cols // block * type_size
      if rows * row_bytes != nbytes:
        raise ValueError(f'{self.path}: tensor {gguf_name} holds {nbytes} bytes, not '
                         f'{rows * row_bytes} for {shape} in {qtype.name}: the file is damaged.')
      permute = 0
      if self.arch.permute_qk and '.attn_q.' in gguf_name:
        permute = heads
      elif self.arch.permute_qk and '.attn_k.' in gguf_name:
        permute = kv_heads
      offset_by = self.arch.norm_offset if gguf_name.endswith('norm.weight') else 0.0
      out[name] = _Tensor(gguf_name, qtype, shape, offset, row_bytes, permute, offset_by)
    return out

  def shape(self, name: str) -> list[int]:
    return list(self._tensors[name].hf_shape)

  def rows(self, name: str, r0: int, r1: int, cols: Optional[tuple] = None) -> np.ndarray:
    """hf[name][r0:r1] (and columns c0:c1) as float32: only those rows' bytes are read and
    dequantized (the rows a permuted q/k needs, for Llama)."""
    t = self._tensors[name]
    if len(t.hf_shape) == 1:   # a vector is one row of blocks
      out = self._read(t, 0, 1).reshape(-1)[r0:r1]
    elif t.permute_heads:
      # llama.cpp's row h*d + 2i + s is HF's row h*d + s*d/2 + i (rotary halves interleaved)
      d = t.hf_shape[0] // t.permute_heads
      hf_rows = np.arange(r0, r1)
      h, rem = np.divmod(hf_rows, d)
      s, i = np.divmod(rem, d // 2)
      file_rows = h * d + 2 * i + s
      lo, hi = int(file_rows.min()), int(file_rows.max()) + 1
      out = self._read(t, lo, hi)[file_rows - lo]
    else:
      out = self._read(t, r0, r1)
    if cols is not None:
      out = out[:, cols[0]:cols[1]]
    if t.norm_offset:
      out = out - np.float32(t.norm_offset)
    return np.ascontiguousarray(out, np.float32)

  def tensor(self, name: str) -> np.ndarray:
    """The whole HF tensor (tests, small tensors)."""
    shape = self._tensors[name].hf_shape
    return self.rows(name, 0, shape[0]).reshape(shape)

  def _read(self, t: _Tensor, r0: int, r1: int) -> np.ndarray:
    n = (r1 - r0) * t.row_bytes
    raw = np.memmap(self.path, np.uint8, 'r', offset=t.offset + r0 * t.row_bytes, shape=(n,))
    try:
      return self._dequantize(t.qtype, raw.reshape(r1 - r0, t.row_bytes), t.hf_shape[-1])
    finally:
      del raw

  @staticmethod
  def _dequantize(qtype, data: np.ndarray, cols: int) -> np.ndarray:
    from gguf import quants
    data = np.asarray(data, np.uint8).reshape(-1, data.shape[-1] if data.ndim > 1 else data.size)
    return np.asarray(quants.dequantize(data, qtype), np.float32).reshape(-1, cols)

  # -- tokenizer --
  def write_tokenizer(self, out_dir: str, chat_template: Optional[str] = None) -> None:
    """tokenizer.json, tokenizer_config.json and generation_config.json into `out_dir`."""
    from lmresearch.models.hf import gguf_tokenizer
    gguf_tokenizer.write(self.meta, out_dir, chat_template)

  def record(self) -> dict:
    """What the run's config keeps about where its weights came from."""
    return {'file': self.path, 'bytes': os.path.getsize(self.path),
            'architecture': self.meta.arch_name, 'tensor_types': dict(sorted(self.types.items())),
            'name': self.meta.get('general.name', '')}


SUPPORTED = ('F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q2_K', 'Q3_K', 'Q4_K',
             'Q5_K', 'Q6_K')

"""Batched KV-cache generation: greedy / temperature / top-k / top-p, stop tokens.

The one sampler that the CLI (`python -m lmresearch.sample`), SFT evaluation and RL rollouts use.

  prompts (token lists) -> left-padded [B, P] (P rounded up to a multiple of 8)
  -> one prefill call that fills the KV cache -> a jitted `lax.while_loop` that samples one token
  per step and feeds it back, until every row has emitted a stop id or `max_new_tokens` ran out.

Left padding lets every row share the cache index: row i's real tokens sit at the end of the
prompt block, `positions` count from each row's first real token, and `kv_mask` hides the pad
slots. Besides the decoded completions, `generate` returns what RL needs: the full token matrix
with its mask and positions (to recompute log-probs with gradients), and the log-prob of every
sampled token under the model's own (temperature 1, unfiltered) distribution.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmresearch.core import parallel
from lmresearch.text import tokenizers
from lmresearch.generation import sampler
from lmresearch.generation.stops import MATCHED, compile_stops
from lmresearch.models.logprobs import positions_from_mask
from lmresearch.models.transformer import unembed
from lmresearch.generation.kvcache import KV_CACHE

DEFAULT_STOP_IDS = (tokenizers._Base.eos_id, tokenizers._Base.end_id)
PROMPT_MULTIPLE = 8   # prompt block lengths are rounded up to this, to limit recompiles


# The filters and the draw are generation/sampler.py's, shared with the server's engine.
filter_logits = sampler.filter_logits


# ---- KV caches ----------------------------------------------------------------------------------

def _cache_shapes(model, params, rows: int, length: int):
  """The decode cache's shapes for [rows, length], from an abstract init call."""
  def init(params):
    _, variables = model.apply({'params': params}, jnp.zeros((rows, length), jnp.int32),
                               decode=KV_CACHE, mutable=['cache'])
    return variables['cache']
  return jax.eval_shape(init, params)


def kv_cache(model, params, rows: int, *, length: int):
  """An empty decode cache of `length` slots for `rows` rows (traceable)."""
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                      _cache_shapes(model, params, rows, length))


def cache_rows(model, params, cache, index):
  """The cache's rows `index` ([new rows] ints): a prefix prefilled once, copied to every row
  that continues it (few-shot exemplars sampled many times; a question's answer choices). The
  batch axis is found per array (under scan_layers it is the second); the cache index has none."""
  one = _cache_shapes(model, params, 1, 1)
  two = _cache_shapes(model, params, 2, 1)
  def take(c, s1, s2):
    axes = [a for a in range(len(s1.shape)) if s1.shape[a] != s2.shape[a]]
    return jnp.take(c, index, axis=axes[0]) if axes else c
  return jax.tree.map(take, cache, one, two)


# ---- the jitted core ----------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'temperature', 'top_k',
                                             'top_p', 'stop_ids', 'pad_id', 'prefix'))
def _generate_core(model, params, prompt, prompt_mask, rng, stop_table=None, *,
                   max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                   stop_ids: tuple, pad_id: int, prefix: tuple = (0, 0)):
  b, p = prompt.shape
  n = max_new_tokens
  params = nn.unbox(params)   # inside jit: boxes' sharding constraints apply to tracers
  prompt_mask = prompt_mask.astype(jnp.int32)
  prompt_lengths = jnp.sum(prompt_mask, axis=-1)                            # [b]
  positions = positions_from_mask(prompt_mask)
  # Pad slots of the prompt block are never attended; slots after it fill one per step (the
  # cache's causal mask keeps queries from seeing slots not yet written).
  kv_mask = jnp.concatenate([prompt_mask.astype(jnp.bool_), jnp.ones((b, n), jnp.bool_)], axis=-1)

  empty_cache = functools.partial(kv_cache, model, params, length=p + n)

  def forward(cache, tokens, positions, kv_mask=kv_mask):
    # Only the last position's logits are sampled from: the prefill unembeds one row per prompt,
    # not every prompt position ([b, p, vocab]).
    hidden, variables = model.apply({'params': params, 'cache': cache}, tokens, positions,
                                    kv_mask=kv_mask, decode=KV_CACHE, mutable=['cache'],
                                    return_hidden=True)
    return variables['cache'], unembed(model.cfg, params, hidden[:, -1:])[:, 0].astype(jnp.float32)

  shared, rows = prefix
  if shared:
    # Every row starts with the same `shared` tokens (few-shot exemplars, one prompt sampled
    # many times): they are prefilled on `rows` rows (the mesh's batch multiple) and the cache is
    # tiled to all b, then each row's own left-padded rest is prefilled after them.
    cache, _ = forward(empty_cache(rows), prompt[:rows, :shared], positions[:rows, :shared],
                       kv_mask[:rows])
    cache = cache_rows(model, params, cache, jnp.arange(b) // (b // rows))
    cache, last = forward(cache, prompt[:, shared:], positions[:, shared:])
  else:
    cache, last = forward(empty_cache(b), prompt, positions)                   # prefill

  stops = jnp.asarray(stop_ids, jnp.int32)
  keys = sampler.row_keys(rng, b)   # row i draws as the server's choice i of the same seed

  limit = model.cfg.vocab_used or model.cfg.sample_vocab   # ids past it pad the vocabulary

  def choose(t, last_logits, out, logps, valid, done, state):
    """Samples token t of every row from its last logits and records it (never a padding id;
    its log-prob is under the model's own distribution); a row is done after a stop id or the
    token that completes a stop string (`state`: each row's stop-string automaton state)."""
    pick = last_logits
    if limit and limit < last_logits.shape[-1]:
      pick = jnp.where(jnp.arange(last_logits.shape[-1]) < limit, last_logits, -jnp.inf)
    tok = sampler.sample_rows(pick, sampler.step_keys(keys, t), temperature, top_k, top_p)
    logp = jnp.take_along_axis(jax.nn.log_softmax(last_logits, axis=-1), tok[:, None], -1)[:, 0]
    live = ~done
    tok = jnp.where(live, tok, pad_id)
    out = jax.lax.dynamic_update_slice(out, tok[:, None], (0, t))
    logps = jax.lax.dynamic_update_slice(logps, jnp.where(live, logp, 0.0)[:, None], (0, t))
    valid = jax.lax.dynamic_update_slice(valid, live[:, None], (0, t))
    if stop_ids:
      done = done | (live & jnp.any(tok[:, None] == stops[None, :], axis=-1))
    if stop_table is not None:   # MATCHED (-1) stays: the row is done
      nxt = stop_table[jnp.maximum(state, 0), jnp.clip(tok, 0, stop_table.shape[1] - 1)]
      state = jnp.where(live, nxt.astype(jnp.int32), state)
      done = done | (live & (state == MATCHED))
    return tok, out, logps, valid, done, state

  out = jnp.full((b, n), pad_id, jnp.int32)
  logps = jnp.zeros((b, n), jnp.float32)
  valid = jnp.zeros((b, n), jnp.bool_)
  done = jnp.zeros((b,), jnp.bool_)
  state = jnp.zeros((b,), jnp.int32)
  tok, out, logps, valid, done, state = choose(0, last, out, logps, valid, done, state)

  def cond(carry):
    t, *_, done, _ = carry
    return (t < n) & ~jnp.all(done)

  def body(carry):
    t, cache, tok, out, logps, valid, done, state = carry
    cache, last = forward(cache, tok[:, None], (prompt_lengths + t - 1)[:, None])
    tok, out, logps, valid, done, state = choose(t, last, out, logps, valid, done, state)
    return t + 1, cache, tok, out, logps, valid, done, state

  carry = (jnp.int32(1), cache, tok, out, logps, valid, done, state)
  _, _, _, out, logps, valid, done, state = jax.lax.while_loop(cond, body, carry)

  tokens = jnp.concatenate([prompt, out], axis=-1)
  mask = jnp.concatenate([prompt_mask, valid.astype(jnp.int32)], axis=-1)
  return dict(tokens=tokens, mask=mask, positions=positions_from_mask(mask), logprobs=logps,
              completion_mask=valid, lengths=jnp.sum(valid, axis=-1), finished=done,
              stop_string=state == MATCHED)


def generate_arrays(model, params, prompt, prompt_mask, rng, *, max_new_tokens: int,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                    stop_ids=DEFAULT_STOP_IDS, pad_id: int = 0, stop_table=None) -> dict:
  """The traceable core for callers that already hold left-padded device arrays [B, P] (RL
  rollouts inside a jitted step). Same outputs as `generate`, without completions."""
  return _generate_core(model, params, prompt, prompt_mask, rng, _device_table(stop_table),
                        max_new_tokens=max_new_tokens,
                        temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                        stop_ids=tuple(stop_ids), pad_id=int(pad_id))


# ---- host-side API ------------------------------------------------------------------------------

def _batch_multiple() -> int:
  """Rows must split evenly over the mesh axes that 'batch' maps to, if a mesh is active."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  axes = dict(nn.get_logical_axis_rules()).get('batch')
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  sizes = dict(mesh.shape)
  return math.prod(sizes.get(a, 1) for a in axes)


def fit_to_context(prompt_lengths: Sequence[int], max_new_tokens: int, max_len: int) -> int:
  """max_new_tokens clamped so that the longest prompt + generation fits the context (warns).

  Raises ValueError naming the first prompt that leaves no room for a new token.
  """
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens={max_new_tokens} must be >= 1.')
  for i, n in enumerate(prompt_lengths):
    if n >= max_len:
      raise ValueError(f'prompt {i} has {n} tokens, which does not fit the model context of '
                       f'{max_len} tokens (config.model.max_len; a prompt must leave room for at '
                       'least one new token); shorten the prompt.')
  longest = max(prompt_lengths)
  if longest + max_new_tokens > max_len:
    fitted = max_len - longest
    warnings.warn(f'max_new_tokens={max_new_tokens} with a longest prompt of {longest} tokens '
                  f'exceeds the model context of {max_len} tokens; generating at most {fitted} '
                  'tokens.', stacklevel=3)
    return fitted
  return max_new_tokens


def _device_table(table):
  return None if table is None else jnp.asarray(table)


SHARED_PREFIX_MIN = 64   # fewer shared tokens are not worth a second prefill program


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
  """How many leading tokens every prompt shares, rounded down to PROMPT_MULTIPLE (one
  compiled program per exemplar set, not per batch), leaving every row at least one token of
  its own; 0 when under SHARED_PREFIX_MIN."""
  first, n = prompts[0], min(len(p) for p in prompts) - 1
  for p in prompts[1:]:
    n = next((j for j in range(n) if p[j] != first[j]), n)
  n = n // PROMPT_MULTIPLE * PROMPT_MULTIPLE
  return n if n >= SHARED_PREFIX_MIN else 0


def generate(model, params, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             rng: Optional[jax.Array] = None, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, stop_ids: Optional[Sequence[int]] = None, pad_id: int = 0,
             stop_table=None, share_prefix: bool = False) -> dict:
  """Samples a continuation of every prompt (lists of token ids), all rows in one batch.

  Args:
    model: a `Transformer` (its `cfg.max_len` bounds prompt + generation).
    params: its params (boxed or not).
    prompts: token id lists (include the BOS yourself; see `encode_prompt`).
    max_new_tokens: tokens to generate per row at most (clamped to the context, with a warning).
    rng: PRNG key; required unless temperature == 0. Row i draws with sampler.row_key(rng, i),
      so the same key and inputs give the same samples, and one prompt with PRNGKey(seed)
      draws what the server's request with that seed draws.
    temperature, top_k, top_p: see `generation.sampler`. temperature 0 = greedy.
    stop_ids: a row stops after emitting one of these (default: eos and <|end|>); () = never.
    pad_id: id used for left padding and after a row stopped.
    stop_table: stop strings compiled for the tokenizer (`generation.stops.compile_stops`): a row
      also stops at the token that completes one (its text is still to be cut there, as
      `decode_completions` does).
    share_prefix: the tokens every prompt starts with (at least SHARED_PREFIX_MIN) are prefilled
      once, not once per row: few-shot exemplars, or one prompt sampled many times. Each row's
      own tokens then follow the prefix after its left padding, so `tokens`/`mask` hold pads
      inside rows (`positions` still count real tokens): for decoding text, not for a full
      forward whose attention window counts token indices.

  Returns a dict:
    completions: list (per prompt) of generated ids, cut before the first stop id.
    tokens [B, P + N] int32: left-padded prompts then generated tokens (pad_id after a stop).
    mask [B, P + N] int32: 1 on real tokens (prompt and generated, the stop token included).
    positions [B, P + N] int32: each token's position (from the row's first real token).
    prompt_len: P, the padded prompt block length (generated token j sits at column P + j).
    logprobs [B, N] float32: log-prob of each sampled token under the unmodified model
      distribution (log_softmax of the logits, temperature 1, no top-k/top-p); 0 where masked.
    completion_mask [B, N] bool: generated tokens that count (up to and including the stop id).
    lengths [B] int32: completion_mask's row sums.
    finished [B] bool: whether the row emitted a stop id or completed a stop string (else it ran
      out of tokens).
    stop_string [B] bool: finished by a stop string (its last token is text, kept).
  N is max_new_tokens after clamping. Arrays stay on device; `tokens`, `mask` and `positions`
  are what a full forward (`model.apply(..., tokens, positions, segment_ids=mask)`) needs to
  recompute the log-probs with gradients.
  """
  if len(prompts) == 0:
    raise ValueError('generate: no prompts given.')
  prompts = [list(map(int, p)) for p in prompts]
  for i, p in enumerate(prompts):
    if not p:
      raise ValueError(f'prompt {i} is empty: start it with the BOS token at least.')
  if temperature != 0 and rng is None:
    raise ValueError('generate: rng is required when temperature > 0.')
  sampler.check(temperature, top_k, top_p)
  max_new_tokens = fit_to_context([len(p) for p in prompts], max_new_tokens, model.cfg.max_len)
  longest = max(len(p) for p in prompts)

  num, multiple = len(prompts), _batch_multiple()
  rows = -(-num // multiple) * multiple
  shared = shared_prefix(prompts) if share_prefix and num > multiple else 0
  rest = -(-(longest - shared) // PROMPT_MULTIPLE) * PROMPT_MULTIPLE
  p_len = shared + rest
  tokens = np.full((rows, p_len), pad_id, np.int32)
  mask = np.zeros((rows, p_len), np.int32)
  tokens[:, :shared], mask[:, :shared] = prompts[0][:shared], 1
  for i in range(rows):
    p = prompts[i][shared:] if i < num else prompts[0][-1:]   # filler rows: an even batch split
    tokens[i, p_len - len(p):] = p
    mask[i, p_len - len(p):] = 1

  stop_ids = DEFAULT_STOP_IDS if stop_ids is None else tuple(int(s) for s in stop_ids)
  out = _generate_core(model, params, jnp.asarray(tokens), jnp.asarray(mask),
                       jax.random.PRNGKey(0) if rng is None else rng, _device_table(stop_table),
                       max_new_tokens=max_new_tokens, temperature=float(temperature),
                       top_k=int(top_k), top_p=float(top_p), stop_ids=stop_ids,
                       pad_id=int(pad_id), prefix=(shared, multiple))
  if rows != num:
    out = {k: v[:num] for k, v in out.items()}
  host = parallel.fetch({k: out[k] for k in ('tokens', 'lengths', 'finished', 'stop_string')})
  gen, lengths, finished, by_text = (np.asarray(host[k]) for k in
                                     ('tokens', 'lengths', 'finished', 'stop_string'))
  gen = gen[:, p_len:]
  # A stop id is dropped; the token that completed a stop string is text (cut when decoded).
  drop = finished & ~by_text
  out['completions'] = [gen[i, :lengths[i] - int(drop[i])].tolist() for i in range(num)]
  out['prompt_len'] = p_len
  return out


def encode_prompt(tok, text: str) -> list[int]:
  """A document prompt as the base model saw documents in pretraining: BOS, then the text."""
  return tok.prompt_ids(text)


def cut_at_stop_strings(text: str, stop_strings: Sequence[str] = ()) -> str:
  """The text before the earliest occurrence of any stop string."""
  cut = len(text)
  for s in stop_strings:
    if s:
      i = text.find(s)
      if i != -1:
        cut = min(cut, i)
  return text[:cut]


def decode_completions(tok, completions: Sequence[Sequence[int]],
                       stop_strings: Sequence[str] = ()) -> list[str]:
  return [cut_at_stop_strings(tok.decode(c, skip_special=True), stop_strings) for c in completions]


def generate_text(model, params, tok, prompts: Sequence[str], *, max_new_tokens: int,
                  rng: Optional[jax.Array] = None, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, stop_strings: Sequence[str] = (),
                  stop_ids: Optional[Sequence[int]] = None) -> list[str]:
  """Text in, text out: [BOS] + encode(prompt) -> generate -> decode (specials skipped) -> each
  output cut at its first stop string. A row stops at a stop id, at the token that completes a
  stop string, or after max_new_tokens. Default stop ids: the tokenizer's eos and <|end|>."""
  if stop_ids is None:
    stop_ids = tok.stop_ids
  out = generate(model, params, [encode_prompt(tok, p) for p in prompts],
                 max_new_tokens=max_new_tokens, rng=rng, temperature=temperature, top_k=top_k,
                 top_p=top_p, stop_ids=stop_ids, pad_id=tok.pad_id,
                 stop_table=compile_stops(tok, stop_strings, model.cfg.vocab_size))
  return decode_completions(tok, out['completions'], stop_strings)

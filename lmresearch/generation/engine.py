"""Continuous batching: every request to one model shares a single KV-cache decode batch.

The cache holds `slots` sequences of up to the model's context, each from its own slot 0 with
its own cache index (`generation/kvcache.py`), kept as blocks of BLOCK_ROWS slots, each its own
array: a step over 16 or more rows passes the blocks those rows fill and attends to each where it
lies, since XLA:CPU copies any slice of one big cache before the attention reads it. A thread runs
the loop:

  admit: the waiting requests (up to MAX_PREFILL) are prefilled together (their prompts
         right-padded to a length bucket, into a fresh cache of a row bucket) and each row is
         written into a free slot; each one's first token comes from the prefill
  step:  one jitted decode step advances the live slots by one token, on the smallest row and
         cache-length buckets that hold them (free slots inside the bucket compute too and are
         ignored)
  emit:  each live slot's token is appended, decoded to text (stop strings and unfinished UTF-8
         held back) and handed to its request; a finished request frees its slot at once

Compiled programs: one decode step per row and length bucket, one prefill per row bucket and
prompt bucket (powers of two up to the context), one prompt scorer per bucket; `compiles()`
counts them. The web server's event loop never waits on the device: requests hand back tokens
through `loop.call_soon_threadsafe`.
"""
from __future__ import annotations

import dataclasses
import queue
import secrets
import threading
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmresearch.generation import sampler
from lmresearch.models.transformer import unembed
from lmresearch.generation.textstream import Live, detokenize, final_text, first_stop, safe_len
from lmresearch.generation.kvcache import KV_CACHE

TOP_LOGPROBS = 5      # alternatives returned per token (OpenAI's completions allow up to 5)
MIN_BUCKET = 16
BLOCK_ROWS = 16       # slots per cache block (rows beyond one block come in whole blocks)
MAX_PREFILL = 16      # requests prefilled together in one program, at most
# Logits a scoring program holds at once (rows x positions x vocabulary, fp32): a prompt is scored
# a chunk of positions at a time, since Gemma's 262k vocabulary over a 1,024-token prompt is 1 GB
# a row.
SCORE_LOGIT_BYTES = 128 << 20


class ContextError(ValueError):
  """A request that cannot fit the model's context (the API answers 400 with this message)."""


class Busy(RuntimeError):
  """More requests waiting than the engine queues (the API answers 429: retry later)."""


class Stopped(RuntimeError):
  """The engine was closed (the API answers 503)."""


@dataclasses.dataclass
class Request:
  """One sequence to generate. Events go to `emit(kind, payload)` on the engine thread:
  ('token', Token) per generated token with the text it adds (the stop id that ends it too, as
  `Token.end`), then ('done', finish_reason)."""
  prompt: Sequence[int]
  max_tokens: int
  emit: Callable[[str, Any], None]
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  seed: Optional[int] = None
  row: int = 0                # the seed's row (a request's choice index): its key is row_key(seed, row)
  stop_ids: Sequence[int] = ()
  stop: Sequence[str] = ()
  cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)


@dataclasses.dataclass
class Token:
  id: int
  text: str          # the text this token adds to the reply (may be '' while UTF-8 or a stop
                     # string's prefix is held back; the held text comes with a later token)
  logprob: float     # under the model's own distribution (temperature 1, no filtering)
  top: list          # [(id, logprob)] of the TOP_LOGPROBS most likely tokens
  end: bool = False  # the stop id that ended the reply: a token generated and scored (OpenAI
                     # and vLLM count it and give its log-prob), whose own text is not the reply's


def buckets(max_len: int) -> list[int]:
  out, b = [], MIN_BUCKET
  while b < max_len:
    out.append(b)
    b *= 2
  return out + [max_len]


def bucket_for(n: int, max_len: int) -> int:
  return next(b for b in buckets(max_len) if b >= n)


def _log_probs(cfg, logits, tok):
  logp = jax.nn.log_softmax(logits, axis=-1)
  chosen = jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]
  top_lp, top_id = jax.lax.top_k(logp, TOP_LOGPROBS)
  return chosen, top_id, top_lp


# The KV cache's budget by default: a model of a few hundred million parameters at 16 slots then
# takes its own bytes + this + a fixed overhead, whatever context it was trained for (Gemma 3 270M:
# 32,768 tokens, 19 GB of cache at 16 slots; served at 1,808 tokens in 1 GB). vLLM's
# --max-model-len and --gpu-memory-utilization play these parts.
KV_CACHE_GB = 1.0


def kv_bytes_per_token(cfg) -> int:
  """Keys and values of one token in every layer, in the compute dtype (what a slot holds)."""
  return 2 * cfg.num_layers * cfg.kv_heads * cfg.head_dim * jnp.dtype(cfg.dtype).itemsize


def context_length(cfg, slots: int, max_len: int = 0, kv_cache_gb: float = KV_CACHE_GB) -> int:
  """The context the engine serves: the model's, or `max_len` if shorter, cut to what `slots`
  slots fit in `kv_cache_gb` (a multiple of 16). Asking for more than fits is an error naming
  both options; a budget of 0 is no limit."""
  want = min(cfg.max_len, max_len) if max_len else cfg.max_len
  if not kv_cache_gb:
    return want
  fits = int(kv_cache_gb * 2**30 // (slots * kv_bytes_per_token(cfg))) // 16 * 16
  if fits < 16:
    raise ValueError(f'--kv_cache_gb={kv_cache_gb}: {slots} slots of this model need '
                     f'{slots * 16 * kv_bytes_per_token(cfg) / 2**30:.2f} GB for even 16 tokens '
                     'each; raise it or serve fewer --slots.')
  if max_len and max_len > fits:
    raise ValueError(f'--max_len={max_len} at {slots} slots needs '
                     f'{slots * max_len * kv_bytes_per_token(cfg) / 2**30:.2f} GB of KV cache, over '
                     f'--kv_cache_gb={kv_cache_gb} (which fits {fits} tokens): raise the budget, '
                     'lower --max_len, or serve fewer --slots.')
  return min(want, fits)


@dataclasses.dataclass
class _Scored:
  """A prompt waiting to be scored, and its answer once a batch has scored it."""
  ids: list
  done: threading.Event = dataclasses.field(default_factory=threading.Event)
  result: Any = None
  error: Optional[BaseException] = None


class Engine:
  """Serves one loaded run (`runs.load`) to any number of concurrent requests."""

  def __init__(self, run, slots: int = 16, max_waiting: Optional[int] = None,
               block_rows: int = BLOCK_ROWS, max_prefill: int = MAX_PREFILL, warm: bool = False,
               max_len: int = 0, kv_cache_gb: float = KV_CACHE_GB):
    self.run, self.model, self.tok = run, run.model, run.tok
    self.cfg = run.model.cfg
    self.slots = run.batch_rows(max(1, slots))
    self.max_len = context_length(self.cfg, self.slots, max_len, kv_cache_gb)
    self.prefill_rows = run.batch_rows(1)   # the mesh's batch shards want whole rows each
    # Row buckets from 2: one row sliced out of many ran ~40x slower than two on XLA:CPU.
    first = self.prefill_rows if self.prefill_rows > 1 or self.slots == 1 else 2
    self.row_buckets = sorted({min(self.slots, first << i)
                               for i in range(self.slots.bit_length() + 1)})
    # Blocks of `block_rows` slots where every row bucket past one block is whole blocks (and a
    # block holds whole rows of each batch shard); else the cache is one block, as before.
    b = block_rows
    whole = all(r % b == 0 for r in self.row_buckets if r > b)
    self.block = b if b < self.slots and self.slots % b == 0 and b % self.prefill_rows == 0 \
        and whole else self.slots
    # Requests that wait together share one prefill (a burst: a request with n choices, a round
    # of clients, a batch job): row buckets of powers of two up to max_prefill, and a prefill
    # takes the largest bucket the waiting requests fill, so that no row is padding (on the
    # 124M shape a prefill is compute-bound: 4 requests padded to 16 rows cost 4x their time).
    cap = max(self.prefill_rows, min(self.slots, max_prefill))
    self.prefill_buckets = [self.prefill_rows << i for i in range(cap.bit_length())
                            if self.prefill_rows << i <= cap]
    # Per-slot settings live on the host between steps, sent as three arrays per step.
    self._ints = np.zeros((5, self.slots), np.int32)    # token, position, live, step, top_k
    self._floats = np.ones((2, self.slots), np.float32)  # temperature, top_p
    self._keys = np.zeros((self.slots, 2), np.uint32)
    self.limit = self.cfg.vocab_used or self.cfg.sample_vocab or 0
    self._queue: queue.Queue = queue.Queue()
    # Beyond this many waiting requests new ones are refused, not queued without end: a load
    # spike gets clear 429s and the server's memory stays flat.
    self.max_waiting = 8 * self.slots if max_waiting is None else max_waiting
    self._live: list = [None] * self.slots
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self.steps = 0            # decode steps run (for the benchmark and tests)
    self.prefills = 0         # prefill programs run (each admits one or more requests)
    self.shapes: set = set()  # (program, its bucket) run so far: compiles() should equal its size
    self.scored_batches = 0   # scoring programs run (each scores one or more prompts)
    self._score_waiting: list = []
    self._score_lock = threading.Lock()   # guards the waiting list
    self._score_run = threading.Lock()    # one scoring batch at a time
    # One compiled program per shape: these jits belong to this engine, so `compiles()` counts
    # its own programs only. The cache is donated: each step updates it in place.
    self._prefill = jax.jit(self._prefill_impl, donate_argnums=1)
    self._decode = jax.jit(self._decode_impl, donate_argnums=1, static_argnames=('rows', 'length'))
    self._score = jax.jit(self._score_impl)
    with run.active():
      self._params = nn.unbox(run.params)
      self._cache_sharding = None
      self._cache = self._new_cache()
    self.warmed: set = set()   # programs compiled ahead of requests (warm())
    if warm:
      self.warm()
    self._thread = threading.Thread(target=self._loop, name='engine', daemon=True)
    self._thread.start()

  def _new_cache(self) -> tuple:
    """Zeros for every slot, as a tuple of blocks (each the model's per-row cache of its slots)."""
    n = self.slots // self.block
    return jax.jit(lambda p: tuple(self._pin(self._empty_cache(p, self.block, True))
                                   for _ in range(n)))(self._params)

  def step_length(self, longest: int, rows: int) -> int:
    """How many cache slots a step of `rows` rows attends to when its longest sequence holds
    `longest` tokens: a bucket (powers of two); for whole blocks, the whole context once the
    bucket is at least half of it (on the default shape, reading a whole 16-row block where it
    lies cost less than copying out half of it; a part of a block is copied out anyway, so there
    less is better)."""
    length = bucket_for(longest, self.max_len)
    whole = rows % self.block == 0
    return self.max_len if whole and 2 * length >= self.max_len else length

  def _advance(self, rows: int, length: int):
    """One decode step of the first `rows` slots (the blocks they fill); the step's output."""
    n = -(-rows // self.block)
    self.shapes.add(('decode', rows, length))
    head, out = self._decode(self._params, self._cache[:n], self._ints, self._floats, self._keys,
                             rows=rows, length=length)
    self._cache = tuple(head) + self._cache[n:]
    return out

  # ---- the jitted pieces ----------------------------------------------------------------------

  def _empty_cache(self, params, rows: int, per_row: bool, length: int = 0):
    """Zeros shaped like the model's cache for `rows` sequences of `length` tokens (the whole
    context); per_row: a cache index per row (the slots), else the sampler's one shared index."""
    model = self.model

    def init(params):
      _, v = model.apply({'params': params}, jnp.zeros((rows, length or self.max_len), jnp.int32),
                         decode=KV_CACHE, mutable=['cache'])
      return v['cache']

    shapes = jax.eval_shape(init, params)

    def zeros(path, s):
      if per_row and getattr(path[-1], 'key', None) == 'cache_index':   # [..., rows]
        return jnp.zeros(s.shape + (rows,), jnp.int32)
      return jnp.zeros(s.shape, s.dtype)
    return jax.tree_util.tree_map_with_path(zeros, shapes)

  def _pin(self, cache):
    """The slots' cache with one fixed sharding (rows over the batch axes), in and out of every
    program: a cache whose sharding drifted would compile each program a second time."""
    if self.run.mesh is None:
      return cache
    if self._cache_sharding is None:
      lead = ('layers',) if self.cfg.scan_layers else ()

      def spec(path, x):
        if getattr(path[-1], 'key', None) == 'cache_index':
          return jax.sharding.PartitionSpec(*lead, 'batch')
        return jax.sharding.PartitionSpec(*lead, 'batch', 'kv_heads', None, 'kv')
      specs = jax.tree_util.tree_map_with_path(spec, cache)
      self._cache_sharding = nn.logical_to_mesh_sharding(specs, self.run.mesh, self.run.rules)
    return jax.lax.with_sharding_constraint(cache, self._cache_sharding)

  def _logits(self, params, hidden):
    logits = unembed(self.cfg, params, hidden).astype(jnp.float32)
    if self.limit and self.limit < logits.shape[-1]:   # padding ids of the vocabulary: never
      logits = jnp.where(jnp.arange(logits.shape[-1]) < self.limit, logits, -jnp.inf)
    return logits

  def _prefill_impl(self, params, blocks, tokens, lengths, dest, keys, temperature, top_k, top_p):
    """tokens [rows, bucket] (row r real up to lengths[r], right-padded) -> the cache `blocks`
    with row r written into slot dest[r] (a slot past the cache: a padding row, dropped), each
    row's first token and its log-probs as one [rows, 2 + 2 * TOP] array. The padding's keys
    and values land in slots past each row's length, which decoding overwrites before any query
    may see them."""
    rows = tokens.shape[0]
    # The prompt's keys and values first go to a cache of the prompt's own length, not the
    # whole context (16 rows of Gemma 3 270M's served context: another 1 GB at each prefill).
    small = self._empty_cache(params, rows, per_row=False, length=tokens.shape[1])
    hidden, v = self.model.apply({'params': params, 'cache': small}, tokens, decode=KV_CACHE,
                                 mutable=['cache'], return_hidden=True)
    last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)   # [rows, 1, embed]
    logits = self._logits(params, last)[:, 0]
    tok = sampler.sample_rows(logits, sampler.step_keys(keys, 0), temperature, top_k, top_p)
    out_blocks = []
    for j, block in enumerate(blocks):
      local = dest - j * self.block
      local = jnp.where((local >= 0) & (local < self.block), local, self.block)   # else dropped

      def put(path, big, new, local=local):
        if getattr(path[-1], 'key', None) == 'cache_index':   # each slot now holds its prompt
          return big.at[..., local].set(lengths, mode='drop')
        # [layers?, batch, kvh, slots, d]: the row's first `bucket` slots
        at = (slice(None),) * (big.ndim - 4) + (local, slice(None), slice(0, new.shape[-2]))
        return big.at[at].set(new.astype(big.dtype), mode='drop')
      out_blocks.append(self._pin(jax.tree_util.tree_map_with_path(put, block, v['cache'])))
    return tuple(out_blocks), self._pack(logits, tok)

  def _pack(self, logits, tok):
    """The sampled tokens with their log-probs and the top ones: one array, one transfer."""
    chosen, top_id, top_lp = _log_probs(self.cfg, logits, tok)
    return jnp.concatenate([tok[:, None].astype(jnp.float32), chosen[:, None],
                            top_id.astype(jnp.float32), top_lp], axis=1)

  def _decode_impl(self, params, blocks, ints, floats, keys, *, rows: int, length: int):
    """The first `rows` slots advance one token, attending to their first `length` cache slots
    (the buckets that hold every live slot and position: a step reads what is live, and writes
    only the new keys and values into the cache). `blocks`: the cache blocks those rows fill.
    ints [5, slots]: token fed in, its position, live, step, top_k; floats [2, slots]:
    temperature, top_p; keys [slots, 2]. Returns the blocks and one [rows, 2 + 2 * TOP] array:
    token, its log-prob, the top ids, their log-probs (one transfer to the host)."""
    tokens, positions, live, steps, top_k = (ints[j, :rows] for j in range(5))
    temperature, top_p = floats[0, :rows], floats[1, :rows]
    cache = jax.tree.map(lambda *xs: tuple(xs), *blocks)   # each leaf: its blocks, in order
    hidden, v = self.model.apply({'params': params, 'cache': cache}, tokens[:, None],
                                 positions[:, None], kv_mask=jnp.ones((rows, length), jnp.bool_),
                                 decode=KV_CACHE, mutable=['cache'], return_hidden=True)
    logits = self._logits(params, hidden)[:, 0]
    tok = sampler.sample_rows(logits, sampler.step_keys(keys[:rows], steps), temperature, top_k,
                              top_p)
    out_blocks = []
    for j, old in enumerate(blocks):
      alive = ints[2, j * self.block:(j + 1) * self.block].astype(bool)
      new = jax.tree.map(lambda t, j=j: t[j], v['cache'], is_leaf=lambda x: isinstance(x, tuple))

      def keep(path, new, old, alive=alive):   # slots not live keep their cache index
        if getattr(path[-1], 'key', None) == 'cache_index':
          return jnp.where(alive, new, old)
        return new
      out_blocks.append(self._pin(jax.tree_util.tree_map_with_path(keep, new, old)))
    return tuple(out_blocks), self._pack(logits, tok)

  def _score_impl(self, params, tokens):
    """Log-probs of each token given the ones before it: [rows, bucket - 1], with the top ones;
    the logits are made a chunk of positions at a time (SCORE_LOGIT_BYTES)."""
    rows, b = tokens.shape
    hidden = self.model.apply({'params': params}, tokens, return_hidden=True)
    nxt = jnp.concatenate([tokens[:, 1:], tokens[:, :1]], axis=1)   # the last one is dropped
    chunk = b
    while chunk > 1 and chunk % 2 == 0 and rows * chunk * self.cfg.vocab_size * 4 > SCORE_LOGIT_BYTES:
      chunk //= 2

    def piece(args):
      h, t = args                                                     # [rows, chunk, ...]
      logp = jax.nn.log_softmax(unembed(self.cfg, params, h).astype(jnp.float32), axis=-1)
      top_lp, top_id = jax.lax.top_k(logp, TOP_LOGPROBS)
      return jnp.take_along_axis(logp, t[..., None], axis=-1)[..., 0], top_id, top_lp

    split = lambda x: x.reshape(rows, b // chunk, chunk, *x.shape[2:]).swapaxes(0, 1)
    out = jax.lax.map(piece, (split(hidden), split(nxt)))
    join = lambda x: x.swapaxes(0, 1).reshape(rows, b, *x.shape[3:])
    return tuple(join(x) for x in out)

  def compiles(self) -> int:
    """Programs compiled so far (prefill per bucket, decode, scorer per bucket)."""
    return sum(f._cache_size() for f in (self._prefill, self._decode, self._score))

  # ---- the host side --------------------------------------------------------------------------

  def check(self, prompt_len: int, max_tokens: int) -> None:
    if prompt_len < 1:
      raise ContextError('the prompt is empty.')
    if max_tokens < 1:
      raise ContextError(f'max_tokens={max_tokens} must be at least 1.')
    if prompt_len + max_tokens > self.max_len:
      raise ContextError(
          f"This model's maximum context length is {self.max_len} tokens{self._served_as()}. "
          "However, you requested "
          f'{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the '
          'completion). Please reduce the prompt or max_tokens.')

  def _served_as(self) -> str:
    return '' if self.max_len == self.cfg.max_len else \
        f' as served (--max_len / --kv_cache_gb; the model was trained for {self.cfg.max_len})'

  def submit(self, request: Request) -> Request:
    self.check(len(request.prompt), request.max_tokens)
    if self._stop.is_set() or not self._thread.is_alive():
      raise Stopped('this model\'s engine is not running; restart the server.')
    vocab = self.cfg.vocab_used or self.cfg.vocab_size
    bad = next((t for t in request.prompt if not 0 <= t < vocab), None)
    if bad is not None:
      raise ContextError(f'token id {bad} is outside this model\'s vocabulary [0, {vocab}).')
    if self._queue.qsize() >= self.max_waiting:
      raise Busy(f'{self._queue.qsize()} requests are waiting for this model; retry shortly.')
    if request.seed is None:   # as OpenAI's: no seed, a fresh sample every time
      request.seed = secrets.randbits(31)
    self._queue.put(request)
    return request

  def score(self, ids: Sequence[int]):
    """(logprob of each token after the first, top alternatives, the top tokens after the
    prompt) for a prompt: what `echo` with `logprobs` answers, and what log-likelihood
    evaluation harnesses ask for (hundreds of
    requests at once). Prompts that wait together are scored together, as prefills are: whoever
    takes the scoring lock scores every prompt waiting (up to the largest row bucket they fill),
    its own among them, and the others find theirs done."""
    n = len(ids)
    if n > self.max_len:
      raise ContextError(f"This model's maximum context length is {self.max_len} "
                         f'tokens{self._served_as()}; the prompt has {n}.')
    item = _Scored(list(ids))
    with self._score_lock:
      self._score_waiting.append(item)
    while not item.done.is_set():
      with self._score_run:
        if item.done.is_set():
          break
        with self._score_lock:
          waiting = len(self._score_waiting)
          rows = max([r for r in self.prefill_buckets if r <= waiting] or [self.prefill_buckets[0]])
          batch, self._score_waiting = (self._score_waiting[:rows], self._score_waiting[rows:])
        try:
          self._score_batch(batch, rows)
        except BaseException as e:   # every prompt of the batch gets the error, not a hang
          for x in batch:
            x.error = x.error or e
            x.done.set()
          raise
    if item.error is not None:
      raise item.error
    return item.result

  def _score_batch(self, batch: list, rows: int) -> None:
    b = bucket_for(max(2, max(len(x.ids) for x in batch)), self.max_len)
    tokens = np.zeros((rows, b), np.int32)
    for r, x in enumerate(batch):
      tokens[r, :len(x.ids)] = x.ids
    with self.run.active():
      self.shapes.add(('score', rows, b))
      self.scored_batches += 1
      chosen, top_id, top_lp = jax.device_get(self._score(self._params, tokens))
    for r, x in enumerate(batch):
      n = len(x.ids)
      x.result = (chosen[r, :n - 1].tolist(),
                  [list(zip(top_id[r, t].tolist(), top_lp[r, t].tolist())) for t in range(n - 1)],
                  list(zip(top_id[r, n - 1].tolist(), top_lp[r, n - 1].tolist())))
      x.done.set()

  def close(self):
    self._stop.set()
    self._queue.put(None)
    self._thread.join(timeout=10)

  def _prefill_args(self, rows: int, bucket: int) -> tuple:
    """Host arrays for a prefill of `rows` x `bucket`, every row padding (its slot dropped)."""
    return (np.zeros((rows, bucket), np.int32), np.ones((rows,), np.int32),
            np.full((rows,), self.slots, np.int32), np.zeros((rows, 2), np.uint32),
            np.zeros((rows,), np.float32), np.zeros((rows,), np.int32), np.ones((rows,), np.float32))

  def _admit(self, reqs: list, slots: list) -> None:
    """Prefills waiting requests together (a row bucket of them, their prompts right-padded to
    the longest one's length bucket) and writes each into its free slot of the running batch:
    requests that arrive together, as a round of clients does, cost one program, not one each."""
    n = [len(r.prompt) for r in reqs]
    rows = next(r for r in self.prefill_buckets if r >= len(reqs))
    args = self._prefill_args(rows, bucket_for(max(n), self.max_len))
    tokens, lengths, dest, keys, temperature, top_k, top_p = args
    for r, (req, slot) in enumerate(zip(reqs, slots)):
      tokens[r, :n[r]] = req.prompt
      lengths[r], dest[r], top_k[r] = n[r], slot, req.top_k
      keys[r] = np.asarray(sampler.row_key(jax.random.PRNGKey(req.seed), req.row))
      temperature[r], top_p[r] = req.temperature, req.top_p
    self.shapes.add(('prefill',) + tokens.shape)
    self._cache, out = self._prefill(self._params, self._cache, *args)
    out = np.asarray(out)
    self.prefills += 1
    for r, (req, slot) in enumerate(zip(reqs, slots)):
      self._live[slot] = Live(req, keys[r], n[r])
      tok = int(out[r, 0])
      self._ints[:, slot] = (tok, n[r], 1, 1, req.top_k)
      self._floats[:, slot] = (req.temperature, req.top_p)
      self._keys[slot] = keys[r]
      self._accept_row(slot, out[r])

  def warm(self) -> int:
    """Compiles, ahead of any request, every program serving can ask for: the prefill at each
    row and prompt bucket, the decode step at each row bucket and the cache lengths its steps
    attend to, the prompt scorer at each bucket. Nothing runs (compiled, not called), so no
    request ever waits on a compile; the persistent compilation cache makes a restart's warm-up
    quick. Call before the first request (`python -m lmresearch.serve --warmup`). Returns the
    programs compiled."""
    with self.run.active():
      sampler.row_key(jax.random.PRNGKey(0), 0)   # seeding (per request, on the host): programs of its own
      for b in buckets(self.max_len):
        for rows in self.prefill_buckets:
          self._prefill.lower(self._params, self._cache, *self._prefill_args(rows, b)).compile()
          self.warmed.add(('prefill', rows, b))
          self._score.lower(self._params, np.zeros((rows, b), np.int32)).compile()
          self.warmed.add(('score', rows, b))
      for rows in self.row_buckets:
        n = -(-rows // self.block)
        for length in sorted({self.step_length(k, rows) for k in range(1, self.max_len + 1)}):
          self._decode.lower(self._params, self._cache[:n], self._ints, self._floats, self._keys,
                             rows=rows, length=length).compile()
          self.warmed.add(('decode', rows, length))
    return len(self.warmed)

  def _accept_row(self, slot, row) -> None:
    """A program's output row for `slot` (`_pack`: token, log-prob, top ids, their log-probs)."""
    k = TOP_LOGPROBS
    self._accept(slot, int(row[0]), float(row[1]), row[2:2 + k].astype(np.int64), row[2 + k:])

  def _accept(self, slot, tok, lp, top_id, top_lp) -> None:
    state = self._live[slot]
    req = state.req
    if req.cancelled.is_set():
      return self._finish(slot, 'cancelled')
    if tok in req.stop_ids:   # what was held back (a stop string's prefix, UTF-8) is final now
      # The stop id is reported as the reply's last token: a harness that asks for one token
      # after an echoed prompt and drops the last log-prob (lm-evaluation-harness) counts on it.
      text = final_text(self.tok, state)
      _emit(req, 'token', Token(tok, text[state.sent:], lp,
                                list(zip(top_id.tolist(), top_lp.tolist())), end=True))
      return self._finish(slot, 'stop')
    state.ids.append(tok)
    text = detokenize(self.tok, state)
    reason = None
    cut = first_stop(text, req.stop, state.sent)
    if cut is not None:
      text, reason = text[:cut], 'stop'
    elif len(state.ids) >= req.max_tokens:
      reason = 'length'
      text = final_text(self.tok, state)
    safe = len(text) if reason else safe_len(text, req.stop, state.sent)
    delta = text[state.sent:safe] if safe > state.sent else ''
    state.sent = max(state.sent, safe)
    _emit(req, 'token', Token(tok, delta, lp, list(zip(top_id.tolist(), top_lp.tolist()))))
    if reason:
      self._finish(slot, reason)

  def _finish(self, slot, reason) -> None:
    state = self._live[slot]
    self._live[slot] = None
    self._ints[2, slot] = 0
    _emit(state.req, 'done', reason)

  def _loop(self) -> None:
    with self.run.active():
      while not self._stop.is_set():
        try:
          self._fill(block=not any(self._live))
          if self._stop.is_set():
            break
          if any(self._live):
            self._step()
        except Exception as e:   # noqa: BLE001 - fail what is live, keep serving the rest
          self._recover(f'{type(e).__name__}: {e}')

  def _recover(self, error: str) -> None:
    """A step or prefill raised: every live request gets the error and its slot back, and a
    cache the failed program had donated is made again."""
    for i, st in enumerate(self._live):
      if st is not None:
        self._live[i] = None
        _emit(st.req, 'error', error)
    self._ints[2] = 0
    if any(x.is_deleted() for x in jax.tree.leaves(self._cache)):
      self._cache = self._new_cache()

  def _fill(self, block: bool) -> None:
    """Admits waiting requests into free slots: as many per prefill program as fill its largest
    row bucket (up to `max_prefill` rows), the rest in the next."""
    while None in self._live:
      reqs = []
      free = [i for i, st in enumerate(self._live) if st is None]
      waiting = min(len(free), self._queue.qsize() or 1)
      fits = [r for r in self.prefill_buckets if r <= waiting]
      take = fits[-1] if fits else waiting   # fewer than one shard's rows: they fill its rows
      while len(reqs) < take:
        try:
          req = self._queue.get(block=block and not reqs)
        except queue.Empty:
          break
        if req is None:   # close()
          break
        if req.cancelled.is_set():
          _emit(req, 'done', 'cancelled')
          continue
        reqs.append(req)
      if not reqs:
        return
      slots = free[:len(reqs)]
      try:
        self._admit(reqs, slots)
      except Exception as e:   # noqa: BLE001 - these requests fail, the engine goes on
        for req, slot in zip(reqs, slots):
          if self._live[slot] is not None and self._live[slot].req is req:
            self._live[slot] = None
            self._ints[2, slot] = 0
          _emit(req, 'error', f'{type(e).__name__}: {e}')
        if any(x.is_deleted() for x in jax.tree.leaves(self._cache)):
          self._recover(f'the engine recovered from: {type(e).__name__}: {e}')
      block = False

  def _step(self) -> None:
    live = np.flatnonzero(self._ints[2])
    rows = next(r for r in self.row_buckets if r > live[-1])
    length = self.step_length(int(self._ints[1, live].max()) + 1, rows)
    out = np.asarray(self._advance(rows, length))
    self.steps += 1
    for i in live:
      self._ints[0, i] = int(out[i, 0])
      self._ints[1, i] += 1
      self._ints[3, i] += 1
      self._accept_row(i, out[i])


def _emit(req: Request, kind: str, payload) -> None:
  """Hands an event to its request; a receiver that is gone (its event loop closed) cancels the
  request instead of stopping the engine."""
  try:
    req.emit(kind, payload)
  except Exception:   # noqa: BLE001
    req.cancelled.set()

"""EleutherAI's lm-evaluation-harness on our JAX model, in process: `LMResearchLM`, registered
with the harness as model 'lmresearch', answers its three request kinds on the run's mesh.

  loglikelihood          log p(continuation | context) and whether it is the greedy one: the
                         batched scorer below (one forward per batch of rows, summed on device)
  loglikelihood_rolling  a whole document's log-likelihood, scored in the harness's own disjoint
                         windows of the model context (lm_eval.utils.get_rolling_token_windows)
  generate_until         the KV-cache sampler (greedy, or the task's temperature), cut at the
                         task's `until` strings, at most max_gen_toks tokens; a row stops at a
                         token that holds a stop string (see `_stop_ids`)

Tokenization is the harness's `hf` backend's (HFLM) for the same weights, so the numbers agree
with it: a context is encoded with the tokenizer's specials (Llama's BOS; none for GPT-2 or
Qwen2) unless it already starts with the BOS text, a continuation is what encoding context +
continuation adds to the context's ids (trailing spaces moved to the continuation first), rows
longer than the context are cut from the left, and an empty context is the BOS (else EOS) id.

Speed comes from shapes: requests are sorted longest first (padding stays small) and cut into
batches whose padded length is rounded to an eighth of its power of two (few programs compile),
with at most `max_batch_tokens` tokens per forward; only the continuation's positions are
unembedded (the hf backend makes logits at every position).

  python -m lmresearch.evaluate --workdir=RUN --lm_eval=lmr_world_facts,lmr_gsm8k --limit=50

runs it from the command line (`evaluate_run` below); our own tasks for the harness are in
lm_eval_tasks/ beside this file. lm_eval is an optional dependency: pip install -e .[eval].
"""
from __future__ import annotations

import functools
import json
import os
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmresearch.core import fileio, parallel
from lmresearch.generation import batched
from lmresearch.core.errors import ConfigError
from lmresearch.generation.stops import compile_stops
from lmresearch.models.logprobs import positions_from_mask, target_logprobs
from lmresearch.models.transformer import unembed
from lmresearch.generation.kvcache import KV_CACHE

try:
  import lm_eval
  import lm_eval.evaluator  # noqa: F401
  from lm_eval import utils as lm_utils
  from lm_eval.api.model import TemplateLM
  from lm_eval.api.registry import register_model
except ImportError as e:   # raised where --lm_eval asks for it; nothing else imports this module
  raise ImportError(f'lm-evaluation-harness is not installed ({e}): pip install -e .[eval]') from None

MODEL_NAME = 'lmresearch'
TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lm_eval_tasks')
RESULTS_FILE = os.path.join('eval', 'lm_eval_results.json')   # in the run directory
MIN_BUCKET = 16


def bucket(n: int, cap: int, smallest: int = MIN_BUCKET) -> int:
  """n rounded up to a power of two (at least `smallest`), at most cap: row counts and the
  scored window, so that few programs compile."""
  return min(cap, max(smallest, 1 << (max(n, 1) - 1).bit_length()))


def length_bucket(n: int, cap: int) -> int:
  """A padded length: n rounded up to an eighth of its power of two (at least MIN_BUCKET), at
  most cap. A power of two would pad a 260-token row to 512 -- twice the work of the hf
  backend, which pads to each batch's longest row; eighths waste at most 1/8 for four times
  the programs, which compile once per run."""
  step = max(MIN_BUCKET, (1 << (max(n, 1) - 1).bit_length()) // 8)
  return min(cap, -(-max(n, 1) // step) * step)


def _score_rows(model, params, inputs, mask, targets, ends, conts, *, window: int):
  """Per row: sum of log p(continuation) and whether every continuation token is the argmax
  (the harness's is_greedy). Right-padded rows, padding its own segment; row r's inputs end at
  ends[r] and its last conts[r] targets are the continuation. Only the last `window` positions
  of each row are unembedded: the logits of a 262k vocabulary at every context position would
  cost more than the layers below them."""
  hidden = model.apply({'params': params}, inputs, positions_from_mask(mask), mask,
                       return_hidden=True)
  at = ends[:, None] - window + jnp.arange(window)[None, :]                 # [n, window]
  scored = at >= ends[:, None] - conts[:, None]
  at = jnp.maximum(at, 0)
  h = jnp.take_along_axis(hidden, at[..., None], axis=1)
  logits = unembed(model.cfg, params, h)
  tgt = jnp.take_along_axis(targets, at, axis=1)
  lp, _ = target_logprobs(logits, tgt)
  greedy = (jnp.argmax(logits, axis=-1) == tgt) | ~scored
  return jnp.sum(jnp.where(scored, lp, 0.0), axis=-1), jnp.all(greedy, axis=-1)


def _score_shared(model, params, ctx, ctx_mask, owner, conts, lens):
  """`_score_rows` for continuations that share contexts (a question's answer choices, each
  after the same few-shot prompt): the U contexts ([U, Lc], left-padded) are prefilled once into
  a KV cache, copied to the R continuation rows (`owner`: each row's context), and the
  continuations ([R, Lk], right-padded, lens[r] real) run after them. The hf backend runs the
  whole context again for every choice."""
  (u, lc), (r, lk) = ctx.shape, conts.shape
  kv_ctx = ctx_mask.astype(jnp.bool_)
  apply = functools.partial(model.apply, decode=KV_CACHE, mutable=['cache'], return_hidden=True)
  # The last continuation token is only a target: lk - 1 slots follow the context.
  hidden, variables = apply(
      {'params': params, 'cache': batched.kv_cache(model, params, u, length=lc + lk - 1)}, ctx,
      positions_from_mask(ctx_mask),
      kv_mask=jnp.concatenate([kv_ctx, jnp.ones((u, lk - 1), bool)], -1))
  h = hidden[owner, -1:]
  if lk > 1:
    cache = batched.cache_rows(model, params, variables['cache'], owner)
    start = jnp.sum(ctx_mask, axis=-1)[owner]
    hc, _ = apply({'params': params, 'cache': cache}, conts[:, :-1],
                  start[:, None] + jnp.arange(lk - 1)[None, :],
                  kv_mask=jnp.concatenate([kv_ctx[owner], jnp.ones((r, lk - 1), bool)], -1))
    # Token j of a continuation is predicted at its context's last position (j = 0) or at j-1.
    h = jnp.concatenate([h, hc], axis=1)
  logits = unembed(model.cfg, params, h)
  lp, _ = target_logprobs(logits, conts)
  scored = jnp.arange(lk)[None, :] < lens[:, None]
  greedy = (jnp.argmax(logits, axis=-1) == conts) | ~scored
  return jnp.sum(jnp.where(scored, lp, 0.0), axis=-1), jnp.all(greedy, axis=-1)


def generation_settings(kwargs: dict, default_max: int, eos_text: str) -> dict:
  """A task's generation_kwargs as HFLM reads them: `until` (a string or a list) plus the EOS
  text, max_gen_toks (or an alias), greedy unless do_sample (or, without do_sample, a
  temperature > 0) asks for sampling."""
  until = kwargs.get('until') or []
  until = [until] if isinstance(until, str) else list(until)
  if eos_text and eos_text not in until:
    until.append(eos_text)
  max_gen = next((int(kwargs[k]) for k in ('max_gen_toks', 'max_new_tokens', 'max_tokens',
                                           'max_completion_tokens')
                  if kwargs.get(k) is not None), default_max)
  temperature = float(kwargs.get('temperature') or 0.0)
  do_sample = kwargs.get('do_sample')
  if not (temperature > 0 if do_sample is None else do_sample):
    temperature = 0.0
  return {'until': until, 'max_gen_toks': max_gen, 'temperature': temperature,
          'top_k': int(kwargs.get('top_k') or 0), 'top_p': float(kwargs.get('top_p') or 1.0)}


@register_model(MODEL_NAME)
class LMResearchLM(TemplateLM):
  """A run (lmresearch.stages.runs.Run) as an lm_eval LM. From the harness's own entry points:
  model='lmresearch', model_args='workdir=RUN[,max_length=N][,max_batch_tokens=N]'."""

  def __init__(self, workdir: Optional[str] = None, run=None, batch_size=32,
               max_length: Optional[int] = None, max_batch_tokens: int = 16384, seed: int = 0,
               **unused):   # the harness also passes max_batch_size and device
    super().__init__()
    if run is None:
      if not workdir:
        raise ConfigError("model 'lmresearch' needs model_args workdir=RUN (a run directory).")
      from lmresearch.stages import runs
      run = runs.load(workdir)
    self.run, self.tok, self.model = run, run.tok, run.model
    self._max_length = int(max_length or run.model.cfg.max_len)
    if self._max_length > run.model.cfg.max_len:
      raise ConfigError(f'max_length={max_length} exceeds the model context of '
                        f'{run.model.cfg.max_len} tokens (config.model.max_len).')
    # 'auto' (the harness's default search) has no meaning here: rows are bounded by tokens.
    self._rows = 32 if batch_size in (None, 'auto') or str(batch_size).startswith('auto') \
        else int(batch_size)
    self.max_batch_tokens = int(max_batch_tokens)
    self.seed = int(seed)
    self._score = jax.jit(functools.partial(_score_rows, run.model), static_argnames='window')
    self._score_shared = jax.jit(functools.partial(_score_shared, run.model))
    self._bos_text = self.tok.decode([self.prefix_token_id])

  # ---- what the harness asks of a TemplateLM -------------------------------------------------
  @property
  def eot_token_id(self) -> int:
    return self.tok.eos_id

  @property
  def prefix_token_id(self) -> int:
    return self.tok.bos_id   # an HF tokenizer without a BOS has its EOS here (HFLM does the same)

  @property
  def max_length(self) -> int:
    return self._max_length

  @property
  def max_gen_toks(self) -> int:
    return 256   # HFLM's default, for tasks that name none

  @property
  def tokenizer_name(self) -> str:
    return 'lmresearch'

  def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kw) -> list[int]:
    """HFLM.tok_encode: the tokenizer's specials unless told otherwise or the text already starts
    with the BOS text (a chat template rendered it)."""
    if add_special_tokens is None:
      add_special_tokens = not (self._bos_text and string.startswith(self._bos_text))
    return self.tok.prompt_ids(string) if add_special_tokens else self.tok.encode(string)

  def chat_template(self, chat_template=False) -> Optional[str]:
    return getattr(self.tok, 'chat_template', None) if chat_template else None

  def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
    if not hasattr(self.tok, 'render_text'):
      raise ConfigError('a chat template for the harness needs an imported Hugging Face '
                        'tokenizer (our own tokenizers render chats as ids); drop --chat.')
    return self.tok.render_text(chat_history, add_generation_prompt)

  # ---- scoring ------------------------------------------------------------------------------
  def _rows_for(self, length: int, left: int) -> int:
    """Rows of a batch padded to `length`: batch_size at most, max_batch_tokens in all, and for
    the last requests just the rows that hold them (rounded to the mesh's batch multiple):
    filler rows cost as much as real ones, and a tail compiles once per task."""
    rows = max(1, min(self._rows, self.max_batch_tokens // length))
    return self.run.batch_rows(min(rows, left))

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kw):
    """[(strings, context ids, continuation ids)] -> [(log p(continuation), is_greedy)]."""
    cap = self.max_length
    rows, conts = [], []
    for _, context, continuation in requests:
      if not continuation:
        raise ValueError('lm_eval asked for the log-likelihood of an empty continuation.')
      if len(continuation) > cap:
        raise ValueError(f'a continuation of {len(continuation)} tokens does not fit the model '
                         f'context of {cap} tokens; pass a smaller task or a larger max_length.')
      rows.append((list(context) + list(continuation))[-(cap + 1):])   # left-truncated, as HFLM
      conts.append(len(continuation))
    contexts = [tuple(row[:-c]) for row, c in zip(rows, conts)]
    if len(set(contexts)) <= 0.75 * len(rows):
      out = self._shared_contexts(contexts, rows, conts)
    else:
      out = self._whole_rows(rows, conts)
    for (strings, _, _), answer in zip(requests, out):
      if strings is not None:
        self.cache_hook.add_partial('loglikelihood', strings, answer)
    return out

  def _whole_rows(self, rows, conts) -> list:
    """Every row run whole, longest first, only its continuation unembedded."""
    cap = self.max_length
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out = [None] * len(rows)
    with self.run.active():
      start = 0
      while start < len(order):
        length = length_bucket(len(rows[order[start]]) - 1, cap)
        n = self._rows_for(length, len(order) - start)
        chunk = order[start:start + n]
        window = bucket(max(conts[i] for i in chunk), length, smallest=4)
        inputs = np.full((n, length), self.tok.pad_id, np.int32)
        targets, mask = (np.zeros((n, length), np.int32) for _ in range(2))
        ends, lens = np.ones(n, np.int32), np.ones(n, np.int32)
        mask[:, 0] = 1   # filler rows: one token, its one target scored and ignored
        for r, i in enumerate(chunk):
          row = rows[i]
          t = len(row) - 1
          inputs[r, :t], targets[r, :t], mask[r, :t] = row[:-1], row[1:], 1
          ends[r], lens[r] = t, conts[i]
        logp, greedy = parallel.fetch(self._score(self.run.params, inputs, mask, targets, ends,
                                                  lens, window=window))
        for r, i in enumerate(chunk):
          out[i] = (float(logp[r]), bool(greedy[r]))
        start += n
    return out

  def _shared_contexts(self, contexts, rows, conts) -> list:
    """Rows grouped by context (longest first): each batch prefills its distinct contexts once
    (`_score_shared`); a context whose continuations fill more than a batch is prefilled again
    in the next."""
    order = sorted(range(len(rows)), key=lambda i: (-len(contexts[i]), contexts[i],
                                                    -conts[i]))
    out = [None] * len(rows)
    with self.run.active():
      start = 0
      while start < len(order):
        width = length_bucket(len(contexts[order[start]]), self.max_length)
        lk = bucket(max(conts[i] for i in order[start:start + self._rows]), self.max_length, 4)
        n = self._rows_for(width + lk, len(order) - start)
        chunk = order[start:start + n]
        lk = bucket(max(conts[i] for i in chunk), self.max_length, 4)
        distinct = list(dict.fromkeys(contexts[i] for i in chunk))
        u = self.run.batch_rows(bucket(len(distinct), n, smallest=1))
        ctx = np.full((u, width), self.tok.pad_id, np.int32)
        ctx_mask = np.zeros((u, width), np.int32)
        ctx_mask[:, -1] = 1   # filler contexts: one token
        for k, c in enumerate(distinct):
          ctx[k, width - len(c):], ctx_mask[k, width - len(c):] = c, 1
        where = {c: k for k, c in enumerate(distinct)}
        owner = np.zeros(n, np.int32)
        cont = np.full((n, lk), self.tok.pad_id, np.int32)
        lens = np.ones(n, np.int32)
        for r, i in enumerate(chunk):
          owner[r], lens[r] = where[contexts[i]], conts[i]
          cont[r, :conts[i]] = rows[i][-conts[i]:]
        logp, greedy = parallel.fetch(self._score_shared(self.run.params, ctx, ctx_mask, owner,
                                                         cont, lens))
        for r, i in enumerate(chunk):
          out[i] = (float(logp[r]), bool(greedy[r]))
        start += n
    return out

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """A document's windows as the hf backend makes them (the BOS, else EOS, id first; disjoint
    windows of max_length tokens), all of them scored as one set of requests, summed per
    document."""
    windows, owner = [], []
    for k, (string,) in enumerate(r.args for r in requests):
      for ctx, cont in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
          token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
          max_seq_len=self.max_length, context_len=1)):
        windows.append((None, ctx, cont))
        owner.append(k)
    totals = np.zeros(len(requests))
    for k, (logp, _) in zip(owner, self._loglikelihood_tokens(windows)):
      totals[k] += logp
    out = [float(t) for t in totals]
    for r, total in zip(requests, out):
      self.cache_hook.add_partial('loglikelihood_rolling', r.args, total)
    return out

  # ---- generation ---------------------------------------------------------------------------
  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Requests grouped by their generation settings; each group generated longest context
    first, `batch_size` rows per call, its prompt block a power of two long."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
      groups.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
    out = [None] * len(requests)
    eos_text = self.tok.decode([self.eot_token_id])
    for key, members in groups.items():
      settings = generation_settings(requests[members[0]].args[1], self.max_gen_toks, eos_text)
      texts = self._generate([requests[i].args[0] for i in members], **settings)
      for i, text in zip(members, texts):
        out[i] = text
        self.cache_hook.add_partial('generate_until', requests[i].args, text)
    return out

  def _generate(self, contexts: Sequence[str], *, until: Sequence[str], max_gen_toks: int,
                temperature: float, top_k: int, top_p: float) -> list[str]:
    cap = self.max_length
    if max_gen_toks >= cap:
      raise ValueError(f'max_gen_toks={max_gen_toks} leaves no room for a context in the model '
                       f'context of {cap} tokens.')
    # A row stops the step its text holds a stop string (the hf backend's criterion), whether
    # the string sits in one token or spans several; the text is cut at it below.
    table = compile_stops(self.tok, tuple(until), self.model.cfg.vocab_size)
    keep = cap - max_gen_toks   # contexts are cut from the left to fit, as HFLM cuts them
    prompts = [self.tok_encode(c)[-keep:] for c in contexts]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = [None] * len(prompts)
    with self.run.active():
      start = n = 0
      while start < len(order):
        rows = self.run.batch_rows(min(self._rows, len(order) - start))
        chunk = order[start:start + rows]
        width = min(length_bucket(len(prompts[chunk[0]]), cap), keep)
        tokens = np.full((rows, width), self.tok.pad_id, np.int32)
        mask = np.zeros((rows, width), np.int32)
        for r in range(rows):
          p = prompts[chunk[min(r, len(chunk) - 1)]]   # filler rows repeat the last prompt
          tokens[r, width - len(p):], mask[r, width - len(p):] = p, 1
        gen = batched.generate_arrays(
            self.model, self.run.params, tokens, mask,
            jax.random.fold_in(jax.random.PRNGKey(self.seed), n), max_new_tokens=max_gen_toks,
            temperature=temperature, top_k=top_k, top_p=top_p,
            stop_ids=self.tok.stop_ids, pad_id=self.tok.pad_id, stop_table=table)
        host = parallel.fetch({k: gen[k] for k in ('tokens', 'lengths')})
        for r, i in enumerate(chunk):
          # Every generated token, the last one too: the specials that end a document are
          # skipped in decoding, the token that completes a stop string is cut at it.
          ids = host['tokens'][r, width:width + host['lengths'][r]]
          text = self.tok.decode(ids.tolist(), skip_special=True)
          out[i] = batched.cut_at_stop_strings(text, until)
        start, n = start + rows, n + 1
    return out

# ---- the command line's backend -------------------------------------------------------------

def task_manager(tasks: Sequence[str], include_path: Optional[str] = None, metadata=None):
  """Our tasks (lm_eval_tasks/) and --include_path first; the harness's own ~15k task configs
  are indexed (seconds) only when a task is not among those."""
  from lm_eval.tasks import TaskManager
  paths = [TASKS_DIR] + ([include_path] if include_path else [])
  manager = TaskManager(include_path=paths, include_defaults=False, metadata=metadata)
  if all(t in manager.all_tasks for t in tasks):
    return manager
  manager = TaskManager(include_path=paths, metadata=metadata)
  missing = [t for t in tasks if t not in manager.all_tasks]
  if missing:
    raise ConfigError(f'--lm_eval: no task {", ".join(missing)} in lm_eval, {TASKS_DIR}'
                      + (f' or {include_path}' if include_path else '')
                      + '; check the name (lm_eval ls tasks) or pass --include_path=DIR.')
  return manager


def evaluate_run(run, tasks: Sequence[str], manager=None, *, num_fewshot: Optional[int] = None,
                 limit: Optional[int] = None, batch_size: int = 32, seed: int = 0,
                 chat: bool = False, log_samples: bool = False) -> dict:
  """simple_evaluate of `run` on lm_eval task names (found by `manager`, default
  task_manager(tasks)) -> the harness's result dict."""
  lm = LMResearchLM(run=run, batch_size=batch_size, seed=seed)
  return lm_eval.simple_evaluate(
      model=lm, tasks=list(tasks), task_manager=manager or task_manager(tasks),
      num_fewshot=num_fewshot, limit=limit, log_samples=log_samples, apply_chat_template=chat,
      random_seed=seed, numpy_random_seed=seed, fewshot_random_seed=seed,
      torch_random_seed=None)   # a torch seed would import torch, which we never need


def dumps(obj, **kw) -> str:
  """JSON with the harness's own encoder for what JSON lacks (numpy numbers, sets, ...)."""
  return json.dumps(obj, default=lm_utils.handle_non_serializable, ensure_ascii=False, **kw)


def write_results(workdir: str, results: dict) -> str:
  """The harness's result dict as RUN/eval/lm_eval_results.json."""
  path = fileio.join(workdir, RESULTS_FILE)
  fileio.makedirs(os.path.dirname(fileio.absolute(path)))
  fileio.write_text(path, dumps(results, indent=2) + '\n')
  return path


def table(results: dict) -> str:
  """The harness's own markdown table(s): per task, and per group where there are groups."""
  text = lm_utils.make_table(results)
  if results.get('groups'):
    text += '\n' + lm_utils.make_table(results, 'groups')
  return text

"""The OpenAI-compatible API: /v1/models, /v1/completions, /v1/chat/completions.

What an OpenAI client or an evaluation harness sends works as it does there: streaming
(server-sent `data:` chunks, a final `data: [DONE]`, a usage chunk when
`stream_options.include_usage`), `n`, `stop`, `max_tokens`, `temperature`, `top_p`, `seed`, and
vLLM's `top_k`; a seeded request's choice i draws what `python -m lmresearch.sample` draws for
row i with that seed (generation/sampler.py);
completions also answer `logprobs` (up to 5 alternatives per token, and the chosen one) and
`echo`, with `max_tokens=0` to score a prompt alone (log-likelihood evaluation). An echoed prompt
has one entry per token as the model's own tokenizer counts them (a BOS it adds included), the
first with a null log-prob, as OpenAI's: lm-evaluation-harness slices the list by its own token
counts. A reply that ends on the model's stop id reports that id as its last token (with its
log-prob, in usage, not in the text), as OpenAI and vLLM do.
Settings we do not implement (penalties, logit_bias, tools) are a 400 naming them, never ignored.
One extension, vLLM's `ignore_eos: true`, generates exactly max_tokens (benchmarks use it).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import secrets
import time
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Request
from pydantic import (BaseModel, BeforeValidator, ConfigDict, ValidationError, ValidationInfo,
                      field_validator, model_validator)
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from lmresearch.text import tokenizers
from lmresearch.generation.engine import Busy, ContextError, Stopped, Token
from lmresearch.web.registry import EngineError, Result, complete, gather_or_cancel, stream
from lmresearch.generation.textstream import Live, detokenize, first_stop

MAX_N = 16
MAX_STOPS = 4


class ApiError(Exception):
  def __init__(self, status: int, message: str, param: Optional[str] = None,
               kind: str = 'invalid_request_error', code: Optional[str] = None):
    super().__init__(message)
    self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

  def response(self):
    return JSONResponse({'error': {'message': self.message, 'type': self.kind, 'param': self.param,
                                   'code': self.code}}, status_code=self.status)


def _num(key, v, default, lo, hi, kind=float):
  """A number in [lo, hi] (None: the default), or the 400 naming the field."""
  if v is None:
    return default
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
      kind is int and v != int(v)):
    raise ApiError(400, f'{key} must be {"an integer" if kind is int else "a number"}, got {v!r}.',
                   key)
  if not lo <= v <= hi:
    raise ApiError(400, f'{key}={v} is out of range [{lo}, {hi}].', key)
  return kind(v)


def _number(lo, hi, kind=float):
  """A request field's check, run before pydantic's own: our message, our status (a validator's
  ApiError is not wrapped by pydantic, so FastAPI's 422 never answers instead)."""
  def check(v, info: ValidationInfo):
    return _num(info.field_name, v, None, lo, hi, kind)
  return BeforeValidator(check)


UNSUPPORTED = ('logit_bias', 'tools', 'functions', 'tool_choice', 'function_call',
               'response_format', 'best_of', 'suffix')


class Sampling(BaseModel):
  """What every generation request may set (OpenAI's fields, vLLM's top_k and ignore_eos).
  Fields a client sends that we do not read (user, metadata, ...) are allowed; the settings we
  do not implement are refused by name (`_unsupported`)."""
  model_config = ConfigDict(extra='allow')

  model: Any = None
  temperature: Annotated[Optional[float], _number(0.0, 2.0)] = None
  top_p: Annotated[Optional[float], _number(1e-9, 1.0)] = None
  top_k: Annotated[Optional[int], _number(-1, 1 << 30, int)] = None   # -1 or 0: off
  n: Annotated[Optional[int], _number(1, MAX_N, int)] = None
  seed: Optional[Any] = None
  stop: Optional[Any] = None
  ignore_eos: Any = False
  stream: Any = False
  stream_options: Any = None

  @model_validator(mode='before')
  @classmethod
  def _unsupported(cls, body):
    for key in ('presence_penalty', 'frequency_penalty'):
      if body.get(key):
        raise ApiError(400, f'{key} is not supported by this server (send 0 or leave it out).', key)
    for key in UNSUPPORTED:
      if body.get(key) not in (None, [], {}, 1 if key == 'best_of' else None):
        raise ApiError(400, f'{key} is not supported by this server.', key)
    return body

  @field_validator('stop', mode='before')
  @classmethod
  def _stop(cls, stop):
    stop = stop or []
    if isinstance(stop, str):
      stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > MAX_STOPS:
      raise ApiError(400, f'stop must be a string or a list of at most {MAX_STOPS} strings.', 'stop')
    return stop

  @field_validator('seed', mode='before')
  @classmethod
  def _seed(cls, seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
      raise ApiError(400, f'seed must be an integer, got {seed!r}.', 'seed')
    return None if seed is None else seed % (1 << 31)

  def settings(self) -> dict:
    return dict(ignore_eos=bool(self.ignore_eos),
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p, stop=self.stop or [],
                # vLLM's extension (-1 or 0: off); the CLI's --top_k, the same rule
                top_k=max(0, self.top_k or 0), seed=self.seed,
                n=1 if self.n is None else self.n)

  def stream_opts(self) -> tuple:
    if not self.stream:
      return False, False
    opts = self.stream_options or {}
    return True, bool(opts.get('include_usage')) if isinstance(opts, dict) else False


class CompletionRequest(Sampling):
  prompt: Any = None
  max_tokens: Annotated[Optional[int], _number(0, 1 << 30, int)] = None   # 16 when absent
  echo: Any = False
  logprobs: Any = None   # null or false: none; else 0..5 alternatives

  @field_validator('logprobs', mode='before')
  @classmethod
  def _logprobs(cls, lp):
    return None if lp is None or lp is False else _num('logprobs', lp, 0, 0, 5, int)


class ChatRequest(Sampling):
  messages: Any = None
  max_tokens: Annotated[Optional[int], _number(1, 1 << 30, int)] = None
  max_completion_tokens: Annotated[Optional[int], _number(1, 1 << 30, int)] = None
  logprobs: Any = False
  top_logprobs: Annotated[Optional[int], _number(0, 5, int)] = None


def _parse(model, body: dict):
  try:
    return model.model_validate(body)
  except ValidationError as e:   # a shape our checks do not name: still a 400, naming the field
    err = e.errors()[0]
    field = '.'.join(str(x) for x in err['loc']) or None
    raise ApiError(400, f'{field}: {err["msg"]}.', field) from None


def _text_of(content) -> str:
  if isinstance(content, str):
    return content
  if isinstance(content, list):   # [{"type": "text", "text": ...}, ...]
    parts = []
    for p in content:
      if not isinstance(p, dict) or p.get('type') != 'text' or not isinstance(p.get('text'), str):
        raise ApiError(400, 'message content parts must be {"type": "text", "text": ...}; this '
                       'server reads text only.', 'messages')
      parts.append(p['text'])
    return ''.join(parts)
  raise ApiError(400, 'message content must be a string or a list of text parts.', 'messages')


def _messages(msgs) -> list:
  if not isinstance(msgs, list) or not msgs:
    raise ApiError(400, 'messages must be a non-empty list of {"role", "content"}.', 'messages')
  out = []
  for i, m in enumerate(msgs):
    role = m.get('role') if isinstance(m, dict) else None
    if role == 'developer':   # OpenAI's newer name for the system role
      role = 'system'
    if role not in tokenizers.ROLE_TOKENS:
      raise ApiError(400, f'messages[{i}].role must be one of system, user, assistant; got '
                     f'{role!r}.', 'messages')
    out.append({'role': role, 'content': _text_of(m.get('content'))})
  return out


def _usage(prompt_tokens, results):
  done = sum(len(r.tokens) for r in results)
  return {'prompt_tokens': prompt_tokens, 'completion_tokens': done,
          'total_tokens': prompt_tokens + done}


def _sse(obj) -> str:
  return f'data: {json.dumps(obj)}\n\n'


def router(api_key: Optional[str] = None) -> APIRouter:

  def authorize(request: Request):
    if api_key is None:
      return
    auth = request.headers.get('authorization', '')
    if not secrets.compare_digest(auth.encode(), f'Bearer {api_key}'.encode()):
      raise ApiError(401, 'Incorrect API key provided (send "Authorization: Bearer <key>").',
                     kind='invalid_request_error', code='invalid_api_key')

  api = APIRouter(prefix='/v1', dependencies=[Depends(authorize)])

  async def engine_for(request: Request, body: dict):
    name = body.get('model')
    registry = request.app.state.models
    if not isinstance(name, str) or not name:
      raise ApiError(400, 'model is required (GET /v1/models lists them).', 'model')
    if name not in registry.paths:
      raise ApiError(404, f'The model {name!r} does not exist; this server has: '
                     f'{", ".join(registry.names()) or "none"}.', 'model', code='model_not_found')
    # The first request for a model loads it (seconds): off the event loop.
    return name, await run_in_threadpool(registry.engine, name)

  async def read(request: Request) -> dict:
    try:
      body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
      raise ApiError(400, 'the request body is not valid JSON.') from None
    if not isinstance(body, dict):
      raise ApiError(400, 'the request body must be a JSON object.')
    return body

  @api.get('/models')
  async def list_models(request: Request):
    registry = request.app.state.models
    return {'object': 'list', 'data': [
        {'id': n, 'object': 'model', 'created': 0, 'owned_by': 'lmresearch',
         'loaded': n in registry.loaded()} for n in registry.names()]}

  @api.post('/chat/completions')
  async def chat(request: Request):
    with _errors():
      body = await read(request)
      name, engine = await engine_for(request, body)
      req = _parse(ChatRequest, body)
      msgs = _messages(req.messages)
      prompt = tokenizers.generation_prompt(engine.tok, msgs)
      limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
      max_tokens = engine.max_len - len(prompt) if limit is None else limit
      engine.check(len(prompt), max_tokens)
      logprobs = bool(req.logprobs)
      top = (req.top_logprobs or 0) if logprobs else 0
      return await _serve(engine, name, prompt, max_tokens, req, chat=True,
                          logprobs=top if logprobs else None)

  @api.post('/completions')
  async def completions(request: Request):
    with _errors():
      body = await read(request)
      name, engine = await engine_for(request, body)
      req = _parse(CompletionRequest, body)
      prompts = req.prompt
      if isinstance(prompts, str) or (isinstance(prompts, list) and prompts
                                      and all(isinstance(t, int) for t in prompts)):
        prompts = [prompts]
      if not isinstance(prompts, list) or not prompts or not all(
          isinstance(p, str) or (isinstance(p, list) and p and all(
              isinstance(t, int) and not isinstance(t, bool) for t in p)) for p in prompts):
        raise ApiError(400, 'prompt must be a string, a list of strings, or token ids.', 'prompt')
      vocab = engine.cfg.vocab_used or engine.cfg.vocab_size
      for p in prompts:
        bad = next((t for t in p if not 0 <= t < vocab), None) if isinstance(p, list) else None
        if bad is not None:
          raise ApiError(400, f'token id {bad} is outside the vocabulary [0, {vocab}).', 'prompt')
      # A string gets what the model's tokenizer adds to a document (our BOS, Llama's BOS;
      # nothing for GPT-2 or Qwen2); ids are taken as sent.
      ids = [engine.tok.prompt_ids(p) if isinstance(p, str) else list(p) for p in prompts]
      echo = bool(req.echo)
      max_tokens = 16 if req.max_tokens is None else req.max_tokens
      if max_tokens == 0 and not echo:
        raise ApiError(400, 'max_tokens=0 generates nothing: it needs echo=true (to score the '
                       'prompt).', 'max_tokens')
      for p in ids:
        if max_tokens:
          engine.check(len(p), max_tokens)
        elif len(p) > engine.max_len:
          engine.score(p)   # raises the context error
      lp = req.logprobs
      if len(ids) > 1 and req.stream:
        raise ApiError(400, 'stream with several prompts is not supported; send one request '
                       'per prompt.', 'stream')
      if len(ids) == 1:
        return await _serve(engine, name, ids[0], max_tokens, req, chat=False, logprobs=lp,
                            echo=echo)
      # A list of prompts (a harness's batch): one choice each (n each), in the order sent.
      outs = await gather_or_cancel(*[
          _serve(engine, name, p, max_tokens, req, chat=False, logprobs=lp, echo=echo,
                 as_dict=True) for p in ids])
      first = outs[0]
      choices = [dict(c, index=i) for i, c in enumerate(c for o in outs for c in o['choices'])]
      usage = {k: sum(o['usage'][k] for o in outs) for k in first['usage']}
      return dict(first, choices=choices, usage=usage)

  return api


@contextlib.contextmanager
def _errors():
  """The engine's refusals as the API's statuses (raised: the app's handler answers them)."""
  try:
    yield
  except ContextError as e:
    raise ApiError(400, str(e), 'max_tokens', code='context_length_exceeded') from None
  except Busy as e:
    raise ApiError(429, str(e), kind='server_busy') from None
  except Stopped as e:
    raise ApiError(503, str(e), kind='server_error') from None
  except EngineError as e:
    raise ApiError(500, str(e), kind='server_error') from None


def _token_text(tok, i: int) -> str:
  return tok.decode([i], skip_special=False)


def _top(tok, tid: int, lp: float, alts, top: int) -> dict:
  """One position's top_logprobs: the `top` most likely tokens and the chosen one (OpenAI: up to
  logprobs + 1 entries), text -> log-prob."""
  out = {_token_text(tok, a): b for a, b in alts[:top]}
  out.setdefault(_token_text(tok, tid), lp)
  return out


def _echoed(tok, prompt, scored, top: int) -> dict:
  """An echoed prompt's logprobs: an entry per token, the first with nothing before it to be
  scored given (null); `scored` is `Engine.score(prompt)`. text_offset: where each token's text
  begins in the echoed text (decoded without specials, so a BOS takes none of it), read as a
  reply's text streams: a token's text can depend on the ones before it (a byte of UTF-8)."""
  lps, alts = scored[:2]
  out = {'tokens': [], 'token_logprobs': [None] + list(lps),
         'top_logprobs': [None] + [_top(tok, t, lp, a, top)
                                   for t, lp, a in zip(prompt[1:], lps, alts)],
         'text_offset': []}
  state = Live(None, None, 0)
  for t in prompt:
    out['tokens'].append(_token_text(tok, t))
    out['text_offset'].append(len(state.text))
    state.ids.append(t)
    detokenize(tok, state)
  return out


def _scored_token(tok, top: list, stop_ids, stops) -> Result:
  """A one-token greedy reply from the scoring pass's top tokens after the prompt."""
  tid, lp = top[0]
  if tid in stop_ids:
    return Result(tokens=[Token(tid, '', lp, top, end=True)], finish_reason='stop')
  text = tok.decode([tid], skip_special=True)
  cut = first_stop(text, stops or ())
  if cut is not None:
    return Result(text=text[:cut], tokens=[Token(tid, text[:cut], lp, top)], finish_reason='stop')
  return Result(text=text, tokens=[Token(tid, text, lp, top)], finish_reason='length')


def _completion_logprobs(tok, tokens, top: int, offset0: int, echoed=None):
  """OpenAI's completions logprobs: tokens, token_logprobs, top_logprobs, text_offset; the
  echoed prompt's entries (`_echoed`) first. A generated token's offset is where the text it
  adds to the reply begins, counted from `offset0`."""
  out = {k: list(v) for k, v in echoed.items()} if echoed else {
      'tokens': [], 'token_logprobs': [], 'top_logprobs': [], 'text_offset': []}
  offset = offset0
  for t in tokens:
    out['tokens'].append(_token_text(tok, t.id))
    out['token_logprobs'].append(t.logprob)
    out['top_logprobs'].append(_top(tok, t.id, t.logprob, t.top, top))
    out['text_offset'].append(offset)
    offset += len(t.text)
  return out


def _chat_logprobs(tok, tokens, top: int):
  """OpenAI's chat logprobs: an entry per token of the message's content (the stop id that
  ended it is not content), each with its `top` most likely alternatives."""
  def entry(i, lp):
    s = _token_text(tok, i)
    return {'token': s, 'logprob': lp, 'bytes': list(s.encode('utf-8'))}
  return {'content': [dict(entry(t.id, t.logprob), top_logprobs=[entry(a, b) for a, b in t.top[:top]])
                      for t in tokens if not t.end], 'refusal': None}


async def _serve(engine, name, prompt, max_tokens, req: Sampling, *, chat, logprobs=None,
                 echo=False, as_dict=False):
  s = req.settings()
  n = s['n']
  settings = dict(temperature=s['temperature'], top_p=s['top_p'], top_k=s['top_k'], stop=s['stop'],
                  stop_ids=() if s['ignore_eos'] else engine.tok.stop_ids)
  # Choice i of a seeded request is row i of that seed (generation/sampler.py): the CLI's rows
  # of one prompt sampled n times with the same seed draw the same tokens.
  seeds = [s['seed']] * n
  created = int(time.time())
  rid = ('chatcmpl-' if chat else 'cmpl-') + secrets.token_hex(12)
  kind = 'chat.completion' if chat else 'text_completion'
  tok = engine.tok
  prompt_text = echoed = scored = None
  if echo:
    prompt_text = tok.decode(prompt, skip_special=True)
    if logprobs is not None:
      scored = await run_in_threadpool(engine.score, prompt)
      echoed = _echoed(tok, prompt, scored, logprobs)
  do_stream, include_usage = req.stream_opts()
  if do_stream:
    return await _stream_response(engine, name, prompt, max_tokens, settings, seeds, rid,
                                  created, chat, logprobs, include_usage, prompt_text, echoed)
  with _errors():
    if max_tokens == 0:
      results = [Result(finish_reason='length') for _ in range(n)]
    elif scored is not None and max_tokens == 1 and not s['temperature']:
      # A harness's log-likelihood request (echo, logprobs, one greedy token): that token is the
      # scoring pass's own prediction after the prompt, not a second prefill of the same prompt.
      results = [_scored_token(tok, scored[2], settings['stop_ids'], s['stop'])] * n
    else:
      results = await gather_or_cancel(*[complete(engine, prompt, max_tokens=max_tokens,
                                                  seed=seeds[i], row=i, **settings) for i in range(n)])
  choices = []
  for i, r in enumerate(results):
    if chat:
      choices.append({'index': i, 'message': {'role': 'assistant', 'content': r.text},
                      'logprobs': _chat_logprobs(tok, r.tokens, logprobs)
                      if logprobs is not None else None, 'finish_reason': r.finish_reason})
    else:
      text = (prompt_text or '') + r.text
      choices.append({'index': i, 'text': text, 'finish_reason': r.finish_reason,
                      'logprobs': None if logprobs is None else _completion_logprobs(
                          tok, r.tokens, logprobs, len(prompt_text or ''), echoed)})
  out = {'id': rid, 'object': kind, 'created': created, 'model': name, 'choices': choices,
         'usage': _usage(len(prompt), results)}
  return out if as_dict else JSONResponse(out)


async def _stream_response(engine, name, prompt, max_tokens, settings, seeds, rid, created, chat,
                           logprobs, include_usage, prompt_text, echoed):
  tok = engine.tok
  kind = 'chat.completion.chunk' if chat else 'text_completion'
  n = len(seeds)
  # Each choice's first event is awaited before the response starts: a full queue or a failed
  # prefill is still a status code (429, 500), not a broken stream.
  gens = [stream(engine, prompt, max_tokens=max_tokens, seed=seeds[i], row=i, **settings)
          for i in range(n)]
  firsts = []
  try:
    with _errors():
      for g in gens:
        firsts.append(await g.__anext__())
  except BaseException:
    for g in gens:
      await g.aclose()
    raise

  def chunk(i, *, delta=None, text=None, finish=None, lp=None):
    c = {'index': i, 'finish_reason': finish}
    if chat:
      c['delta'] = delta if delta is not None else {}
    else:
      c['text'] = text or ''
    c['logprobs'] = lp
    return {'id': rid, 'object': kind, 'created': created, 'model': name, 'choices': [c]}

  async def events():
    counts, offsets = [0] * n, [len(prompt_text or '')] * n
    pending, wake = collections.deque(), asyncio.Event()   # (choice, event) from every choice

    def put(item):
      pending.append(item)
      wake.set()

    async def pump(i, g, first):
      try:
        ev = first
        while True:
          put((i, ev))
          if isinstance(ev, str):
            return
          ev = await g.__anext__()
      except StopAsyncIteration:
        return
      except EngineError as e:
        put((i, RuntimeError(str(e))))

    tasks = []
    try:
      if chat:
        for i in range(n):
          yield _sse(chunk(i, delta={'role': 'assistant', 'content': ''}))
      elif prompt_text is not None:   # echo (a prompt of specials alone echoes '' and its logprobs)
        for i in range(n):
          lp = echoed if logprobs is not None else None
          yield _sse(chunk(i, text=prompt_text, lp=lp))
      tasks = [asyncio.create_task(pump(i, g, f)) for i, (g, f) in enumerate(zip(gens, firsts))]
      left = n
      while left:
        if not pending:
          wake.clear()
          await wake.wait()
          continue
        i, ev = pending.popleft()
        if isinstance(ev, RuntimeError):
          yield _sse({'error': {'message': str(ev), 'type': 'server_error'}})
          left -= 1
        elif isinstance(ev, str):
          left -= 1
          yield _sse(chunk(i, finish=ev))
        else:
          # Tokens already waiting for the same choice go out as one chunk (a client that reads
          # slower than the engine writes gets fewer, longer chunks, as OpenAI's may be).
          evs = [ev]
          while pending and pending[0][0] == i and isinstance(pending[0][1], Token):
            evs.append(pending.popleft()[1])
          counts[i] += len(evs)
          text = ''.join(e.text for e in evs)
          lp = None
          if logprobs is not None:
            lp = (_chat_logprobs(tok, evs, logprobs) if chat else
                  _completion_logprobs(tok, evs, logprobs, offsets[i]))
          offsets[i] += len(text)
          if text or (lp is not None and not (chat and all(e.end for e in evs))):
            yield _sse(chunk(i, delta={'content': text}, text=text, lp=lp))
      if include_usage:
        done = sum(counts)
        yield _sse({'id': rid, 'object': kind, 'created': created, 'model': name, 'choices': [],
                    'usage': {'prompt_tokens': len(prompt), 'completion_tokens': done,
                              'total_tokens': len(prompt) + done}})
      yield 'data: [DONE]\n\n'
    finally:
      # A client gone mid-stream: cancel the pumps and let each finish cancelling (which marks
      # its request cancelled and frees the slot) before closing the generators they drive.
      for t in tasks:
        t.cancel()
      await asyncio.gather(*tasks, return_exceptions=True)
      for g in gens:
        await g.aclose()

  return StreamingResponse(events(), media_type='text/event-stream',
                           headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})

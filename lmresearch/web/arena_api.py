"""/api/arena/*: one prompt answered by two anonymised models; the person votes; ratings.

A battle draws two different models at random and generates both replies at once (they share the
engines' decode batches with every other request); the names go back only with the vote. Ratings
are Bradley-Terry fitted to every vote (a tie or "both bad" is half a win each way), with
bootstrap 95% intervals over the votes, per model and per pair.
"""
from __future__ import annotations

import random

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from lmresearch.text import tokenizers
from lmresearch.web import rankings
from lmresearch.web.registry import complete, gather_or_cancel
from lmresearch.web.openai_api import ApiError, _errors, _num

VOTES = ('a', 'b', 'tie', 'both_bad')
DEFAULT_MAX_TOKENS = 128
MAX_PROMPT_CHARS = 4000


def _labeler(request: Request):
  auth = request.headers.get('authorization', '')
  token = auth[7:] if auth.lower().startswith('bearer ') else ''
  who = request.app.state.store.labeler_for_token(token) if token else None
  if who is None:
    raise ApiError(401, 'a valid labeler token is required (Authorization: Bearer <token>; '
                   '`python -m lmresearch.label add-labeler NAME` makes one).',
                   kind='authentication_error')
  return who


async def _body(request: Request) -> dict:
  try:
    body = await request.json()
  except ValueError:
    raise ApiError(400, 'the request body is not valid JSON.') from None
  if not isinstance(body, dict):
    raise ApiError(400, 'the request body must be a JSON object.')
  return body


def router() -> APIRouter:
  api = APIRouter(prefix='/api/arena')

  @api.post('/battle')
  async def battle(request: Request):
    who = _labeler(request)
    body = await _body(request)
    prompt = body.get('prompt')
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
      raise ApiError(400, f'prompt must be non-empty text of at most {MAX_PROMPT_CHARS} '
                     'characters.', 'prompt')
    temperature = _num('temperature', body.get('temperature'), 0.7, 0.0, 2.0)
    max_tokens = _num('max_tokens', body.get('max_tokens'), DEFAULT_MAX_TOKENS, 1, 1 << 20, int)
    registry = request.app.state.models
    names = registry.names()
    if len(names) < 2:
      raise ApiError(400, f'the arena needs two models under the workdir; it has {len(names)}.')
    pair = random.SystemRandom().sample(names, 2)
    engines = [await run_in_threadpool(registry.engine, n) for n in pair]
    msgs = [{'role': 'user', 'content': prompt}]
    jobs = []
    for e in engines:
      ids = tokenizers.generation_prompt(e.tok, msgs)
      n = min(max_tokens, e.max_len - len(ids))
      if n < 1:
        raise ApiError(400, f'the prompt ({len(ids)} tokens) leaves no room in the context of '
                       f'{e.max_len} tokens.', 'prompt')
      jobs.append(complete(e, ids, max_tokens=n, temperature=temperature,
                           stop_ids=e.tok.stop_ids))
    with _errors():
      a, b = await gather_or_cancel(*jobs)
    store = request.app.state.store
    bid = await run_in_threadpool(store.add_battle, who[0], prompt, pair[0], pair[1], a.text,
                                  b.text, {'temperature': temperature, 'max_tokens': max_tokens})
    return {'battle_id': bid, 'a': a.text, 'b': b.text}

  @api.post('/vote')
  async def vote(request: Request):
    who = _labeler(request)
    body = await _body(request)
    bid, choice = body.get('battle_id'), body.get('vote')
    if not isinstance(bid, int) or isinstance(bid, bool):
      raise ApiError(400, 'battle_id must be an integer.', 'battle_id')
    if choice not in VOTES:
      raise ApiError(400, f'vote must be one of {", ".join(VOTES)}.', 'vote')
    from lmresearch.web.store import StoreError
    try:
      model_a, model_b = await run_in_threadpool(request.app.state.store.vote, who[0], bid, choice)
    except StoreError as e:
      raise ApiError(e.status, str(e)) from None
    return {'model_a': model_a, 'model_b': model_b}

  @api.get('/ratings')
  async def ratings(request: Request):
    _labeler(request)
    votes = await run_in_threadpool(request.app.state.store.votes)
    return await run_in_threadpool(rankings.arena_table, votes)

  return api

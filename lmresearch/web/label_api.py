"""/api/label/*: a labeler's next item (responses in their own shuffled order), submissions.

Every route needs a labeler token (`Authorization: Bearer <token>`, from `python -m
lmresearch.label add-labeler NAME`); positions in rankings, ties and flags are the display
positions of the responses as /next listed them (the store maps them to the originals).

  GET  /api/label/me                  -> {name, done, left}
  GET  /api/label/next                -> {item_id, prompt, responses, done, left}
                                         ({item_id: null, done, left: 0} when none is left)
  POST /api/label/submit              {item_id, ranking, ties?, flags?, note?, seconds?}
                                      -> {submission_id, done, left}
  GET  /api/label/submissions         -> {submissions: [{submission_id, item_id, created}]}
  GET  /api/label/submissions/{id}    -> {submission_id, item_id, prompt, responses, ranking,
                                          ties, flags, note, seconds, created, updated}
  PUT  /api/label/submissions/{id}    {ranking, ties?, flags?, note?, seconds?} -> as GET

Errors: {"error": {"message", "type", ...}} with 400 (malformed or invalid), 401 (no valid
token), 403 (not yours), 404 (unknown), 409 (already submitted). The routes are plain `def`:
FastAPI runs them on its threadpool, so a store call (blocking SQLite, waiting on the write lock
under load) never holds up the event loop.
"""
from __future__ import annotations

from typing import Optional, Union

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from lmresearch.web.openai_api import ApiError
from lmresearch.web.store import MAX_NOTE, StoreError


class Ranking(BaseModel):
  """A ranking of display positions, best first; ties: [a, b] pairs next to each other in it;
  flags: {position: ['wrong' | 'unsafe' | 'off_topic', ...]}."""
  model_config = ConfigDict(extra='forbid')
  ranking: list[StrictInt]
  ties: list[list[StrictInt]] = Field(default_factory=list)
  flags: dict[str, list[StrictStr]] = Field(default_factory=dict)
  note: StrictStr = Field('', max_length=MAX_NOTE)
  seconds: Optional[Union[StrictInt, StrictFloat]] = None


class Submission(Ranking):
  item_id: StrictInt


def labeler(request: Request) -> tuple[int, str]:
  """(id, name) of the labeler whose token the request carries, else a 401."""
  auth = request.headers.get('authorization', '')
  scheme, _, token = auth.partition(' ')
  who = (request.app.state.store.labeler_for_token(token.strip())
         if scheme.lower() == 'bearer' and token.strip() else None)
  if who is None:
    raise ApiError(401, 'a valid labeler token is required (Authorization: Bearer <token>; '
                   '`python -m lmresearch.label add-labeler NAME` makes one).',
                   kind='authentication_error')
  return who


def _store_call(fn, *args, **kwargs):
  """A store call whose refusals become API errors with the store's status."""
  try:
    return fn(*args, **kwargs)
  except StoreError as e:
    raise ApiError(e.status, str(e), kind=e.kind) from None


def router() -> APIRouter:
  api = APIRouter(prefix='/api/label')

  @api.get('/me')
  def me(request: Request, who=Depends(labeler)):
    done, left = request.app.state.store.progress(who[0])
    return {'name': who[1], 'done': done, 'left': left}

  @api.get('/next')
  def next_item(request: Request, who=Depends(labeler)):
    store = request.app.state.store
    item = store.next_item(who[0])
    if item is None:
      return {'item_id': None, 'done': store.progress(who[0])[0], 'left': 0}
    return item

  @api.post('/submit')
  def submit(body: Submission, request: Request, who=Depends(labeler)):
    store = request.app.state.store
    sid = _store_call(store.submit, who[0], body.item_id, body.ranking, body.ties, body.flags,
                      body.note, body.seconds)
    done, left = store.progress(who[0])
    return {'submission_id': sid, 'done': done, 'left': left}

  @api.get('/submissions')
  def mine(request: Request, who=Depends(labeler)):
    return {'submissions': request.app.state.store.my_submissions(who[0])}

  @api.get('/submissions/{submission_id}')
  def get_submission(submission_id: int, request: Request, who=Depends(labeler)):
    return _store_call(request.app.state.store.get_submission, who[0], submission_id)

  @api.put('/submissions/{submission_id}')
  def update_submission(submission_id: int, body: Ranking, request: Request,
                        who=Depends(labeler)):
    return _store_call(request.app.state.store.update_submission, who[0], submission_id,
                       body.ranking, body.ties, body.flags, body.note, body.seconds)

  return api

"""The web app: pages, the labeling and arena APIs (labeler tokens) and the OpenAI-compatible API.

Every route that generates awaits the engine (generation/engine.py), which runs its decode loop on
its own thread, so a long generation never blocks the event loop that answers everyone else.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
MAX_BODY_BYTES = 256 * 1024   # a ranking with a note is a few KB; a chat is the model's context
PAGES = ('label', 'chat', 'arena')


class BodyLimit:
  """Refuses a request body over `max_body` bytes with 413 before any route reads it: by its
  declared Content-Length, or, for a chunked body that declares none, by counting what arrives
  (buffered up to the limit, then handed on whole)."""

  def __init__(self, app, max_body: int):
    self.app, self.max_body = app, max_body

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http':
      return await self.app(scope, receive, send)
    size = dict(scope['headers']).get(b'content-length')
    if size is not None:
      if not size.isdigit() or int(size) > self.max_body:
        return await self._refuse(send)
      return await self.app(scope, receive, send)
    chunks, total = [], 0
    while True:
      message = await receive()
      if message['type'] != 'http.request':   # the client left
        return
      total += len(message.get('body', b''))
      if total > self.max_body:
        return await self._refuse(send)
      chunks.append(message.get('body', b''))
      if not message.get('more_body'):
        break
    body, replayed = b''.join(chunks), False

    async def replay():
      nonlocal replayed
      if not replayed:
        replayed = True
        return {'type': 'http.request', 'body': body, 'more_body': False}
      return await receive()   # later calls: disconnect detection
    return await self.app(scope, replay, send)

  async def _refuse(self, send):
    msg = json.dumps({'error': {'message': f'request body over {self.max_body} bytes',
                                'type': 'invalid_request_error'}}).encode()
    await send({'type': 'http.response.start', 'status': 413,
                'headers': [(b'content-type', b'application/json'),
                            (b'content-length', str(len(msg)).encode())]})
    await send({'type': 'http.response.body', 'body': msg})


def create_app(workdir: Optional[str] = None, db: Optional[str] = None, *,
               api_key: Optional[str] = None, slots: int = 16, max_body: int = MAX_BODY_BYTES,
               models=None, warm: bool = False, max_len: int = 0,
               kv_cache_gb: Optional[float] = None) -> FastAPI:
  """The app for the runs under `workdir` (chat, arena, API) and the label store in `db`.
  `models`: a ready `models.Registry` (tests share one across apps); warm: each engine compiles
  all its programs when its model loads (`Engine.warm`); max_len, kv_cache_gb: the context each
  model is served at (`engine.context_length`)."""
  from lmresearch.web import registry as models_lib
  registry = models if models is not None else models_lib.Registry(
      workdir, slots=slots, warm=warm, max_len=max_len, kv_cache_gb=kv_cache_gb)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    yield
    registry.close()   # the engines' threads end with the server

  app = FastAPI(title='lmresearch', docs_url='/docs', redoc_url=None, lifespan=lifespan)
  app.state.models = registry
  app.state.store = None
  if db:
    from lmresearch.web.store import Store
    app.state.store = Store(db)

  app.add_middleware(BodyLimit, max_body=max_body)

  @app.exception_handler(RequestValidationError)
  async def invalid(request: Request, exc: RequestValidationError):
    msgs = '; '.join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}"
                     for e in exc.errors())
    return JSONResponse({'error': {'message': msgs or 'malformed request',
                                   'type': 'invalid_request_error'}}, status_code=400)

  from lmresearch.web import arena_api, openai_api

  @app.exception_handler(openai_api.ApiError)
  async def api_error(request: Request, exc: openai_api.ApiError):
    return exc.response()

  app.include_router(openai_api.router(api_key))
  if app.state.store is not None:
    from lmresearch.web import label_api
    app.include_router(label_api.router())
    app.include_router(arena_api.router())

  @app.get('/', include_in_schema=False)
  async def index():
    return RedirectResponse('/label' if app.state.store is not None else '/chat')

  for page in PAGES:
    def serve_page(page=page):
      return FileResponse(os.path.join(STATIC, f'{page}.html'))
    app.add_api_route(f'/{page}', serve_page, methods=['GET'], include_in_schema=False)
  app.mount('/static', StaticFiles(directory=STATIC), name='static')

  return app

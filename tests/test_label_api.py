"""/api/label/*: auth, the next item, submissions, and every refusal leaving the store unchanged."""
import contextlib
import json
import sqlite3

import pytest
from fastapi.testclient import TestClient

from lmresearch.web.app import create_app


def snapshot(path):
  with contextlib.closing(sqlite3.connect(path)) as db:
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: db.execute(f'SELECT * FROM {t}').fetchall() for t in names}


@pytest.fixture
def web(tmp_path):
  """(client, store, {name: auth headers}) of an app with no models and two items of 3."""
  empty = tmp_path / 'runs'
  empty.mkdir()
  app = create_app(workdir=str(empty), db=str(tmp_path / 'labels.sqlite'))
  store = app.state.store
  store.add_items([{'prompt': f'p{i}', 'responses': [f'r{i}.{j}' for j in range(3)]}
                   for i in range(2)], per_item=2)
  auth = {n: {'Authorization': f'Bearer {store.add_labeler(n)}'} for n in ('alice', 'bob')}
  with TestClient(app) as client:
    yield client, store, auth


def error(r, status):
  assert r.status_code == status, r.text
  body = r.json()['error']
  assert body['message'] and body['type']
  return body['message']


def test_a_labeler_ranks_items_and_revises_a_submission(web):
  client, store, auth = web
  h = auth['alice']
  assert client.get('/api/label/me', headers=h).json() == {'name': 'alice', 'done': 0, 'left': 2}
  item = client.get('/api/label/next', headers=h).json()
  assert item['item_id'] == 1 and item['prompt'] == 'p0' and len(item['responses']) == 3
  assert client.get('/api/label/next', headers=h).json() == item     # the same until submitted
  r = client.post('/api/label/submit', headers=h, json={
      'item_id': 1, 'ranking': [2, 0, 1], 'ties': [[0, 1]], 'flags': {'1': ['wrong']},
      'note': 'ok', 'seconds': 7})
  assert r.status_code == 200, r.text
  assert r.json() == {'submission_id': 1, 'done': 1, 'left': 1}
  mine = client.get('/api/label/submissions/1', headers=h).json()
  assert (mine['ranking'], mine['ties'], mine['flags'], mine['note'], mine['seconds']) == \
      ([2, 0, 1], [[0, 1]], {'1': ['wrong']}, 'ok', 7.0)
  assert mine['responses'] == item['responses']
  r = client.put('/api/label/submissions/1', headers=h, json={'ranking': [0, 1, 2]})
  assert r.status_code == 200 and r.json()['ranking'] == [0, 1, 2] and r.json()['ties'] == []
  assert client.get('/api/label/submissions', headers=h).json()['submissions'][0]['item_id'] == 1
  (s,) = store.submissions()
  shown = [int(t.split('.')[1]) for t in item['responses']]
  assert s['ranking'] == shown and s['note'] == ''                 # stored in original indices
  client.get('/api/label/next', headers=h)
  client.post('/api/label/submit', headers=h, json={'item_id': 2, 'ranking': [0, 1, 2]})
  assert client.get('/api/label/next', headers=h).json() == {'item_id': None, 'done': 2, 'left': 0}


def test_refusals_have_their_status_and_change_nothing(web):
  client, store, auth = web
  h, other = auth['alice'], auth['bob']
  client.get('/api/label/next', headers=h)
  client.get('/api/label/next', headers=other)
  sid = client.post('/api/label/submit', headers=other,
                    json={'item_id': 1, 'ranking': [0, 1, 2]}).json()['submission_id']
  good = {'item_id': 1, 'ranking': [0, 1, 2]}
  before = snapshot(store.path)
  for call, status, needle in [
      (lambda: client.get('/api/label/next'), 401, 'token'),
      (lambda: client.get('/api/label/me', headers={'Authorization': 'Bearer nope'}), 401, 'token'),
      (lambda: client.get('/api/label/me', headers={'Authorization': 'Basic x'}), 401, 'token'),
      (lambda: client.post('/api/label/submit', json=good), 401, 'token'),
      (lambda: client.post('/api/label/submit', json=good,
                           headers={'Authorization': h['Authorization'] + 'x'}), 401, 'token'),
      (lambda: client.get(f'/api/label/submissions/{sid}', headers=h), 403, 'not yours'),
      (lambda: client.put(f'/api/label/submissions/{sid}', headers=h, json={'ranking': [2, 1, 0]}),
       403, 'not yours'),
      (lambda: client.get('/api/label/submissions/99', headers=h), 404, 'no submission'),
      (lambda: client.post('/api/label/submit', headers=h, json={**good, 'item_id': 99}), 404,
       'no item 99'),
      (lambda: client.post('/api/label/submit', headers=h, json={**good, 'item_id': 2}), 403,
       'not assigned'),
      (lambda: client.post('/api/label/submit', headers=other, json=good), 409, 'already'),
      (lambda: client.post('/api/label/submit', headers=h, json={**good, 'ranking': [0, 1, 1]}),
       400, 'exactly once'),
      (lambda: client.post('/api/label/submit', headers=h, json={**good, 'ranking': [0, 1]}), 400,
       'exactly once'),
      (lambda: client.post('/api/label/submit', headers=h, json={**good, 'ties': [[0, 2]]}), 400,
       'next to each other'),
      (lambda: client.post('/api/label/submit', headers=h, json={**good, 'flags': {'0': ['meh']}}),
       400, 'labels from'),
      (lambda: client.post('/api/label/submit', headers=h, json={**good, 'item_id': '1'}), 400,
       'item_id'),
      (lambda: client.post('/api/label/submit', headers=h, json={**good, 'ranking': '012'}), 400,
       'ranking'),
      (lambda: client.post('/api/label/submit', headers=h, json={**good, 'note': 'x' * 4001}), 400,
       'note'),
      (lambda: client.post('/api/label/submit', headers=h, json={'ranking': [0, 1, 2]}), 400,
       'item_id'),
      (lambda: client.post('/api/label/submit', headers=h, json={**good, 'extra': 1}), 400,
       'extra'),
      (lambda: client.post('/api/label/submit', headers=h, json=[1, 2]), 400, 'body'),
      (lambda: client.post('/api/label/submit', headers={**h, 'Content-Type': 'application/json'},
                           content=b'{"item_id": 1, "ranking": [0, 1, 2'), 400, 'JSON'),
      (lambda: client.post('/api/label/submit', headers={**h, 'Content-Type': 'text/plain'},
                           content=b'item 1: 0 > 1 > 2'), 400, 'body'),
      (lambda: client.post('/api/label/submit', headers=h), 400, 'body'),
      (lambda: client.post('/api/label/submit', headers={**h, 'Content-Type': 'application/json'},
                           content=json.dumps({**good, 'note': 'x' * 300_000})), 413, 'over'),
  ]:
    assert needle in error(call(), status)
    assert snapshot(store.path) == before


def test_an_arena_battle_checks_its_settings_before_any_model(web):
  """The arena's battle request: its numbers are checked as the OpenAI API's are (one 400
  naming the field); with settings in range, an app with no models says it needs two."""
  client, _, auth = web
  post = lambda **body: client.post('/api/arena/battle', json=body, headers=auth['alice'])
  assert 'temperature must be a number' in error(post(prompt='Hi', temperature='hot'), 400)
  assert 'max_tokens=0 is out of range' in error(post(prompt='Hi', max_tokens=0), 400)
  assert 'needs two models' in error(post(prompt='Hi', temperature=0.7, max_tokens=12), 400)

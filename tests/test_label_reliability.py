"""The label server under load and through a crash: a real `python -m lmresearch.serve` with no
models, many labelers at once, and `kill -9` in the middle of their work."""
import contextlib
import random
import signal
import sqlite3
import sys
import threading
import time

import httpx

from conftest import ROOT
from servers import free_port, running
from lmresearch.web.store import Store

K = 4


@contextlib.contextmanager
def server(tmp_path, db):
  """A label-only server (a workdir with no runs) on a free port: yields (url, process)."""
  workdir = tmp_path / 'runs'
  workdir.mkdir(exist_ok=True)
  port = free_port()
  with running([sys.executable, '-m', 'lmresearch.serve', f'--workdir={workdir}', f'--db={db}',
                f'--port={port}'], port, tmp_path / f'server-{port}.log', cwd=ROOT,
               probe='/api/label/me', timeout=60, stop_wait=10) as served:
    yield served


def setup_store(db, items: int, labelers: int, per_item: int = 1) -> list[str]:
  store = Store(db)
  store.add_items([{'prompt': f'prompt {i}', 'responses': [f'reply {i}.{j}' for j in range(K)]}
                   for i in range(items)], per_item=per_item)
  tokens = [store.add_labeler(f'labeler{n}') for n in range(labelers)]
  store.close()
  return tokens


def label(url, token, n, seed, acked, served, stop=None):
  """Ranks up to n items as one labeler; records each (item, submission) the server acknowledged
  and the last item it served. Stops quietly when the server goes away."""
  rng = random.Random(seed)
  h = {'Authorization': f'Bearer {token}'}
  with httpx.Client(base_url=url, headers=h, timeout=60) as client:
    try:
      for _ in range(n):
        if stop is not None and stop.is_set():
          return
        item = client.get('/api/label/next').json()
        if item['item_id'] is None:
          return
        served.append(item['item_id'])
        ranking = rng.sample(range(K), K)
        r = client.post('/api/label/submit', json={'item_id': item['item_id'], 'ranking': ranking,
                                                    'ties': [ranking[:2]], 'seconds': 1.5})
        assert r.status_code == 200, r.text
        acked.append((item['item_id'], r.json()['submission_id']))
    except httpx.TransportError:
      return


def run_threads(targets):
  threads = [threading.Thread(target=t) for t in targets]
  for t in threads:
    t.start()
  return threads


def rows(db):
  with contextlib.closing(sqlite3.connect(db)) as c:
    return c.execute('SELECT id, labeler_id, item_id FROM submissions').fetchall()


def test_twenty_concurrent_labelers_end_with_exactly_their_submissions(tmp_path):
  db = str(tmp_path / 'labels.sqlite')
  tokens = setup_store(db, items=1000, labelers=20)
  acked = [[] for _ in tokens]
  errors = []

  def work(n):
    try:
      label(url, tokens[n], 50, n, acked[n], [])
    except Exception as e:   # reported below, with the thread it came from
      errors.append((n, e))

  with server(tmp_path, db) as (url, _):
    start = time.time()
    for t in run_threads([lambda n=n: work(n) for n in range(20)]):
      t.join()
    took = time.time() - start
  assert not errors, errors
  got = rows(db)
  assert len(got) == 1000 and sum(map(len, acked)) == 1000
  assert len({(lab, item) for _, lab, item in got}) == 1000
  assert len({item for _, _, item in got}) == 1000          # per_item=1: each item exactly once
  assert {sid for a in acked for _, sid in a} == {sid for sid, _, _ in got}
  print(f'1000 submissions from 20 labelers in {took:.1f} s')


def test_acknowledged_submissions_survive_kill_9_and_labelers_continue(tmp_path):
  db = str(tmp_path / 'labels.sqlite')
  n = 6
  tokens = setup_store(db, items=400, labelers=n, per_item=2)
  acked, served = [[] for _ in range(n)], [[] for _ in range(n)]
  errors = []

  def work(i):
    try:
      label(url, tokens[i], 1000, i, acked[i], served[i])
    except Exception as e:   # reported below, with the thread it came from
      errors.append((i, e))

  with server(tmp_path, db) as (url, proc):
    threads = run_threads([lambda i=i: work(i) for i in range(n)])
    deadline = time.time() + 60
    while sum(map(len, acked)) < 60 and time.time() < deadline:
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)   # mid-run: requests in flight on every thread
    proc.wait()
    for t in threads:
      t.join()
  assert not errors, errors
  assert sum(map(len, acked)) >= 60

  got = rows(db)
  by_id = {sid: (lab, item) for sid, lab, item in got}
  for i in range(n):
    for item, sid in acked[i]:
      assert by_id.get(sid) == (i + 1, item)                # every acknowledged one is there
  with server(tmp_path, db) as (url, _):
    for i in range(n):
      done = {item for _, lab, item in got if lab == i + 1}
      nxt = httpx.get(f'{url}/api/label/next', headers={'Authorization': f'Bearer {tokens[i]}'},
                      timeout=30).json()
      assert nxt['item_id'] not in done and nxt['done'] == len(done)
      if served[i] and served[i][-1] not in done:
        assert nxt['item_id'] == served[i][-1]              # the item they were on, again

"""The label store: one SQLite file holding labelers, items to rank, assignments, submissions and
the arena's battles and votes.

Durability and concurrency: WAL journal with synchronous=FULL, so a submission the server has
acknowledged survives `kill -9` (and a power cut); every write is one `BEGIN IMMEDIATE`
transaction, which takes the write lock up front, so concurrent requests queue on the busy timeout
instead of failing or interleaving. Each thread gets its own connection (sqlite3 connections must
not be shared across threads).

A labeler sees an item's responses in a display order shuffled for them (recorded with the
assignment) and ranks display positions; the store maps rankings, ties and flags back to the
original response indices, so a position-bias in the page never becomes a bias in the data.

The schema is versioned: `MIGRATIONS[v - 1]` brings a database from version v - 1 to v, each in
one transaction, applied when a Store opens the file. Every query is parameterised.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from lmresearch.data.formats import MAX_K

LEASE_SECONDS = 30 * 60   # an assignment not submitted within this frees its slot for others
BUSY_TIMEOUT_MS = 30_000
MAX_NOTE = 4000
MAX_NAME = 100
FLAGS = ('wrong', 'unsafe', 'off_topic')
VOTES = ('a', 'b', 'tie', 'both_bad')


class StoreError(ValueError):
  """A request the store refuses; `status` is the HTTP status the API answers with."""
  status = 400
  kind = 'invalid_request_error'


class Invalid(StoreError):
  status = 400


class Forbidden(StoreError):
  status = 403
  kind = 'permission_error'


class NotFound(StoreError):
  status = 404
  kind = 'not_found_error'


class Conflict(StoreError):
  status = 409
  kind = 'conflict_error'


class SchemaError(ValueError):
  """The file is not a label store this code can open (not SQLite, or a newer schema)."""


# ---- schema ----------------------------------------------------------------------------------
MIGRATIONS: list[tuple[str, ...]] = [
    (  # v1: labeling
        """CREATE TABLE labelers (
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL UNIQUE,
             token_sha256 TEXT NOT NULL UNIQUE,
             created REAL NOT NULL)""",
        """CREATE TABLE items (
             id INTEGER PRIMARY KEY,
             prompt TEXT NOT NULL,
             responses TEXT NOT NULL,          -- JSON list of strings
             gold TEXT,                        -- JSON list of floats, or NULL
             meta TEXT NOT NULL DEFAULT '{}',  -- JSON object
             per_item INTEGER NOT NULL CHECK (per_item >= 1),
             source TEXT NOT NULL DEFAULT '',
             created REAL NOT NULL)""",
        """CREATE TABLE assignments (
             id INTEGER PRIMARY KEY,
             labeler_id INTEGER NOT NULL REFERENCES labelers(id),
             item_id INTEGER NOT NULL REFERENCES items(id),
             display_order TEXT NOT NULL,      -- JSON: display position -> original index
             leased REAL NOT NULL,             -- last handed out (the lease runs from here)
             created REAL NOT NULL,
             UNIQUE (labeler_id, item_id))""",
        'CREATE INDEX assignments_item ON assignments(item_id)',
        """CREATE TABLE submissions (
             id INTEGER PRIMARY KEY,
             assignment_id INTEGER NOT NULL UNIQUE REFERENCES assignments(id),
             labeler_id INTEGER NOT NULL REFERENCES labelers(id),
             item_id INTEGER NOT NULL REFERENCES items(id),
             ranking TEXT NOT NULL,            -- JSON: original indices, best first
             ties TEXT NOT NULL,               -- JSON: [[i, j], ...] original indices
             flags TEXT NOT NULL,              -- JSON: {original index: [label, ...]}
             display_order TEXT NOT NULL,      -- JSON: as shown
             note TEXT NOT NULL,
             seconds REAL,
             created REAL NOT NULL,
             updated REAL,
             UNIQUE (labeler_id, item_id))""",
        'CREATE INDEX submissions_item ON submissions(item_id)',
    ),
    (  # v2: the arena
        """CREATE TABLE battles (
             id INTEGER PRIMARY KEY,
             voter_id INTEGER NOT NULL REFERENCES labelers(id),
             prompt TEXT NOT NULL,
             model_a TEXT NOT NULL,
             model_b TEXT NOT NULL,
             response_a TEXT NOT NULL,
             response_b TEXT NOT NULL,
             settings TEXT NOT NULL,           -- JSON: sampling settings
             created REAL NOT NULL)""",
        """CREATE TABLE votes (
             battle_id INTEGER PRIMARY KEY REFERENCES battles(id),
             voter_id INTEGER NOT NULL REFERENCES labelers(id),
             vote TEXT NOT NULL CHECK (vote IN ('a', 'b', 'tie', 'both_bad')),
             created REAL NOT NULL)""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


def hash_token(token: str) -> str:
  return hashlib.sha256(token.encode('utf-8')).hexdigest()


def display_order(labeler_id: int, item_id: int, k: int) -> list[int]:
  """Display position -> original response index, shuffled per (labeler, item): reproducible, and
  different labelers see one item's responses in different orders."""
  order = list(range(k))
  random.Random(f'label-order:{labeler_id}:{item_id}').shuffle(order)
  return order


class Store:
  """The label store in the SQLite file `path` (created, or migrated to the latest schema).

  Args:
    path: the database file; its directory must exist.
    schema: migrate only up to this version (tests of the migrations); default: the latest.
    lease_seconds: how long a handed-out item holds its slot before others may take it.
  """

  def __init__(self, path: str, *, schema: Optional[int] = None,
               lease_seconds: float = LEASE_SECONDS):
    self.path = os.fspath(path)
    self.lease_seconds = lease_seconds
    self._local = threading.local()
    try:
      self._migrate(SCHEMA_VERSION if schema is None else schema)
    except sqlite3.DatabaseError as e:
      self.close()
      raise self._unopenable(e) from None

  def _unopenable(self, e: Exception) -> SchemaError:
    return SchemaError(f'{self.path}: cannot open as a label store ({e}); give --db a new file '
                       'name (its directory must exist) or an existing label store.')

  # ---- connections and transactions ---------------------------------------------------------
  def _conn(self) -> sqlite3.Connection:
    conn = getattr(self._local, 'conn', None)
    if conn is None:
      try:
        # isolation_level=None: no implicit transactions; `_write`/`_read` open them explicitly.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute('PRAGMA journal_mode=WAL')
        conn.execute('PRAGMA synchronous=FULL')
        conn.execute(f'PRAGMA busy_timeout={BUSY_TIMEOUT_MS}')
        conn.execute('PRAGMA foreign_keys=ON')
      except sqlite3.DatabaseError as e:
        raise self._unopenable(e) from None
      self._local.conn = conn
    return conn

  @contextmanager
  def _write(self) -> Iterator[sqlite3.Connection]:
    """One write transaction: the write lock is taken at BEGIN (IMMEDIATE), so a read inside it
    never goes stale before the write; any exception rolls everything back."""
    conn = self._conn()
    conn.execute('BEGIN IMMEDIATE')
    try:
      yield conn
    except BaseException:
      conn.execute('ROLLBACK')
      raise
    conn.execute('COMMIT')

  @contextmanager
  def _read(self) -> Iterator[sqlite3.Connection]:
    """Several reads from one snapshot."""
    conn = self._conn()
    conn.execute('BEGIN')
    try:
      yield conn
    finally:
      conn.execute('COMMIT')

  def close(self) -> None:
    """Closes this thread's connection (others close when their threads' connections are
    collected)."""
    conn = getattr(self._local, 'conn', None)
    if conn is not None:
      conn.close()
      self._local.conn = None

  def _migrate(self, target: int) -> None:
    with self._write() as db:
      db.execute('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)')
      row = db.execute('SELECT version FROM schema_version').fetchone()
      version = row[0] if row else 0
      if version > SCHEMA_VERSION:
        raise SchemaError(f'{self.path}: label store schema version {version} is newer than this '
                          f'code knows ({SCHEMA_VERSION}); update lmresearch to open it.')
      if version == 0 and db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name != "
                                      "'schema_version'").fetchone()[0]:
        raise SchemaError(f'{self.path}: an SQLite database that is not a label store; give '
                          '--db another file.')
      for v in range(version, target):
        for statement in MIGRATIONS[v]:
          db.execute(statement)
      if row is None:
        db.execute('INSERT INTO schema_version (version) VALUES (?)', (max(version, target),))
      elif target > version:
        db.execute('UPDATE schema_version SET version = ?', (target,))

  def schema_version(self) -> int:
    return self._conn().execute('SELECT version FROM schema_version').fetchone()[0]

  # ---- labelers -------------------------------------------------------------------------------
  def add_labeler(self, name: str) -> str:
    """Adds a labeler; returns their access token, which is shown only now (only its SHA-256 is
    stored). A name already taken is a `Conflict` (a ValueError) naming it."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or \
        not name.isprintable():
      raise Invalid(f'labeler name {name!r}: give 1..{MAX_NAME} printable characters.')
    name = name.strip()
    token = secrets.token_urlsafe(24)
    with self._write() as db:
      if db.execute('SELECT 1 FROM labelers WHERE name = ?', (name,)).fetchone():
        raise Conflict(f'a labeler named {name!r} already exists; pick another name.')
      db.execute('INSERT INTO labelers (name, token_sha256, created) VALUES (?, ?, ?)',
                 (name, hash_token(token), time.time()))
    return token

  def labeler_for_token(self, token: Optional[str]) -> Optional[tuple[int, str]]:
    """(id, name) of the labeler holding `token`, or None."""
    if not token:
      return None
    row = self._conn().execute('SELECT id, name FROM labelers WHERE token_sha256 = ?',
                               (hash_token(token),)).fetchone()
    return (row['id'], row['name']) if row else None

  def labelers(self) -> list[tuple[int, str]]:
    return [(r['id'], r['name']) for r in
            self._conn().execute('SELECT id, name FROM labelers ORDER BY id')]

  # ---- items and assignments ------------------------------------------------------------------
  def add_items(self, items, per_item: int = 1, source: str = '') -> list[int]:
    """Adds items to rank, each `{'prompt': str, 'responses': [str, ...] (2..16), 'gold':
    [float, ...] or None (the world's gold quality per response), 'meta': dict}`; each is to be
    ranked by `per_item` different labelers. Returns their ids. All or nothing."""
    if not isinstance(per_item, int) or isinstance(per_item, bool) or per_item < 1:
      raise Invalid(f'per_item={per_item!r}: give a positive integer (labelers per item).')
    rows = [_item_row(i, item) for i, item in enumerate(items)]
    now = time.time()
    with self._write() as db:
      return [db.execute('INSERT INTO items (prompt, responses, gold, meta, per_item, source, '
                         'created) VALUES (?, ?, ?, ?, ?, ?, ?)', row + (per_item, source, now)
                         ).lastrowid for row in rows]

  # An item is open to a labeler when they were never assigned it and its submissions plus live
  # leases of others leave room; `?1` is the labeler, `?2` the time before which leases lapsed.
  _OPEN = """NOT EXISTS (SELECT 1 FROM assignments a WHERE a.item_id = i.id AND a.labeler_id = ?1)
             AND (SELECT COUNT(*) FROM assignments a
                  LEFT JOIN submissions s ON s.assignment_id = a.id
                  WHERE a.item_id = i.id AND (s.id IS NOT NULL OR a.leased > ?2)) < i.per_item"""
  _UNFINISHED = """SELECT a.* FROM assignments a LEFT JOIN submissions s ON s.assignment_id = a.id
                   WHERE a.labeler_id = ? AND s.id IS NULL ORDER BY a.id LIMIT 1"""

  def next_item(self, labeler_id: int) -> Optional[dict]:
    """The item this labeler ranks next: their unfinished assignment if they have one (after a
    restart, everyone continues where they were; its lease is renewed even if it lapsed, so work
    in progress is never refused), else the lowest-id item open to them, assigned now with a
    display order shuffled for them. None when nothing is left.

    Returns `{'item_id', 'prompt', 'responses': [texts in display order], 'done', 'left'}`
    ('left' counts this item).
    """
    now = time.time()
    with self._write() as db:
      a = db.execute(self._UNFINISHED, (labeler_id,)).fetchone()
      if a is not None:
        db.execute('UPDATE assignments SET leased = ? WHERE id = ?', (now, a['id']))
        item_id, order = a['item_id'], json.loads(a['display_order'])
        item = db.execute('SELECT prompt, responses FROM items WHERE id = ?', (item_id,)).fetchone()
      else:
        item = db.execute(f'SELECT id, prompt, responses FROM items i WHERE {self._OPEN} '
                          'ORDER BY i.id LIMIT 1',
                          (labeler_id, now - self.lease_seconds)).fetchone()
        if item is None:
          return None
        item_id = item['id']
        order = display_order(labeler_id, item_id, len(json.loads(item['responses'])))
        db.execute('INSERT INTO assignments (labeler_id, item_id, display_order, leased, created) '
                   'VALUES (?, ?, ?, ?, ?)', (labeler_id, item_id, json.dumps(order), now, now))
      done, left = self._progress(db, labeler_id, now)
    responses = json.loads(item['responses'])
    return {'item_id': item_id, 'prompt': item['prompt'],
            'responses': [responses[i] for i in order], 'done': done, 'left': left}

  def _progress(self, db, labeler_id: int, now: float) -> tuple[int, int]:
    done = db.execute('SELECT COUNT(*) FROM submissions WHERE labeler_id = ?',
                      (labeler_id,)).fetchone()[0]
    unfinished = db.execute(f'SELECT COUNT(*) FROM ({self._UNFINISHED})',
                            (labeler_id,)).fetchone()[0]
    open_ = db.execute(f'SELECT COUNT(*) FROM items i WHERE {self._OPEN}',
                       (labeler_id, now - self.lease_seconds)).fetchone()[0]
    return done, unfinished + open_

  def progress(self, labeler_id: int) -> tuple[int, int]:
    """(items this labeler has submitted, items still open to them incl. one in progress)."""
    with self._read() as db:
      return self._progress(db, labeler_id, time.time())

  # ---- submissions ----------------------------------------------------------------------------
  def submit(self, labeler_id: int, item_id: int, ranking, ties=(), flags=None, note: str = '',
             seconds: Optional[float] = None) -> int:
    """Records a labeler's ranking of an item assigned to them; returns the submission id.

    Args:
      ranking: display positions, best first: a permutation of range(K).
      ties: [[a, b], ...] display positions ranked next to each other that are equally good
        (a chain [a, b], [b, c] ties all three).
      flags: {display position (int or str): [labels from FLAGS]}.
      note: free text, at most 4000 characters.
      seconds: time the labeler spent (as their page measured it).

    Raises NotFound (no such item), Forbidden (not assigned to this labeler), Conflict (already
    submitted: revise it with `update_submission`), Invalid (a malformed ranking, tie, flag,
    note or time). Nothing is written unless everything is valid.
    """
    item_id = _int(item_id, 'item_id')
    now = time.time()
    with self._write() as db:
      if not db.execute('SELECT 1 FROM items WHERE id = ?', (item_id,)).fetchone():
        raise NotFound(f'no item {item_id}.')
      a = db.execute('SELECT id, display_order FROM assignments WHERE labeler_id = ? AND '
                     'item_id = ?', (labeler_id, item_id)).fetchone()
      if a is None:
        raise Forbidden(f'item {item_id} is not assigned to you; rank the item /api/label/next '
                        'gives you.')
      old = db.execute('SELECT id FROM submissions WHERE assignment_id = ?', (a['id'],)).fetchone()
      if old is not None:
        raise Conflict(f'item {item_id} is already submitted (submission {old["id"]}); revise it '
                       f'with PUT /api/label/submissions/{old["id"]}.')
      order = json.loads(a['display_order'])
      rank, tie, flag, note, seconds = _labels(order, ranking, ties, flags, note, seconds)
      return db.execute(
          'INSERT INTO submissions (assignment_id, labeler_id, item_id, ranking, ties, flags, '
          'display_order, note, seconds, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
          (a['id'], labeler_id, item_id, rank, tie, flag, a['display_order'], note, seconds,
           now)).lastrowid

  def _own_submission(self, db, labeler_id: int, submission_id) -> sqlite3.Row:
    submission_id = _int(submission_id, 'submission id')
    row = db.execute('SELECT s.*, i.prompt, i.responses FROM submissions s JOIN items i ON '
                     'i.id = s.item_id WHERE s.id = ?', (submission_id,)).fetchone()
    if row is None:
      raise NotFound(f'no submission {submission_id}.')
    if row['labeler_id'] != labeler_id:
      raise Forbidden(f'submission {submission_id} is not yours.')
    return row

  def get_submission(self, labeler_id: int, submission_id: int) -> dict:
    """One of this labeler's own submissions as they saw it: `{'submission_id', 'item_id',
    'prompt', 'responses' (display order), 'ranking', 'ties', 'flags' (display positions),
    'note', 'seconds', 'created', 'updated'}`. Another's: Forbidden; unknown: NotFound."""
    with self._read() as db:
      return _as_displayed(self._own_submission(db, labeler_id, submission_id))

  def update_submission(self, labeler_id: int, submission_id: int, ranking, ties=(), flags=None,
                        note: str = '', seconds: Optional[float] = None) -> dict:
    """Replaces the ranking, ties, flags and note of one of this labeler's own submissions
    (arguments as `submit`; `seconds` None keeps the recorded time). Returns `get_submission`'s
    view of it."""
    with self._write() as db:
      row = self._own_submission(db, labeler_id, submission_id)
      order = json.loads(row['display_order'])
      rank, tie, flag, note, secs = _labels(order, ranking, ties, flags, note, seconds)
      db.execute('UPDATE submissions SET ranking = ?, ties = ?, flags = ?, note = ?, '
                 'seconds = ?, updated = ? WHERE id = ?',
                 (rank, tie, flag, note, row['seconds'] if secs is None else secs, time.time(),
                  row['id']))
      return _as_displayed(self._own_submission(db, labeler_id, submission_id))

  def my_submissions(self, labeler_id: int) -> list[dict]:
    """This labeler's submissions, newest first: [{'submission_id', 'item_id', 'created'}]."""
    return [{'submission_id': r['id'], 'item_id': r['item_id'], 'created': r['created']}
            for r in self._conn().execute('SELECT id, item_id, created FROM submissions WHERE '
                                          'labeler_id = ? ORDER BY id DESC', (labeler_id,))]

  def submissions(self) -> Iterator[dict]:
    """Every submission in original response indices, by item: `{'submission_id', 'item_id',
    'labeler_id', 'labeler', 'prompt', 'responses', 'gold', 'meta', 'ranking' (best first),
    'ties' ([[i, j]]), 'flags' ({index: [labels]}), 'display_order', 'note', 'seconds',
    'created', 'updated'}`."""
    rows = self._conn().execute(
        'SELECT s.*, l.name, i.prompt, i.responses, i.gold, i.meta FROM submissions s '
        'JOIN items i ON i.id = s.item_id JOIN labelers l ON l.id = s.labeler_id '
        'ORDER BY s.item_id, s.id').fetchall()
    for r in rows:
      yield {'submission_id': r['id'], 'item_id': r['item_id'], 'labeler_id': r['labeler_id'],
             'labeler': r['name'], 'prompt': r['prompt'], 'responses': json.loads(r['responses']),
             'gold': json.loads(r['gold']) if r['gold'] is not None else None,
             'meta': json.loads(r['meta']), 'ranking': json.loads(r['ranking']),
             'ties': json.loads(r['ties']), 'flags': json.loads(r['flags']),
             'display_order': json.loads(r['display_order']), 'note': r['note'],
             'seconds': r['seconds'], 'created': r['created'], 'updated': r['updated']}

  def stats(self) -> dict:
    """Counts: items, complete items (submissions >= per_item), labelers, submissions, open
    assignments, battles, votes; and per labeler {'name', 'done', 'left'}."""
    now = time.time()
    with self._read() as db:
      one = lambda sql: db.execute(sql).fetchone()[0]
      out = {'items': one('SELECT COUNT(*) FROM items'),
             'complete_items': one('SELECT COUNT(*) FROM items i WHERE (SELECT COUNT(*) FROM '
                                   'submissions s WHERE s.item_id = i.id) >= i.per_item'),
             'labelers': one('SELECT COUNT(*) FROM labelers'),
             'submissions': one('SELECT COUNT(*) FROM submissions'),
             'in_progress': one('SELECT COUNT(*) FROM assignments a WHERE NOT EXISTS (SELECT 1 '
                                'FROM submissions s WHERE s.assignment_id = a.id)')}
      if self.schema_version() >= 2:
        out['battles'] = one('SELECT COUNT(*) FROM battles')
        out['votes'] = one('SELECT COUNT(*) FROM votes')
      out['per_labeler'] = []
      for r in db.execute('SELECT id, name FROM labelers ORDER BY id').fetchall():
        done, left = self._progress(db, r['id'], now)
        out['per_labeler'].append({'name': r['name'], 'done': done, 'left': left})
    return out

  # ---- the arena ------------------------------------------------------------------------------
  def add_battle(self, voter_id: int, prompt: str, model_a: str, model_b: str, response_a: str,
                 response_b: str, settings: dict) -> int:
    """Records two models' answers to one prompt, shown to `voter_id` (who alone may vote)."""
    with self._write() as db:
      return db.execute(
          'INSERT INTO battles (voter_id, prompt, model_a, model_b, response_a, response_b, '
          'settings, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
          (voter_id, prompt, model_a, model_b, response_a, response_b,
           json.dumps(settings or {}), time.time())).lastrowid

  def vote(self, voter_id: int, battle_id: int, vote: str) -> tuple[str, str]:
    """Records the vote ('a', 'b', 'tie' or 'both_bad') on a battle; returns (model_a, model_b),
    revealed only now. Another voter's battle: Forbidden; voted already: Conflict; unknown:
    NotFound."""
    battle_id = _int(battle_id, 'battle_id')
    if vote not in VOTES:
      raise Invalid(f'vote {vote!r}: give one of {", ".join(VOTES)}.')
    with self._write() as db:
      b = db.execute('SELECT voter_id, model_a, model_b FROM battles WHERE id = ?',
                     (battle_id,)).fetchone()
      if b is None:
        raise NotFound(f'no battle {battle_id}.')
      if b['voter_id'] != voter_id:
        raise Forbidden(f'battle {battle_id} was shown to someone else.')
      if db.execute('SELECT 1 FROM votes WHERE battle_id = ?', (battle_id,)).fetchone():
        raise Conflict(f'battle {battle_id} already has your vote.')
      db.execute('INSERT INTO votes (battle_id, voter_id, vote, created) VALUES (?, ?, ?, ?)',
                 (battle_id, voter_id, vote, time.time()))
    return b['model_a'], b['model_b']

  def votes(self) -> list[tuple[str, str, str]]:
    """Every vote as (model_a, model_b, vote), oldest first."""
    return [tuple(r) for r in self._conn().execute(
        'SELECT b.model_a, b.model_b, v.vote FROM votes v JOIN battles b ON b.id = v.battle_id '
        'ORDER BY v.created, v.battle_id')]


# ---- validation ------------------------------------------------------------------------------
def _int(x, what: str) -> int:
  if isinstance(x, bool) or not isinstance(x, int):
    raise Invalid(f'{what} {x!r}: give an integer.')
  return x


def _item_row(n: int, item) -> tuple:
  """An item as (prompt, responses, gold, meta) JSON columns, or Invalid naming item n."""
  where = f'item {n}'
  if not isinstance(item, dict):
    raise Invalid(f'{where}: expected a dict with "prompt" and "responses".')
  prompt, responses = item.get('prompt'), item.get('responses')
  if not isinstance(prompt, str):
    raise Invalid(f'{where}: "prompt" must be a string.')
  if not isinstance(responses, (list, tuple)) or not all(isinstance(r, str) for r in responses):
    raise Invalid(f'{where}: "responses" must be a list of strings.')
  if not 2 <= len(responses) <= MAX_K:
    raise Invalid(f'{where}: {len(responses)} responses; a ranking has 2..{MAX_K}.')
  gold = item.get('gold')
  if gold is not None:
    if not isinstance(gold, (list, tuple)) or len(gold) != len(responses) or not all(
        isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g) for g in gold):
      raise Invalid(f'{where}: "gold" must be None or one finite number per response.')
    gold = json.dumps([float(g) for g in gold])
  meta = item.get('meta') or {}
  if not isinstance(meta, dict):
    raise Invalid(f'{where}: "meta" must be a dict.')
  return prompt, json.dumps(list(responses)), gold, json.dumps(meta)


def _position(x, k: int, what: str, text: bool = False) -> int:
  """A display position 0..k-1 (`text`: also as a string of digits, as JSON object keys are)."""
  if text and isinstance(x, str) and x.isdigit():
    x = int(x)
  if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < k:
    raise Invalid(f'{what} {x!r}: give a display position 0..{k - 1}.')
  return x


def _labels(order: list[int], ranking, ties, flags, note, seconds) -> tuple:
  """A labeler's ranking, ties and flags (display positions) validated and mapped to original
  response indices, as the JSON columns; plus the note and seconds checked."""
  k = len(order)
  if not isinstance(ranking, (list, tuple)) or len(ranking) != k or sorted(
      _position(p, k, 'ranking entry') for p in ranking) != list(range(k)):
    raise Invalid(f'ranking {ranking!r}: give each display position 0..{k - 1} exactly once, '
                  'best first.')
  place = {p: n for n, p in enumerate(ranking)}
  tie_pairs = set()
  for t in ties or ():
    if not isinstance(t, (list, tuple)) or len(t) != 2:
      raise Invalid(f'tie {t!r}: give a pair [a, b] of display positions.')
    a, b = (_position(p, k, 'tie position') for p in t)
    if abs(place[a] - place[b]) != 1:
      raise Invalid(f'tie {list(t)!r}: tied responses must be next to each other in the ranking.')
    tie_pairs.add(tuple(sorted((order[a], order[b]))))
  if flags is None:
    flags = {}
  if not isinstance(flags, dict):
    raise Invalid('flags: give {display position: [labels]}.')
  flag_map = {}
  for p, labels in flags.items():
    pos = _position(p, k, 'flagged position', text=True)
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) and x in FLAGS
                                                        for x in labels):
      raise Invalid(f'flags for position {pos}: {labels!r}; give a list of labels from '
                    f'{", ".join(FLAGS)}.')
    if labels:
      flag_map[str(order[pos])] = sorted(set(labels))
  if not isinstance(note, str) or len(note) > MAX_NOTE:
    raise Invalid(f'note: give text of at most {MAX_NOTE} characters.')
  if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                              or not math.isfinite(seconds) or seconds < 0):
    raise Invalid(f'seconds {seconds!r}: give a non-negative number (or leave it out).')
  return (json.dumps([order[p] for p in ranking]), json.dumps(sorted(list(t) for t in tie_pairs)),
          json.dumps(dict(sorted(flag_map.items(), key=lambda kv: int(kv[0])))), note,
          None if seconds is None else float(seconds))


def _as_displayed(row: sqlite3.Row) -> dict:
  """A submission in the display positions its labeler saw."""
  order = json.loads(row['display_order'])
  shown = {orig: pos for pos, orig in enumerate(order)}
  responses = json.loads(row['responses'])
  return {'submission_id': row['id'], 'item_id': row['item_id'], 'prompt': row['prompt'],
          'responses': [responses[i] for i in order],
          'ranking': [shown[i] for i in json.loads(row['ranking'])],
          'ties': [sorted((shown[a], shown[b])) for a, b in json.loads(row['ties'])],
          'flags': {str(shown[int(i)]): labels for i, labels in json.loads(row['flags']).items()},
          'note': row['note'], 'seconds': row['seconds'], 'created': row['created'],
          'updated': row['updated']}

"""The label store (assignments, submissions, migrations, safety), the rankings math, the export
and the `label` CLI."""
import contextlib
import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest
from scipy import stats as scipy_stats

from conftest import ROOT
from lmresearch import label
from lmresearch.data import formats
from lmresearch.core.errors import ConfigError
from lmresearch.web import rankings
from lmresearch.web.store import (Conflict, Forbidden, Invalid, NotFound, SCHEMA_VERSION,
                                      SchemaError, Store)

TABLES = ('labelers', 'items', 'assignments', 'submissions', 'battles', 'votes', 'schema_version')


def items(n, k=4, gold=None):
  return [{'prompt': f'prompt {i}', 'responses': [f'reply {i}.{j}' for j in range(k)],
           'gold': gold, 'meta': {'n': i}} for i in range(n)]


def snapshot(path):
  """Every row of every table: what an operation that must change nothing is checked against."""
  with contextlib.closing(sqlite3.connect(path)) as db:
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: db.execute(f'SELECT * FROM {t}').fetchall() for t in names}


def shown(store, labeler_id, item_id):
  """The display order this labeler was given: display position -> original index."""
  row = store._conn().execute('SELECT display_order FROM assignments WHERE labeler_id = ? AND '
                              'item_id = ?', (labeler_id, item_id)).fetchone()
  return json.loads(row[0])


def rank(store, labeler_id, order, ties=(), **kw):
  """Takes this labeler's next item and ranks it as `order` (original indices, best first), in
  the display positions the labeler sees, as the page does. Returns (item id, submission id)."""
  item_id = store.next_item(labeler_id)['item_id']
  pos = {orig: p for p, orig in enumerate(shown(store, labeler_id, item_id))}
  return item_id, store.submit(labeler_id, item_id, [pos[i] for i in order],
                               [[pos[a], pos[b]] for a, b in ties], **kw)


@pytest.fixture
def store(tmp_path):
  return Store(str(tmp_path / 'labels.sqlite'))


def labeler(store, name):
  token = store.add_labeler(name)
  return store.labeler_for_token(token)[0]


# ---- store semantics -------------------------------------------------------------------------
def test_items_go_to_per_item_labelers_each_in_their_own_order(store):
  store.add_items(items(3, k=8), per_item=2)
  a, b, c = (labeler(store, n) for n in 'abc')
  first = store.next_item(a)
  assert first['item_id'] == 1 and first['done'] == 0 and first['left'] == 3
  assert store.next_item(a) == first                     # unfinished: the same item again
  assert store.next_item(b)['item_id'] == 1
  assert store.next_item(c)['item_id'] == 2              # item 1 has its two labelers
  assert shown(store, a, 1) != shown(store, b, 1)        # shuffled per labeler
  assert sorted(first['responses']) == sorted(f'reply 0.{j}' for j in range(8))
  store.submit(a, 1, list(range(8)))
  assert store.next_item(a)['item_id'] == 2 and store.progress(a) == (1, 2)
  assert store.stats()['per_labeler'][0] == {'name': 'a', 'done': 1, 'left': 2}


def test_a_lapsed_lease_frees_the_slot_but_its_holder_still_continues(tmp_path):
  store = Store(str(tmp_path / 'l.sqlite'), lease_seconds=0)
  store.add_items(items(2), per_item=1)
  a, b = labeler(store, 'a'), labeler(store, 'b')
  assert store.next_item(a)['item_id'] == 1
  assert store.next_item(b)['item_id'] == 1              # a's lease lapsed: the slot is free
  store.submit(b, 1, [0, 1, 2, 3])
  assert store.next_item(a)['item_id'] == 1              # a's work in progress is not refused
  store.submit(a, 1, [3, 2, 1, 0])
  assert store.next_item(a)['item_id'] == 2


def test_submit_maps_display_positions_back_to_original_indices(store):
  store.add_items(items(1))
  a = labeler(store, 'a')
  it = store.next_item(a)
  order = [int(t.split('.')[1]) for t in it['responses']]          # position -> original
  assert order == shown(store, a, 1) and order != [0, 1, 2, 3]
  sid = store.submit(a, 1, [3, 2, 1, 0], ties=[[2, 1]], flags={'0': ['wrong', 'unsafe'], 3: []},
                     note='fine', seconds=12.5)
  (s,) = store.submissions()
  assert s['ranking'] == [order[3], order[2], order[1], order[0]]
  assert s['ties'] == [sorted([order[2], order[1]])]
  assert s['flags'] == {str(order[0]): ['unsafe', 'wrong']}
  assert s['display_order'] == order and s['seconds'] == 12.5 and s['labeler'] == 'a'
  mine = store.get_submission(a, sid)                                # as the labeler saw it
  assert (mine['ranking'], mine['ties'], mine['flags']) == ([3, 2, 1, 0], [[1, 2]],
                                                             {'0': ['unsafe', 'wrong']})
  assert mine['responses'] == it['responses']


@pytest.mark.parametrize('ranking,ties,flags,note,seconds,needle', [
    ([0, 1, 2], (), None, '', None, 'exactly once'),
    ([0, 1, 2, 2], (), None, '', None, 'exactly once'),
    ([0, 1, 2, 4], (), None, '', None, 'display position'),
    ([0, 1, 2, True], (), None, '', None, 'display position'),
    ('0123', (), None, '', None, 'exactly once'),
    ([0, 1, 2, 3], [[0, 2]], None, '', None, 'next to each other'),
    ([0, 1, 2, 3], [[0, 1, 2]], None, '', None, 'pair'),
    ([0, 1, 2, 3], [[0, 0]], None, '', None, 'next to each other'),
    ([0, 1, 2, 3], (), {'0': ['rude']}, '', None, 'labels from'),
    ([0, 1, 2, 3], (), {'7': ['wrong']}, '', None, 'display position'),
    ([0, 1, 2, 3], (), ['wrong'], '', None, 'flags'),
    ([0, 1, 2, 3], (), None, 'x' * 4001, None, '4000'),
    ([0, 1, 2, 3], (), None, '', -1, 'non-negative'),
    ([0, 1, 2, 3], (), None, '', float('nan'), 'non-negative'),
])
def test_an_invalid_submission_is_refused_and_writes_nothing(store, ranking, ties, flags, note,
                                                              seconds, needle):
  store.add_items(items(1))
  a = labeler(store, 'a')
  store.next_item(a)
  before = snapshot(store.path)
  with pytest.raises(Invalid, match=needle) as e:
    store.submit(a, 1, ranking, ties, flags, note, seconds)
  assert e.value.status == 400
  assert snapshot(store.path) == before


def test_unknown_unassigned_and_repeated_submissions(store):
  store.add_items(items(2))
  a, b = labeler(store, 'a'), labeler(store, 'b')
  store.next_item(a)
  for call, error, status in [(lambda: store.submit(a, 99, [0, 1, 2, 3]), NotFound, 404),
                              (lambda: store.submit(b, 1, [0, 1, 2, 3]), Forbidden, 403),
                              (lambda: store.submit(a, 2, [0, 1, 2, 3]), Forbidden, 403)]:
    before = snapshot(store.path)
    with pytest.raises(error) as e:
      call()
    assert e.value.status == status and snapshot(store.path) == before
  sid = store.submit(a, 1, [0, 1, 2, 3])
  before = snapshot(store.path)
  with pytest.raises(Conflict, match=f'submissions/{sid}') as e:
    store.submit(a, 1, [3, 2, 1, 0])
  assert e.value.status == 409 and snapshot(store.path) == before


def test_only_the_author_reads_or_revises_a_submission(store):
  store.add_items(items(1), per_item=2)
  a, b = labeler(store, 'a'), labeler(store, 'b')
  store.next_item(a)
  sid = store.submit(a, 1, [0, 1, 2, 3], note='first')
  before = snapshot(store.path)
  with pytest.raises(Forbidden):
    store.get_submission(b, sid)
  with pytest.raises(Forbidden):
    store.update_submission(b, sid, [3, 2, 1, 0])
  with pytest.raises(NotFound):
    store.update_submission(a, 99, [3, 2, 1, 0])
  with pytest.raises(Invalid):
    store.update_submission(a, sid, [3, 2, 1])
  assert snapshot(store.path) == before
  revised = store.update_submission(a, sid, [3, 2, 1, 0], ties=[[1, 0]], note='second')
  assert revised['ranking'] == [3, 2, 1, 0] and revised['ties'] == [[0, 1]]
  assert revised['note'] == 'second' and revised['updated'] is not None
  assert len(list(store.submissions())) == 1


def test_sql_in_a_note_is_stored_as_text(store):
  store.add_items(items(1))
  a = labeler(store, 'a')
  store.next_item(a)
  note = "'); DROP TABLE submissions;--"
  store.submit(a, 1, [0, 1, 2, 3], note=note)
  assert [s['note'] for s in store.submissions()] == [note]
  with pytest.raises(Conflict, match='already exists'):
    store.add_labeler('a')
  evil = "x'); DROP TABLE labelers;--"
  store.labeler_for_token(evil)
  labeler(store, evil)
  assert [n for _, n in store.labelers()] == ['a', evil]
  assert set(snapshot(store.path)) >= set(TABLES)


def test_tokens_are_stored_only_as_hashes(store):
  token = store.add_labeler('alice')
  assert len(token) >= 32 and store.labeler_for_token(token) == (1, 'alice')
  for bad in ('', None, token[:-1], token + 'x'):
    assert store.labeler_for_token(bad) is None
  rows = snapshot(store.path)['labelers']
  assert rows[0][2] == hashlib.sha256(token.encode()).hexdigest()
  store.close()
  for name in os.listdir(os.path.dirname(store.path)):
    with open(os.path.join(os.path.dirname(store.path), name), 'rb') as f:
      assert token.encode() not in f.read()
  with pytest.raises(ValueError, match="'alice'"):
    store.add_labeler('alice')
  with pytest.raises(Invalid):
    store.add_labeler('  ')


def test_bad_items_are_refused_whole(store):
  before = snapshot(store.path)
  for bad, needle in [([{'prompt': 'p', 'responses': ['one']}], '1 responses'),
                      ([{'prompt': 'p', 'responses': ['a'] * 17}], '17 responses'),
                      ([{'prompt': 1, 'responses': ['a', 'b']}], 'prompt'),
                      (items(1) + [{'prompt': 'p', 'responses': ['a', 'b'], 'gold': [1.0]}],
                       'item 1: "gold"')]:
    with pytest.raises(Invalid, match=needle):
      store.add_items(bad)
  with pytest.raises(Invalid, match='per_item'):
    store.add_items(items(1), per_item=0)
  assert snapshot(store.path) == before


def test_concurrent_labelers_on_one_store_never_lose_or_duplicate(store):
  # Spare items: near the end the only open slots could be on items a labeler already ranked.
  store.add_items(items(150), per_item=2)
  ids = [labeler(store, f'l{i}') for i in range(20)]
  errors = []

  def work(lid):
    try:
      for _ in range(10):
        it = store.next_item(lid)
        store.submit(lid, it['item_id'], [3, 2, 1, 0])
    except Exception as e:   # pragma: no cover - reported below
      errors.append(e)

  threads = [threading.Thread(target=work, args=(i,)) for i in ids]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  subs = list(store.submissions())
  assert len(subs) == 200 and len({(s['labeler_id'], s['item_id']) for s in subs}) == 200
  per_item = np.bincount([s['item_id'] for s in subs])
  assert per_item.max() == 2 and store.stats()['complete_items'] >= 50


# ---- schema ----------------------------------------------------------------------------------
def test_a_v1_database_migrates_to_the_latest_keeping_its_data(tmp_path):
  path = str(tmp_path / 'old.sqlite')
  old = Store(path, schema=1)
  assert old.schema_version() == 1 and 'battles' not in snapshot(path)
  a = labeler(old, 'a')
  old.add_items(items(2))
  rank(old, a, [1, 0, 2, 3], ties=[(0, 2)], note='kept')
  old.next_item(a)   # in progress
  before = snapshot(path)
  old.close()

  new = Store(path)
  assert new.schema_version() == SCHEMA_VERSION == 2
  after = snapshot(path)
  assert all(after[t] == rows for t, rows in before.items() if t != 'schema_version')
  assert [s['note'] for s in new.submissions()] == ['kept']
  assert new.next_item(a)['item_id'] == 2                 # continues where it was
  bid = new.add_battle(a, 'q', 'm1', 'm2', 'x', 'y', {'temperature': 0.7})
  assert new.vote(a, bid, 'a') == ('m1', 'm2')
  Store(path)   # opening the latest again changes nothing
  assert snapshot(path)['schema_version'] == [(2,)]


def test_a_newer_or_foreign_database_is_a_clear_error(tmp_path):
  path = str(tmp_path / 'new.sqlite')
  Store(path).close()
  with sqlite3.connect(path) as db:
    db.execute('UPDATE schema_version SET version = 99')
  with pytest.raises(SchemaError, match='version 99 is newer'):
    Store(path)
  other = str(tmp_path / 'other.sqlite')
  with sqlite3.connect(other) as db:
    db.execute('CREATE TABLE t (x)')
  with pytest.raises(SchemaError, match='not a label store'):
    Store(other)
  text = tmp_path / 'notes.txt'
  text.write_text('hello ' * 200)
  with pytest.raises(SchemaError, match='cannot open'):
    Store(str(text))
  with pytest.raises(SchemaError, match='directory must exist'):
    Store(str(tmp_path / 'missing' / 'x.sqlite'))


# ---- the arena's tables ----------------------------------------------------------------------
def test_votes_belong_to_their_battle_and_voter(store):
  a, b = labeler(store, 'a'), labeler(store, 'b')
  bid = store.add_battle(a, 'q', 'm1', 'm2', 'x', 'y', {})
  for call, error in [(lambda: store.vote(b, bid, 'a'), Forbidden),
                      (lambda: store.vote(a, 99, 'a'), NotFound),
                      (lambda: store.vote(a, bid, 'maybe'), Invalid)]:
    with pytest.raises(error):
      call()
  assert store.vote(a, bid, 'both_bad') == ('m1', 'm2')
  with pytest.raises(Conflict):
    store.vote(a, bid, 'b')
  assert store.votes() == [('m1', 'm2', 'both_bad')]
  assert store.stats()['battles'] == store.stats()['votes'] == 1


# ---- rankings math ---------------------------------------------------------------------------
def test_levels_from_an_order_and_ties():
  assert rankings.levels([2, 0, 1, 3], [[0, 1]]) == [1, 1, 0, 2]
  assert rankings.levels([0, 1, 2], [[0, 2]]) == [0, 0, 0]   # a non-adjacent tie spans between
  assert rankings.levels([1, 0]) == [1, 0]
  assert rankings.order_and_ties([1, 1, 0, 2]) == ([2, 0, 1, 3], [[0, 1]])
  assert rankings.order_and_ties([0, 0, 0]) == ([0, 1, 2], [[0, 1], [0, 2], [1, 2]])
  assert rankings.gold_levels([4.0, 1.0, 4.0, 3.0]) == [0, 2, 0, 1]
  with pytest.raises(ValueError, match='permutation'):
    rankings.levels([0, 0, 1])


def test_pairwise_agreement_and_kendall_tau_by_hand():
  strict, tied = [0, 1, 2, 3], [0, 0, 1, 3]
  # Pairs: (0,1) strict vs tied disagree; the other five agree.
  assert rankings.pairwise_agreement(strict, tied) == pytest.approx(5 / 6)
  # tau-b: concordant 5, discordant 0; 6 strict pairs in one, 5 in the other.
  assert rankings.kendall_tau_b(strict, tied) == pytest.approx(5 / math.sqrt(30))
  assert rankings.pairwise_agreement(strict, [3, 2, 1, 0]) == 0
  assert rankings.kendall_tau_b(strict, [3, 2, 1, 0]) == -1
  assert rankings.pairwise_agreement([0, 0, 1], [0, 0, 1]) == 1
  assert math.isnan(rankings.kendall_tau_b([0, 0, 0], strict[:3]))
  rng = np.random.default_rng(0)
  for _ in range(50):
    x, y = rng.integers(0, 3, 6), rng.integers(0, 3, 6)
    ref = scipy_stats.kendalltau(x, y).statistic
    got = rankings.kendall_tau_b(x, y)
    assert (math.isnan(ref) and math.isnan(got)) or got == pytest.approx(ref)


def test_agreement_between_labelers_and_with_gold():
  subs = [{'item_id': 1, 'labeler_id': 1, 'ranking': [0, 1, 2], 'ties': [], 'gold': [3, 2, 1]},
          {'item_id': 1, 'labeler_id': 2, 'ranking': [1, 0, 2], 'ties': [], 'gold': [3, 2, 1]},
          {'item_id': 2, 'labeler_id': 1, 'ranking': [0, 1], 'ties': [], 'gold': None}]
  a = rankings.agreement(subs)
  assert a['pairs'] == 1                                  # item 2 has one labeler
  assert a['pairwise'] == pytest.approx(2 / 3) and a['tau'] == pytest.approx(1 / 3)
  assert a['gold_n'] == 2 and a['gold_pairwise'] == pytest.approx((1 + 2 / 3) / 2)
  assert rankings.agreement([])['pairwise'] is None


def test_ranked_pairs_merge():
  lv = lambda order: rankings.levels(order)
  # Majorities 0>1 (2-1) and 2>3 (2-1), the rest unanimous.
  assert rankings.merge_ranked_pairs([lv([0, 1, 2, 3]), lv([1, 0, 2, 3]), lv([0, 1, 3, 2])], 4) \
      == ([0, 1, 2, 3], [])
  # An even split is no locked pair: the two share a level.
  assert rankings.merge_ranked_pairs([lv([0, 1, 2]), lv([1, 0, 2])], 3) == ([0, 1, 2], [[0, 1]])
  # A cycle 0>1 (margin 3), 1>2 (5), 2>0 (1): the weakest link is the one dropped.
  votes = [lv([0, 1, 2])] * 4 + [lv([1, 2, 0])] * 3 + [lv([2, 0, 1])] * 2
  assert rankings.merge_ranked_pairs(votes, 3) == ([0, 1, 2], [])
  # Labelers' own ties: (0 ~ 1) > 2 by both.
  assert rankings.merge_ranked_pairs([[0, 0, 1], [0, 0, 1]], 3) == ([0, 1, 2], [[0, 1]])
  with pytest.raises(ValueError, match='3 levels'):
    rankings.merge_ranked_pairs([[0, 1]], 3)


def simulated_votes(strength, n, seed=0, tie_share=0.1):
  rng = np.random.default_rng(seed)
  names = sorted(strength)
  votes = []
  for _ in range(n):
    a, b = rng.choice(names, 2, replace=False)
    p = 1 / (1 + math.exp(-(strength[a] - strength[b])))
    u = rng.random()
    votes.append((str(a), str(b), 'tie' if u < tie_share else 'a' if rng.random() < p else 'b'))
  return votes


def test_bradley_terry_recovers_the_order_of_simulated_strengths():
  strength = {'m0': 0.0, 'm1': 0.4, 'm2': 0.8, 'm3': 1.6}
  votes = simulated_votes(strength, 3000)
  r = rankings.bradley_terry(votes, models=['m0', 'unseen'])
  assert sorted(strength, key=r.get) == ['m0', 'm1', 'm2', 'm3'] and math.isfinite(r['unseen'])
  assert np.mean(list(r.values())) == pytest.approx(1000)
  # log-strength differences on the Elo scale (ties shrink them a little)
  assert (r['m3'] - r['m0']) / rankings.ELO_SCALE == pytest.approx(1.6, rel=0.25)
  ci = rankings.bootstrap_ratings(votes, n=200, seed=1)
  for m in strength:
    assert ci[m][0] < r[m] < ci[m][1]
  assert ci['m2'][1] < ci['m3'][0]                        # a clear gap is outside both intervals


def test_bradley_terry_keeps_an_unbeaten_model_finite_and_ties_even():
  r = rankings.bradley_terry([('x', 'y', 'a')] * 20)
  assert math.isfinite(r['x']) and r['x'] > r['y'] and r['x'] + r['y'] == pytest.approx(2000)
  even = rankings.bradley_terry([('x', 'y', 'tie'), ('x', 'y', 'both_bad')] * 5)
  assert even['x'] == pytest.approx(even['y'])
  assert rankings.bradley_terry([]) == {}
  with pytest.raises(ValueError, match="'maybe'"):
    rankings.bradley_terry([('x', 'y', 'maybe')])


def test_win_rates_with_wilson_intervals():
  assert rankings.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
  w = rankings.win_rates([('b', 'a', 'a'), ('a', 'b', 'a'), ('a', 'b', 'tie'), ('a', 'b', 'b')])
  s = w[('a', 'b')]
  assert (s['n'], s['wins'], s['losses'], s['ties']) == (4, 1, 2, 1)
  assert s['rate'] == pytest.approx(1.5 / 4) and s['lo'] < s['rate'] < s['hi']
  table = rankings.arena_table([('x', 'y', 'a')] * 5, n=50)
  assert [m['model'] for m in table['models']] == ['x', 'y'] and table['votes'] == 5
  assert table['pairs'][0]['a_win_rate'] == 1.0 and table['models'][0]['battles'] == 5


# ---- export ----------------------------------------------------------------------------------
def test_export_round_trips_through_read_rankings(store, tmp_path):
  gold = [4.0, 1.0, 3.0, 3.0]
  store.add_items(items(3, gold=gold), per_item=2)
  a, b = labeler(store, 'a'), labeler(store, 'b')
  rank(store, a, [0, 2, 3, 1], ties=[(2, 3)], flags={})
  rank(store, b, [2, 0, 3, 1])
  rank(store, a, [1, 0, 2, 3], ties=[(1, 0)])   # item 2: one labeler; item 3: nobody
  it = store.next_item(b)
  store.submit(b, it['item_id'], [0, 1, 2, 3], flags={'1': ['off_topic']})   # item 2 again

  merged = label.export_lines(store)
  assert [x['item_id'] for x in merged] == [1, 2]
  # Item 1: 0 > 2 by a, 2 > 0 by b: tied; both put 2 and 0 over 3 over 1; a's tie 2~3 is 1-0.
  assert merged[0]['responses'] == ['reply 0.0', 'reply 0.2', 'reply 0.3', 'reply 0.1']
  assert merged[0]['ties'] == [[0, 1]] and merged[0]['labelers'] == ['a', 'b']
  assert merged[0]['gold'] == [4.0, 3.0, 3.0, 1.0]

  each = label.export_lines(store, merge='none')
  assert len(each) == 4
  assert each[0]['responses'] == ['reply 0.0', 'reply 0.2', 'reply 0.3', 'reply 0.1']
  assert each[0]['ties'] == [[1, 2]] and each[0]['labelers'] == ['a']

  for merge, lines in (('ranked_pairs', merged), ('none', each)):
    out = str(tmp_path / f'{merge}.jsonl')
    n, agree = label.export(store.path, out, merge)
    assert n == len(lines) and agree['pairs'] == 2
    back = formats.read_rankings(out)
    assert [(r['prompt'], r['responses'], r['ties']) for r in back] == \
        [(x['prompt'], x['responses'], x['ties']) for x in lines]
  flagged = [x for x in each if x['flags']]
  assert len(flagged) == 1 and list(flagged[0]['flags'].values()) == [['off_topic']]


# ---- the command line ------------------------------------------------------------------------
def cli(*args):
  return subprocess.run([sys.executable, '-m', 'lmresearch.label', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_cli_add_labeler_stats_and_export(tmp_path):
  db = str(tmp_path / 'labels.sqlite')
  r = cli('add-labeler', 'alice', f'--db={db}')
  assert r.returncode == 0, r.stderr
  token = r.stdout.strip().splitlines()[-1]
  store = Store(db)
  assert store.labeler_for_token(token) == (1, 'alice')
  store.add_items(items(2, gold=[2.0, 1.0, 1.0, 0.0]))
  rank(store, 1, [0, 1, 2, 3], ties=[(1, 2)])
  r = cli('add-labeler', 'alice', f'--db={db}')
  assert r.returncode == 2 and "'alice' already exists" in r.stderr
  r = cli('stats', f'--db={db}')
  assert r.returncode == 0, r.stderr
  assert '2 items' in r.stdout and 'alice: 1 done, 1 left' in r.stdout
  assert 'gold order (1 submissions): pairwise 1.000' in r.stdout
  out = str(tmp_path / 'r.jsonl')
  r = cli('export', f'--db={db}', f'--out={out}')
  assert r.returncode == 0 and 'wrote 1 ranking lines' in r.stdout, r.stderr
  assert formats.read_rankings(out)[0]['ties'] == [[1, 2]]
  for args, needle in [((), 'give a command'), (('stats',), '--db is required'),
                       (('stats', f'--db={tmp_path}/none.sqlite'), 'no such label store'),
                       (('export', f'--db={db}'), '--out is required'),
                       (('create', f'--db={db}', f'--workdir={tmp_path}'), 'exactly one of')]:
    r = cli(*args)
    assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)


def test_a_bad_prompts_line_names_file_and_line(tmp_path):
  path = tmp_path / 'prompts.jsonl'
  path.write_text('{"prompt": "fine"}\n{"question": "no prompt key"}\n')
  with pytest.raises(ConfigError, match=r'prompts\.jsonl:2: expected \{"prompt"'):
    label.read_prompts(str(path))


def test_create_from_the_world_and_from_prompts_then_the_world_labeler_ranks(pipeline_dirs,
                                                                              tmp_path):
  db = str(tmp_path / 'labels.sqlite')
  sft = str(pipeline_dirs / 'sft')
  ids = label.create(db, sft, from_world=3, k=3, per_item=1, max_new_tokens=8, batch_size=16)
  prompts = tmp_path / 'prompts.jsonl'
  prompts.write_text('{"prompt": "What color is the banana?"}\n'
                     '{"prompt": "Ann has 2 apples and buys 3 more. How many now?", "answer": 5}\n')
  ids += label.create(db, sft, prompts=str(prompts), k=2, max_new_tokens=8, batch_size=16)
  store = Store(db)
  subs = {s['item_id']: s for s in store.submissions()}
  assert ids == [1, 2, 3, 4, 5] and not subs
  rows = store._conn().execute('SELECT responses, gold, meta FROM items ORDER BY id').fetchall()
  golds = [json.loads(g) if g else None for _, g, _ in rows]
  assert all(len(g) == 3 for g in golds[:3]) and golds[3] is None and len(golds[4]) == 2
  assert json.loads(rows[0][2])['world_seed'] == 0
  # The world's own labeler: ranks by gold quality, equal quality tied.
  w = labeler(store, 'world')
  for gold in golds:
    it = store.next_item(w)
    order = shown(store, w, it['item_id'])
    if gold is None:
      store.submit(w, it['item_id'], list(range(len(order))))
      continue
    best = sorted(range(len(order)), key=lambda p: -gold[order[p]])
    ties = [[p, q] for p, q in zip(best, best[1:]) if gold[order[p]] == gold[order[q]]]
    store.submit(w, it['item_id'], best, ties)
  assert rankings.agreement(store.submissions())['gold_pairwise'] == 1.0
  out = str(tmp_path / 'r.jsonl')
  assert label.export(db, out)[0] == 5 and len(formats.read_rankings(out)) == 5

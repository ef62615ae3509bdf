"""Post-training data formats: chats, rankings, prompts, and GSM8K through the same readers."""
import json
import os
import random

import pytest

from conftest import ROOT
from lmresearch.data import formats, world_labeler, world
from lmresearch.training.config import ConfigError

GSM8K_LINE = {'question': 'Ann has 3 apples and buys 1,200 more. How many now?',
              'answer': 'She has 3 + 1200 = <<3+1200=1203>>1203 apples.\n#### 1,203'}


def _write(path, rows):
  path.write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in rows))
  return str(path)


def test_gsm8k_reads_as_chat_and_as_prompt(tmp_path):
  path = _write(tmp_path / 'gsm8k.jsonl', [GSM8K_LINE])
  chat = formats.read_chats(path)[0]['messages']
  assert chat[0] == {'role': 'user', 'content': GSM8K_LINE['question']}
  assert chat[1]['content'] == 'She has 3 + 1200 = 1203 apples. The answer is 1,203.'
  assert formats.read_prompts(path) == [{'prompt': GSM8K_LINE['question'], 'answer': '1203',
                                         'num_steps': 0}]


def test_the_shared_gsm8k_files_load_when_present():
  path = os.path.join(ROOT, '..', 'shared', 'data', 'gsm8k', 'test.jsonl')
  if not os.path.exists(path):
    pytest.skip(f'{path} is absent: the shared GSM8K copy is not beside this checkout')
  assert len(formats.read_chats(path)) == len(formats.read_prompts(path)) == 1319


def test_rankings_pairs_and_ties(tmp_path):
  path = _write(tmp_path / 'r.jsonl', [
      {'prompt': 'p', 'responses': ['a', 'b', 'c'], 'ties': [[1, 2]]},
      {'prompt': 'q', 'chosen': 'good', 'rejected': 'bad'}])
  r = formats.read_rankings(path)
  assert r[0]['ties'] == [[1, 2]] and r[1]['responses'] == ['good', 'bad']


@pytest.mark.parametrize('reader,line,needle', [
    (formats.read_chats, '{"messages": [{"role": "robot", "content": "x"}]}', 'role'),
    (formats.read_chats, '{"messages": [{"role": "user", "content": "x"}]}', 'assistant message'),
    (formats.read_rankings, '{"prompt": "p", "responses": ["only one"]}', '1 responses'),
    (formats.read_rankings, '{"prompt": "p", "responses": ["a", "b"], "ties": [[0, 5]]}', 'ties'),
    (formats.read_prompts, '{"answer": "3"}', 'prompt'),
    (formats.read_prompts, '{"prompt": "p", oops}', 'malformed JSON'),
])
def test_a_malformed_line_names_file_and_line(tmp_path, reader, line, needle):
  path = _write(tmp_path / 'bad.jsonl', ['{"prompt": "fine", "answer": "1", "responses": ["a", "b"], '
                                         '"messages": [{"role": "user", "content": "q"}, '
                                         '{"role": "assistant", "content": "a"}]}', line])
  with pytest.raises(ConfigError, match=r'bad\.jsonl:2: .*' + needle):
    reader(path)


def test_the_world_generates_every_format_deterministically():
  from conftest import load_config
  dc = load_config('reward').data
  for kind in ('chat', 'ranking', 'prompts', 'questions'):
    a, b = formats.load(kind, dc, 'train'), formats.load(kind, dc, 'train')
    assert a == b and a != formats.load(kind, dc, 'validation')
  ranking = formats.load('ranking', dc, 'validation')[0]
  # every real candidate of a fact question / word problem, and two degenerate replies
  assert len(ranking['responses']) in (10, 11)


def test_noise_free_rankings_mark_equal_quality_as_ties_not_an_order():
  w, rng = world.World(0), random.Random(0)
  seen = 0
  for _ in range(40):
    r = w.ranking(rng, degenerate=2)
    # The plain, the padded and the terse wrong answer are equally wrong: every pair of them is a
    # tie, and so are the two degenerate replies; nothing else is.
    assert len(r['ties']) == 4
    for i, j in r['ties']:
      a, b = r['responses'][i], r['responses'][j]
      assert a != b and (world_labeler.labeler_quality(a, False, True, r['prompt'])
                         == world_labeler.labeler_quality(b, False, True, r['prompt']))
    seen += len(r['responses']) == 11
    assert 'ties' not in w.ranking(rng, noise=0.5)   # a noisy labeler always picks an order
  assert seen


def test_the_labeler_scale_scores_every_candidate_as_the_rankings_do():
  w, rng = world.World(0), random.Random(0)
  for _ in range(40):
    q, a, key = w.question(rng)
    for quality, text, kind in w.responses(q, a, key, rng):
      expected = 1.0 if kind == 'off_topic' else quality   # an off-topic reply counts as wrong
      assert world_labeler.labeler_quality(text, quality >= 2.0, key.isdigit(), q) == expected, text
      assert (world_labeler.degenerate_kind(text, q) == kind) == (kind in world.DEGENERATE), (kind, text)


def test_degenerate_replies_are_in_every_ranking_and_ranked_below_every_real_answer():
  w, rng = world.World(0), random.Random(1)
  kinds_seen = set()
  for _ in range(60):
    r = w.ranking(rng, degenerate=2)
    bad = [i for i, k in enumerate(r['kinds']) if k in world.DEGENERATE]
    assert len(bad) == 2 and bad == list(range(len(r['responses']) - 2, len(r['responses'])))
    assert [bad[0], bad[1]] in r['ties']   # equally bad: a tie, not an order
    kinds_seen.update(r['kinds'][i] for i in bad)
  assert kinds_seen == set(world.DEGENERATE)
  every = w.ranking(rng, degenerate=len(world.DEGENERATE))
  assert set(every['kinds'][-5:]) == set(world.DEGENERATE) and '' in every['responses']


def test_degenerate_share_counts_empty_unfinished_and_non_printable_answers():
  from lmresearch.evals.pipeline_eval import _degenerate, _kinds
  q = 'What color is the melon?'
  records = [{'question': q, 'output': '', 'finished': True},                    # empty
             {'question': q, 'output': '   ', 'finished': True},                 # empty
             {'question': q, 'output': 'The melon is gray', 'finished': False},  # never ended
             {'question': q, 'output': 'The melon is gray.\x07\x01', 'finished': True},
             {'question': q, 'output': 'The melon is gray.', 'finished': True},
             {'question': q, 'output': 'The melon is red.', 'finished': True},   # wrong, not degenerate
             {'question': q, 'output': 'The melon is gray. I hope this helps, and there is much more '
                                       'to say.', 'finished': True},
             {'question': q, 'output': 'The melon is gray. The melon is gray.'},  # repeated
             {'question': q, 'output': q}]                                        # echoed
  assert [_degenerate(r) for r in records] == [True, True, True, True] + [False] * 5
  assert _kinds(records) == {'empty': 2, 'unfinished': 1, 'garbage': 1, 'repeated': 1, 'echo': 1}
  assert world_labeler.labeler_quality('', True, False) == 0.0   # even "correct" by the answer check


def test_rankings_that_tie_everything_are_an_error(tmp_path):
  from lmresearch.data.formats import read_rankings
  from lmresearch.core.errors import ConfigError
  p = tmp_path / 'r.jsonl'
  p.write_text(json.dumps({'prompt': 'q', 'responses': ['a', 'b', 'c'],
                           'ties': [[0, 1], [1, 2], [0, 2]]}) + '\n')
  with pytest.raises(ConfigError, match='no pair for a reward model'):
    read_rankings(str(p))
  p.write_text(json.dumps({'prompt': 'q', 'responses': ['a', 'b', 'c'], 'ties': [[0, 1]]}) + '\n')
  assert read_rankings(str(p))[0]['ties'] == [[0, 1]]

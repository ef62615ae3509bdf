"""Packing, the checkpointable iterator, tokenizers and the embedded world."""
import random

import numpy as np

from lmresearch.text import tokenizers
from lmresearch.data import packing, world


def test_packing_marks_documents_and_masks_cross_document_targets():
  ds = packing.PackedDataset.from_token_lists([[10, 11, 12], [20, 21], [30]], seq_len=5, bos=1, eos=2)
  # stream: 1 10 11 12 2 | 1 20 21 2 | 1 30 2
  row = ds.rows(np.array([0, 1]))
  np.testing.assert_array_equal(row['inputs'], [[1, 10, 11, 12, 2], [1, 20, 21, 2, 1]])
  np.testing.assert_array_equal(row['targets'], [[10, 11, 12, 2, 1], [20, 21, 2, 1, 30]])
  np.testing.assert_array_equal(row['segment_ids'], [[1, 1, 1, 1, 1], [1, 1, 1, 1, 2]])
  np.testing.assert_array_equal(row['positions'], [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0]])
  # the target after EOS is the next document's BOS: not predictable, so weighted 0
  np.testing.assert_array_equal(row['weights'], [[1, 1, 1, 1, 0], [1, 1, 1, 0, 1]])
  mid = packing.PackedDataset.from_token_lists([list(range(3, 12))], seq_len=4, bos=1, eos=2)
  np.testing.assert_array_equal(mid.rows(np.array([1]))['positions'], [[0, 1, 2, 3]])


def test_iterator_state_restores_the_exact_stream():
  docs = [[i % 50 + 3] * (i % 7 + 1) for i in range(200)]
  ds = packing.PackedDataset.from_token_lists(docs, 8, 1, 2)
  it = packing.train_iterator(ds, 4, seed=3)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it)['inputs'] for _ in range(ds.num_windows // 4 + 3)]   # crosses an epoch
  it2 = packing.train_iterator(ds, 4, seed=3)
  it2.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(it2)['inputs'], e)


def test_char_and_bpe_tokenizers_round_trip_and_save(tmp_path):
  texts = world.corpus(0, 200)
  for tok in (tokenizers.train_tokenizer('char', texts), tokenizers.train_tokenizer('bpe', texts, 400)):
    s = texts[0]
    assert tok.decode(tok.encode(s)) == s
    tok.save(str(tmp_path))
    again = tokenizers.load_tokenizer(str(tmp_path))
    assert again.encode(s) == tok.encode(s) and again.vocab_size == tok.vocab_size
    assert tok.special_id(tokenizers.ASSISTANT) == 5 and tok.eos_id == 2


def test_chat_template_masks_everything_but_assistant_replies():
  tok = tokenizers.train_tokenizer('char', ['abcdefghijklmnopqrstuvwxyz ?.'])
  ids, mask = tokenizers.render_chat(tok, [{'role': 'user', 'content': 'hi?'},
                                           {'role': 'assistant', 'content': 'yo.'}])
  assert tok.decode(ids) == '<|bos|><|user|>hi?<|end|><|assistant|>yo.<|end|>'
  assert tok.decode([i for i, m in zip(ids, mask) if m]) == 'yo.<|end|>'


def test_world_is_deterministic_and_problems_are_correct():
  assert world.corpus(7, 50) == world.corpus(7, 50)
  assert world.corpus(7, 50) != world.corpus(8, 50)
  assert world.corpus(7, 50, 'train') != world.corpus(7, 50, 'validation')
  w, rng = world.World(0), random.Random(0)
  for _ in range(200):
    p = w.problem(rng)
    total = None
    for step in p.steps[1:]:
      expr, result = step.rstrip('.').split(' = ')
      assert eval(expr) == int(result)
      total = int(result)
    assert total == p.answer and 1 <= p.num_steps <= 3 and p.answer >= 0
    assert p.solution.endswith(f'The answer is {p.answer}.')
  assert 'The banana is a yellow fruit.' in w.fruit_doc('banana', rng)

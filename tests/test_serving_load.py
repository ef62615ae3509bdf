"""The server under sustained load: 64 concurrent streams for 60 s (LMR_LOAD_SECONDS), every
request answered in full or refused with a clear status, and the server's memory flat."""
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STREAMS = 64


def _rss_mb(pid: int) -> float:
  with open(f'/proc/{pid}/status') as f:
    return next(int(l.split()[1]) for l in f if l.startswith('VmRSS:')) / 1024


async def _load(url: str, seconds: float, counts: dict, problems: list) -> None:
  import httpx
  deadline = time.monotonic() + seconds

  async def client(c, i):
    while time.monotonic() < deadline:
      body = {'model': 'sft', 'stream': True, 'max_tokens': 12, 'seed': i,
              'messages': [{'role': 'user', 'content': f'What color is the banana? ({i})'}]}
      async with c.stream('POST', url + '/v1/chat/completions', json=body) as r:
        if r.status_code != 200:
          text = (await r.aread()).decode()
          counts[r.status_code] = counts.get(r.status_code, 0) + 1
          msg = json.loads(text)['error']['message']   # a refusal says why
          if r.status_code != 429 or 'retry' not in msg:
            problems.append((r.status_code, msg))
          await asyncio.sleep(0.05)
          continue
        lines = [l async for l in r.aiter_lines() if l.startswith('data: ')]
        finished = [json.loads(l[6:])['choices'][0]['finish_reason'] for l in lines[:-1]
                    if json.loads(l[6:]).get('choices')]
        if lines[-1] != 'data: [DONE]' or finished[-1] not in ('stop', 'length'):
          problems.append(('incomplete stream', lines[-3:]))
        counts[200] = counts.get(200, 0) + 1

  async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=STREAMS + 8)) as c:
    await asyncio.gather(*[client(c, i) for i in range(STREAMS)])


@pytest.mark.slow
def test_64_streams_for_a_minute(pipeline_dirs, tmp_path):
  import httpx
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  # 8 slots, so that 64 streams overflow the decode batch and the queue (8 x slots): refusals
  # are part of what is checked.
  proc = subprocess.Popen([sys.executable, '-m', 'lmresearch.serve', f'--workdir={pipeline_dirs}',
                           f'--port={port}', '--slots=8'], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  url = f'http://127.0.0.1:{port}'
  try:
    deadline = time.time() + 120
    while True:
      try:
        if httpx.get(url + '/v1/models', timeout=2).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
      time.sleep(0.3)
    seconds = float(os.environ.get('LMR_LOAD_SECONDS', 60))
    warm = {}
    asyncio.run(_load(url, min(10.0, seconds / 4), warm, []))   # compiles, caches, pools
    before = _rss_mb(proc.pid)
    counts, problems = {}, []
    asyncio.run(_load(url, seconds, counts, problems))
    after = _rss_mb(proc.pid)
    assert not problems, problems[:5]
    assert set(counts) <= {200, 429}, counts
    assert counts.get(200, 0) >= STREAMS, counts
    assert after < before * 1.1 + 30, f'server memory grew from {before:.0f} MB to {after:.0f} MB'
    print(f'\n{seconds:.0f} s of {STREAMS} streams: {counts}; server RSS {before:.0f} -> '
          f'{after:.0f} MB')
  finally:
    proc.terminate()
    proc.wait(timeout=30)
  # It bound this machine only, unasked, and said so.
  assert f'listening on http://127.0.0.1:{port} (this machine only' in proc.stderr.read()

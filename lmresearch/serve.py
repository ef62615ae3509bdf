"""Serve the runs under a workdir: labeling, chat and arena pages and an OpenAI-compatible API.

  python -m lmresearch.serve --workdir=runs/demo --db=labels.sqlite --port=8000

Binds 127.0.0.1 unless --host says otherwise (the pages hand out model output to whoever can
reach the port), and says where it listens. Pages: /label (needs --db and a labeler token from
`python -m lmresearch.label add-labeler NAME`), /chat, /arena (needs --db); API: /v1/models,
/v1/completions, /v1/chat/completions (open unless --api_key is set).
"""
from __future__ import annotations

import sys

from absl import app, flags

from lmresearch.runtime import check_args, cli_errors, setup_jax

flags.DEFINE_string('workdir', None, 'A run, or a directory of runs (e.g. a pipeline workdir): '
                    'every language-model run under it can be chatted with and served.')
flags.DEFINE_string('db', None, 'The label store (SQLite): enables /label and /arena.')
flags.DEFINE_string('host', '127.0.0.1', 'Interface to bind (0.0.0.0: every interface).')
flags.DEFINE_integer('port', 8000, 'Port to listen on.')
flags.DEFINE_string('api_key', None, 'If set, /v1/* requires "Authorization: Bearer KEY".')
flags.DEFINE_integer('slots', 16, 'Concurrent sequences per model in the shared decode batch.')
flags.DEFINE_bool('warmup', False, 'Load every model and compile all its programs before '
                  'listening, so that no request waits on a compile (else each model loads on '
                  'its first request and compiles a program the first time a bucket comes).')
flags.DEFINE_integer('max_len', 0, 'The longest prompt + reply served, in tokens (0: the model\'s '
                     'context, or what --kv_cache_gb fits; vLLM\'s --max-model-len).')
flags.DEFINE_float('kv_cache_gb', 1.0, 'Memory for the KV cache of all slots of one model, in GB: '
                   'a model whose whole context does not fit at --slots is served at the context '
                   'that does (0: no limit, the whole context for every slot).')
FLAGS = flags.FLAGS


def main(argv):
  check_args(argv, FLAGS.workdir, 'to serve')
  setup_jax()
  import uvicorn

  from lmresearch.web.app import create_app
  with cli_errors(ValueError):
    web = create_app(FLAGS.workdir, FLAGS.db, api_key=FLAGS.api_key, slots=FLAGS.slots,
                     warm=FLAGS.warmup, max_len=FLAGS.max_len, kv_cache_gb=FLAGS.kv_cache_gb)
  names = web.state.models.names()
  print(f'serving {len(names)} model(s) from {FLAGS.workdir}: {", ".join(names) or "none"}',
        file=sys.stderr)
  if FLAGS.warmup:
    import time
    for name in names:
      t = time.perf_counter()
      engine = web.state.models.engine(name)
      print(f'warmed {name}: {len(engine.warmed)} programs compiled in '
            f'{time.perf_counter() - t:.1f} s', file=sys.stderr, flush=True)
  where = ('every interface' if FLAGS.host in ('0.0.0.0', '::')
           else 'this machine only' if FLAGS.host in ('127.0.0.1', 'localhost', '::1') else FLAGS.host)
  print(f'listening on http://{FLAGS.host}:{FLAGS.port} ({where}; --host to change)',
        file=sys.stderr, flush=True)
  # Idle keep-alive connections live longer here (75 s, nginx's default) than in the clients'
  # pools (httpx, and so the OpenAI client, drop them after 5 s): with uvicorn's 5 s on both
  # sides a client could send on a connection the server was closing, and see the request fail
  # with a read error (seen once in the 64-stream load test).
  uvicorn.run(web, host=FLAGS.host, port=FLAGS.port, log_level='warning', timeout_keep_alive=75)


if __name__ == '__main__':
  app.run(main)

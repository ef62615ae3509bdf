"""People in the loop: the labeling, chat and arena pages and the OpenAI-compatible API.

  python -m lmresearch.serve --workdir=runs/demo --db=labels.sqlite --port=8000

  store.py        SQLite (WAL) store: labelers (hashed tokens), items, assignments, submissions,
                  arena battles and votes; the schema versioned with migrations
  rankings.py     rankings with ties: pairwise agreement, Kendall tau-b, ranked-pairs merge,
                  Bradley-Terry ratings with bootstrap intervals
  label_api.py    /api/label/*: the next item in this labeler's shuffled order, submissions
  engine.py       continuous batching: one KV-cache decode batch of slots shared by every request
  models.py       the runs under --workdir that can chat, each with its engine, loaded on first use
  openai_api.py   /v1/models, /v1/completions, /v1/chat/completions (streaming and not)
  arena_api.py    /api/arena/*: two anonymised models answer one prompt; votes; ratings
  app.py          the FastAPI app: pages (static/), the routers above
  static/         plain HTML/JS pages (label, chat, arena); text is always set as text, never markup

Auth: a labeler's token (`python -m lmresearch.label add-labeler NAME`) goes in
`Authorization: Bearer <token>` on /api/*; the OpenAI API takes --api_key (unset: open).
"""

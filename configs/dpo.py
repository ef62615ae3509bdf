"""DPO from ranked responses (every ranked pair), policy and frozen reference from the SFT run.

  configs/dpo.py                 embedded world rankings, sigmoid loss, beta 0.1
  configs/dpo.py:loss=ipo        IPO instead
"""
import ml_collections

from lmresearch.config import base_config, parse_arg


def get_config(arg=None):
  args = parse_arg(arg)
  c = base_config('dpo', init_from='runs/sft')
  c.data.seq_len = 128   # one prompt + one response per sequence
  c.data.synthetic.update(num_docs=1500, min_k=2, max_k=4)
  c.train.update(steps=150, batch_size=16, lr=3e-5, min_lr=3e-6, warmup_steps=10,
                 weight_decay=0.0, log_every=25, eval_every=50, eval_batches=8)
  c.checkpoint.every = 50
  c.dpo = ml_collections.ConfigDict(dict(beta=float(args.get('beta', 0.1)),
                                         loss=args.get('loss', 'sigmoid')))
  return c

"""DPO from ranked responses (every ranked pair), policy and frozen reference from the SFT run.

  configs/dpo.py                 embedded world rankings, sigmoid loss, beta 0.1
  configs/dpo.py:loss=ipo        IPO instead
  configs/dpo.py:pairs=policy_gold   pairs of SFT samples ranked by the world's gold labeler
"""
import ml_collections

from lmresearch.training.config import Choice, base_config, parse_arg


def get_config(arg=None):
  args = parse_arg(arg, beta=0.1, loss=Choice('sigmoid', 'ipo'),
                   pairs=Choice('rankings', 'policy_gold'))
  c = base_config('dpo', init_from='runs/sft')
  c.data.seq_len = 128   # one prompt + one response per sequence
  c.data.synthetic.update(num_docs=1500, min_k=2, max_k=4)
  c.train.update(steps=150, batch_size=16, lr=3e-5, min_lr=3e-6, warmup_steps=10,
                 weight_decay=0.0, log_every=25, eval_every=50, eval_batches=8)
  c.checkpoint.every = 50
  # pairs: 'rankings' (every ranked pair of config.data's rankings) or 'policy_gold' (pairs of
  # SFT samples ranked by the world's gold labeler, the paper's controlled setting: `policy`).
  c.dpo = ml_collections.ConfigDict(dict(
      beta=args.beta, loss=args.loss, pairs=args.pairs,
      policy=ml_collections.ConfigDict(dict(prompts=1000, eval_prompts=100, samples=4,
                                            max_new_tokens=64, batch_size=64))))
  return c

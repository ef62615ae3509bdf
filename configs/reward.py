"""Reward model from ranked responses, initialized from the SFT run (config.init_from).

  configs/reward.py                    embedded world rankings (every candidate: K = 10 or 11, noise-free labeler)
  configs/reward.py:noise=0.5          the simulated labeler misjudges quality with std 0.5
  configs/reward.py:data=jsonl         rankings from config.data.path (docs/stages.md, "Data formats")
  configs/reward.py:pool=last          InstructGPT's reward head: the scalar at the last token
"""
import ml_collections

from lmresearch.training.config import Choice, base_config, parse_arg


def get_config(arg=None):
  args = parse_arg(arg, noise=0.0, data=Choice('world', 'jsonl'), pool=Choice('sum', 'last'))
  c = base_config('reward', init_from='runs/sft')
  c.data.seq_len = 88    # one prompt + one response (the few longer ones, padded 3-step answers, are cut)
  # Every real candidate (9 per word problem, 8 per fact question) and 2 of the 5 degenerate replies
  # (empty, cut off, repeated, garbage, the question echoed): a forward pass of K responses trains
  # K(K-1)/2 pairs, so large K buys the most pairs per FLOP (InstructGPT's argument for K = 4..9).
  c.data.synthetic.update(num_docs=4000, min_k=11, max_k=11, label_noise=args.noise)
  if args.data == 'jsonl':
    c.data.source = 'jsonl'
  c.train.update(steps=380, batch_size=8, lr=1e-3, min_lr=1e-4, warmup_steps=20,
                 weight_decay=0.0, log_every=25, eval_every=95, eval_batches=5)
  c.checkpoint.every = 95
  # Batch 8 for half the steps rather than batch 4 (docs/devlog.md, "Measured design choices").
  # After training, shift rewards so that the SFT model's own samples average 0.
  # pool='sum': the reward is the sum of the head's scalars over the reply (see reward.pool_rewards);
  # 'last' is InstructGPT's scalar at the final token.
  c.reward = ml_collections.ConfigDict(dict(norm_samples=64, norm_max_new_tokens=64,
                                            pool=args.pool))
  return c

"""PPO (InstructGPT): policy + frozen reference from SFT, value + frozen reward model from the
reward run.

  configs/ppo.py               PPO on the embedded world's questions
  configs/ppo.py:ptx=0.5       PPO-ptx: mix in gamma=0.5 x pretraining log-likelihood
"""
import ml_collections

from lmresearch.training.config import base_config, parse_arg


def rl_config(c):
  c.rl = ml_collections.ConfigDict(dict(max_prompt_len=64, max_new_tokens=48, temperature=1.0,
                                        eval_prompts=128))
  return c


def get_config(arg=None):
  args = parse_arg(arg, ptx=0.0)
  c = rl_config(base_config())
  c.stage = 'ppo'
  c.init_from = 'runs/sft'
  c.reward_from = 'runs/reward'
  c.data.synthetic.num_docs = 2000
  # One step = one rollout of batch_size prompts + epochs x minibatches updates; constant lr.
  # Policy and value are clipped each to clip_norm: under one global norm the value loss's larger
  # gradients scale the policy's update down (docs/devlog.md, "Measured design choices").
  c.train.update(steps=40, batch_size=32, lr=3e-5, min_lr=3e-5, warmup_steps=0,
                 weight_decay=0.0, clip_norm=1.0, clip_per_model=True, log_every=5, eval_every=10)
  c.checkpoint.every = 10
  c.ppo = ml_collections.ConfigDict(dict(
      kl_coef=0.5, gamma=1.0, lam=0.95, clip=0.2, value_clip=0.2, vf_coef=0.5, epochs=2,
      minibatches=2, whiten_advantages=True, ptx_coef=args.ptx,
      # The reward of a reply that is empty or never ends is at most this (normalized RM units:
      # SFT samples average 0); inf leaves it to the reward model alone.
      degenerate_reward=-4.0))
  c.ptx_data = base_config().data      # PPO-ptx: the pretraining data (embedded world by default)
  c.ptx_data.synthetic.num_docs = 2000
  c.ptx_data.seq_len = 64              # batch_size rows of pretraining text per rollout
  return c

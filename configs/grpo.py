"""GRPO with verifiable rewards (answer checking), policy from the SFT run; the GRPO family's
published recipes by name (lmresearch/stages/grpo_family.py).

  configs/grpo.py                   the embedded world's arithmetic problems, the pipeline's GRPO
                                    (GRPO's objective, no KL term unless kl_coef > 0)
  configs/grpo.py:data=gsm8k        GSM8K train.jsonl as prompts (config.data.path)
  configs/grpo.py:recipe=dapo       a paper's settings: grpo (Shao et al. 2024), dapo (Yu et al.
                                    2025), dr_grpo (Liu et al. 2025), gspo (Zheng et al. 2025),
                                    rloo (Ahmadian et al. 2024)
"""
import os

import ml_collections

from lmresearch.stages.grpo_family import RECIPES
from lmresearch.training.config import DATA_DIR, Choice, base_config, parse_arg


def get_config(arg=None):
  args = parse_arg(arg, data=Choice('world', 'gsm8k'), recipe=Choice('default', *RECIPES))
  c = base_config('grpo', init_from='runs/sft')
  c.rl = ml_collections.ConfigDict(dict(max_prompt_len=64, max_new_tokens=48, temperature=1.0,
                                        eval_prompts=64))
  c.data.synthetic.num_docs = 2000
  # One step = batch_size prompts x group_size samples, then epochs x minibatches updates.
  c.train.update(steps=40, batch_size=16, lr=2e-5, min_lr=2e-5, warmup_steps=0, weight_decay=0.0,
                 clip_norm=1.0, log_every=5, eval_every=10)
  c.checkpoint.every = 10
  c.grpo = ml_collections.ConfigDict(dict(
      group_size=8, epochs=1, minibatches=2, recipe=args.recipe,
      # The objective, piece by piece (grpo_family.py names each option's paper):
      advantage='grpo',        # grpo: (r - mean) / std | dr_grpo: r - mean | rloo: leave-one-out
      aggregation='sequence',  # sequence (GRPO) | token (DAPO) | constant (Dr. GRPO) | sum (RLOO)
      ratio='token',           # token | sequence (GSPO)
      clip_low=0.2, clip_high=0.2,   # ratio clipped to [1 - clip_low, 1 + clip_high]
      dynamic_sampling=False,  # DAPO: drop all-equal groups, refill from fresh prompts ...
      max_refills=2,           # ... with at most this many more rollouts per step
      overlong='none',         # none | mask (truncated replies leave the loss) | soft (DAPO)
      overlong_cache=0,        # soft: the penalty ramps over the last N tokens (0: a fifth)
      kl='k3', kl_in='loss',   # the KL estimator (none | k1 | k3) and where (loss | reward) ...
      kl_coef=0.0,             # ... with this weight (0: no KL term)
      tis=False, tis_cap=2.0,  # truncated importance sampling for the sampler/trainer gap
      gap_threshold=0.1,       # |d log p| above which a token counts in grpo/gap_share
      sampler_dtype='',        # '' the policy's; bfloat16: the sampler holds rounded weights
      eval_samples=8))         # replies per held-out prompt: pass@k, maj@k for k = 1, 2, 4 ...
  if args.recipe != 'default':
    c.grpo.update(RECIPES[args.recipe])
  if args.data == 'gsm8k':
    c.data.update(source='jsonl', path=os.path.join(DATA_DIR, 'gsm8k', 'train.jsonl'),
                  eval_path=os.path.join(DATA_DIR, 'gsm8k', 'test.jsonl'))
    c.rl.update(max_prompt_len=256, max_new_tokens=256)
  return c

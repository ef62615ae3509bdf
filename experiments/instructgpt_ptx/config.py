"""Ouyang et al. 2022 (InstructGPT), Sec. 4 / Fig. 28-29: PPO-ptx, gamma in {0, 0.05, 0.1, 0.3, 1}.
Does mixing pretraining gradients into PPO reduce the alignment tax, and at what cost to the
reward?

  bash scripts/demo.sh        # once: runs/demo holds the base, SFT and reward model reused here
  python -m lmresearch.sweep --config=experiments/instructgpt_ptx/config.py \
      --workdir=runs/exp/instructgpt_ptx

Each trial trains PPO(-ptx) from the upstream SFT model against its reward model (the default
pipeline's 30 steps, KL coefficient 2.0) with one gamma and one seed, then evaluates SFT and the
RLHF model. The seeds vary PPO only (rollouts, minibatch order, pretraining rows), not the SFT
model or the reward model. `:upstream=DIR` names another pipeline run.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.config import parse_arg  # noqa: E402


def get_config(arg=None):
  c = load_config('pipeline')
  c.upstream = parse_arg(arg).get('upstream', 'runs/demo')
  c.run = 'pretrain,sft,reward,ppo'
  c.reuse = 'pretrain,sft,reward'
  c.eval.update(models='rlhf', prompting=False, rm_rankings=0, compare_prompts=2)
  return c


def get_sweep(h):
  return h.product([h.sweep('stages.ppo.ppo.ptx_coef', [0.0, 0.05, 0.1, 0.3, 1.0]),
                    h.sweep('seed', [0, 1, 2])])


RLHF = 'stages.rlhf.'
METRICS = {
    RLHF + 'sampled_accuracy': 'RLHF: share of right answers among replies sampled at T=1 (150 questions)',
    RLHF + 'sampled_padded_share': 'RLHF: share of sampled replies padded with filler',
    RLHF + 'sampled_labeler_quality': 'RLHF: gold labeler quality of the sampled replies (0-4)',
    RLHF + 'kl_to_sft': 'RLHF: KL to SFT, mean over samples of sum_t log pi - log pi_sft',
    RLHF + 'sampled_reward_mean': 'RLHF: the reward model\'s mean reward of the samples',
    RLHF + 'answer_accuracy': 'RLHF: greedy answer accuracy (90 word problems + 60 facts)',
    RLHF + 'heldout_loss': 'RLHF: held-out pretraining-distribution loss (nats/token): the tax',
}


def get_report():
  sft = {k: k.replace('rlhf', 'sft') for k in METRICS}
  return {
      'metrics': {**METRICS, **{v: 'the SFT model (the same for every trial)'
                                for v in sft.values()}},
      'plots': [{'x': 'ptx_coef', 'y': k, 'name': k.split('.')[-1], 'hlines': {'SFT': sft[k]},
                 'title': f'{k.split(".")[-1]} vs PPO-ptx gamma'} for k in METRICS],
  }

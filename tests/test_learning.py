"""DPO, PPO and GRPO *learn*: on a seconds-sized problem each moves what it optimizes.

The problem: every question's right answer is 7. A tiny base model and SFT run (the world's
chats, so replies end "The answer is N.") sample other numbers mostly; the preferences say
"The answer is 7." beats "The answer is N." (DPO's pairs, the reward model PPO optimizes), and
GRPO's verifier accepts 7 only. Seeds are fixed ones where each is stable; the assertions are about
direction and size, not exact values.
"""
import json
import random

import jax
import numpy as np
import pytest

from conftest import load_config, tiny
from lmresearch.stages import launch
from lmresearch.data import formats
from lmresearch.training.metrics import read_metrics

DEV = jax.devices()[:1]


@pytest.fixture(scope='session')
def learning_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('learn')
  base = tiny(load_config('pretrain'))
  base.model.max_len = 160
  base.data.update(seq_len=96)
  base.data.synthetic.num_docs = 600
  base.train.update(steps=200, lr=3e-3)
  launch.run(base, str(root / 'base'), devices=DEV)
  sft = tiny(load_config('sft'))
  sft.init_from = str(root / 'base')
  sft.data.seq_len = 96
  sft.data.synthetic.num_docs = 400
  sft.train.update(steps=150, lr=3e-3)
  launch.run(sft, str(root / 'sft'), devices=DEV)
  rng = random.Random(0)
  qs = [p['prompt'] for p in formats.synthetic('prompts', sft.data, 'train')][:200]
  with open(root / 'sevens.jsonl', 'w') as f:   # prompts whose verifiable answer is 7
    for q in qs:
      f.write(json.dumps({'prompt': q, 'answer': '7'}) + '\n')
  with open(root / 'prefer7.jsonl', 'w') as f:  # "7" ranked above another number
    for q in qs:
      other = rng.choice([n for n in range(1, 30) if n != 7])
      f.write(json.dumps({'prompt': q, 'chosen': 'The answer is 7.',
                          'rejected': f'The answer is {other}.'}) + '\n')
  return root


def _stage(name, root, steps, lr):
  c = tiny(load_config(name))
  c.init_from = str(root / 'sft')
  c.data.update(seq_len=96, source='jsonl')
  c.train.update(steps=steps, lr=lr, min_lr=lr, batch_size=8, log_every=1, eval_every=0)
  c.seed = 0
  return c


def _first_last(run_dir, key):
  rows = [r for r in read_metrics(str(run_dir)) if key in r]
  return rows[0][key], rows[-1][key]


def test_dpo_raises_its_margin_and_pair_accuracy(learning_dirs, tmp_path):
  c = _stage('dpo', learning_dirs, steps=15, lr=1e-3)
  c.data.path = str(learning_dirs / 'prefer7.jsonl')
  launch.run(c, str(tmp_path / 'dpo'), devices=DEV)
  m0, m1 = _first_last(tmp_path / 'dpo', 'dpo/margin')
  a0, a1 = _first_last(tmp_path / 'dpo', 'dpo/accuracy')
  assert abs(m0) < 1.0 and m1 > m0 + 2.0, (m0, m1)   # the log-ratio margin grows from ~0
  assert a1 >= 0.9 and a1 > a0, (a0, a1)


def test_ppo_raises_a_fixed_reward_models_score_with_bounded_kl(learning_dirs, tmp_path):
  rm = _stage('reward', learning_dirs, steps=30, lr=1e-3)
  rm.data.path = str(learning_dirs / 'prefer7.jsonl')
  rm.reward.update(norm_samples=16, norm_max_new_tokens=16)
  launch.run(rm, str(tmp_path / 'rm'), devices=DEV)
  c = _stage('ppo', learning_dirs, steps=12, lr=3e-4)
  c.reward_from = str(tmp_path / 'rm')
  c.data.path = str(learning_dirs / 'sevens.jsonl')
  c.rl.update(max_prompt_len=96, max_new_tokens=48, eval_prompts=16)
  c.ppo.kl_coef = 0.3
  launch.run(c, str(tmp_path / 'ppo'), devices=DEV)
  rows = [r for r in read_metrics(str(tmp_path / 'ppo')) if 'ppo/reward_mean' in r]
  first = np.mean([r['ppo/reward_mean'] for r in rows[:3]])
  last = np.mean([r['ppo/reward_mean'] for r in rows[-3:]])
  assert last > first + 3.0, (first, last)        # the fixed scorer's reward rises
  kl = [r['ppo/kl'] for r in rows]                 # ... while the policy stays near SFT:
  assert max(kl) < 10.0, kl                        # under 10 nats over ~40-token replies


def test_grpo_raises_its_verifiable_accuracy(learning_dirs, tmp_path):
  c = _stage('grpo', learning_dirs, steps=30, lr=1e-3)
  c.data.path = str(learning_dirs / 'sevens.jsonl')
  c.rl.update(max_prompt_len=96, max_new_tokens=48, eval_prompts=16)
  c.grpo.group_size = 8
  c.train.batch_size = 4
  launch.run(c, str(tmp_path / 'grpo'), devices=DEV)
  rows = [r for r in read_metrics(str(tmp_path / 'grpo')) if 'grpo/accuracy' in r]
  first = np.mean([r['grpo/accuracy'] for r in rows[:5]])
  last = np.mean([r['grpo/accuracy'] for r in rows[-5:]])
  assert first < 0.1 and last > first + 0.1, (first, last)   # a few 7s at first, then many

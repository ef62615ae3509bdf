"""Post-training stages on a tiny pipeline: base -> SFT -> reward model (-> PPO / DPO / GRPO)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config, stage_config, tiny
from lmresearch.stages import launch
from lmresearch.stages import reward as reward_stage
from lmresearch.training.metrics import read_metrics

def test_sft_trains_only_on_assistant_tokens(pipeline_dirs):
  from lmresearch.stages.sft import SFTStage
  c = tiny(load_config('sft'))
  c.init_from = str(pipeline_dirs / 'base')
  c.data.seq_len = 96
  c.data.synthetic.num_docs = 20
  from lmresearch.training.config import inherit_model
  inherit_model(c)
  stage = SFTStage(c, str(pipeline_dirs / 'sft'))
  batch = stage.train_ds.rows(np.arange(2))
  params = jax.jit(stage.init_params)(jax.random.PRNGKey(0))
  loss = lambda b: float(stage.loss_fn(params, {k: jnp.asarray(v) for k, v in b.items()}, None)[0])
  user = (batch['weights'] == 0) & (batch['segment_ids'] > 0)
  assert user.any() and (batch['weights'] > 0).any()
  changed = dict(batch, targets=np.where(user, (batch['targets'] + 1) % 50, batch['targets']))
  assert loss(changed) == loss(batch)
  asst = batch['weights'] > 0
  changed = dict(batch, targets=np.where(asst, (batch['targets'] + 1) % 50, batch['targets']))
  assert loss(changed) != loss(batch)
  assert any(r['step'] == 2 and 'sft/loss' in r for r in read_metrics(pipeline_dirs / 'sft'))


def test_k_way_ranking_loss_is_the_mean_over_its_pairs():
  r = jnp.array([[2.0, 0.5, 1.0, -1.0]])
  loss, m = reward_stage.ranking_loss(r, jnp.ones((1, 4)), jnp.zeros((1, 4, 4)))
  pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
  expected = np.mean([-np.log(1 / (1 + np.exp(-(r[0, i] - r[0, j])))) for i, j in pairs])
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert float(m['reward/accuracy']) == pytest.approx(5 / 6)   # (1,2) is the one pair out of order
  # a padded 3-way ranking with a tie between 0 and 1 uses only pairs (0,2), (1,2)
  valid, tie = jnp.array([[1.0, 1, 1, 0]]), jnp.zeros((1, 4, 4)).at[0, 0, 1].set(1).at[0, 1, 0].set(1)
  loss, _ = reward_stage.ranking_loss(r, valid, tie)
  expected = np.mean([-np.log(1 / (1 + np.exp(-(r[0, i] - r[0, 2])))) for i in (0, 1)])
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_reward_model_trains_from_sft_and_normalizes(pipeline_dirs, tmp_path):
  c = stage_config('reward', pipeline_dirs)
  c.train.update(eval_every=2, eval_batches=2, batch_size=4)
  out = launch.run(c, str(tmp_path), devices=jax.devices()[:1])
  assert np.isfinite(out['eval/reward/accuracy'])
  norm = json.load(open(tmp_path / 'reward_norm.json'))
  assert norm['num_samples'] == 4 and np.isfinite(norm['offset'])


def test_dpo_and_ipo_losses_equal_their_formulas():
  from lmresearch.stages.dpo import dpo_loss
  pw, pl, rw, rl = (jnp.array([-3.0, -5.0]), jnp.array([-4.0, -2.0]), jnp.array([-3.5, -4.0]),
                    jnp.array([-3.0, -3.0]))
  h = (pw - rw) - (pl - rl)
  loss, m = dpo_loss(pw, pl, rw, rl, beta=0.1)
  np.testing.assert_allclose(loss, np.sum(np.log1p(np.exp(-0.1 * np.asarray(h)))), rtol=1e-6)
  np.testing.assert_allclose(m['dpo/margin'], np.sum(h), rtol=1e-6)
  loss, _ = dpo_loss(pw, pl, rw, rl, beta=0.1, kind='ipo')
  np.testing.assert_allclose(loss, np.sum((np.asarray(h) - 5.0) ** 2), rtol=1e-6)


def test_dpo_stage_runs_from_sft(pipeline_dirs, tmp_path):
  c = stage_config('dpo', pipeline_dirs)
  c.train.update(eval_every=2, eval_batches=1, batch_size=4)
  out = launch.run(c, str(tmp_path), devices=jax.devices()[:1])
  assert np.isfinite(out['eval/dpo/margin']) and 'dpo/margin' in out


def test_gae_matches_a_plain_numpy_loop():
  from lmresearch.stages.rl import gae
  rng = np.random.default_rng(0)
  r, v = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
  mask = np.zeros((3, 7))
  mask[0, 2:6] = 1
  mask[1, 0:7] = 1
  mask[2, 3:4] = 1
  gamma, lam = 0.9, 0.8
  adv, ret = gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(mask), gamma, lam)
  expected = np.zeros_like(r)
  for b in range(3):
    idx = np.nonzero(mask[b])[0]
    last = 0.0
    for k in reversed(range(len(idx))):
      t = idx[k]
      next_v = v[b, idx[k + 1]] if k + 1 < len(idx) else 0.0
      delta = r[b, t] + gamma * next_v - v[b, t]
      last = delta + gamma * lam * last
      expected[b, t] = last
  np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ret, (expected + v) * mask, rtol=1e-5, atol=1e-6)


def test_ppo_clip_bites_where_it_should():
  from lmresearch.stages.rl import clipped_surrogate
  old = jnp.zeros((1, 4))
  new = jnp.log(jnp.array([[1.5, 0.5, 1.1, 0.7]]))   # ratios 1.5, 0.5, 1.1, 0.7
  adv = jnp.array([[1.0, -1.0, 1.0, 1.0]])
  mask = jnp.ones((1, 4))
  loss, frac = clipped_surrogate(new, old, adv, mask, clip=0.2)
  # +adv: min(1.5, 1.2) -> 1.2 (clipped); -adv: min(-0.5, -0.8) -> -0.8 (clipped);
  # 1.1 inside the range; 0.7 with +adv: min(0.7, 0.8) = 0.7 (pessimistic side, unclipped)
  np.testing.assert_allclose(loss, -np.mean([1.2, -0.8, 1.1, 0.7]), rtol=1e-6)
  np.testing.assert_allclose(frac, 0.75)   # ratios outside [0.8, 1.2]: 1.5, 0.5, 0.7
  # gradient is zero through clipped tokens that favour the clip
  g = jax.grad(lambda lp: clipped_surrogate(lp, old, adv, mask, 0.2)[0])(new)
  assert g[0, 0] == 0 and g[0, 1] == 0 and g[0, 2] != 0 and g[0, 3] != 0


def test_clip_per_model_leaves_the_policy_update_alone_when_the_value_gradient_is_large():
  import ml_collections
  import optax
  from lmresearch.training.optimizers import clip_each_model, make_optimizer
  grads = {'policy': {'w': jnp.array([0.3, 0.4])}, 'value': {'w': jnp.array([300., 400.])}}
  clipped, _ = clip_each_model(optax.clip_by_global_norm(1.0)).update(grads, optax.EmptyState())
  np.testing.assert_allclose(clipped['policy']['w'], [0.3, 0.4], rtol=1e-6)   # under its budget
  np.testing.assert_allclose(clipped['value']['w'], [0.6, 0.8], rtol=1e-6)    # scaled to norm 1
  shared, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
  assert float(jnp.linalg.norm(shared['policy']['w'])) < 1e-3                  # what it avoids
  # and the trainer's optimizer uses it when the config asks
  cfg = ml_collections.ConfigDict(dict(clip_norm=1.0, clip_per_model=True, lr=0.1, min_lr=0.1,
                                       warmup_steps=0, steps=10, decay_steps=0, b1=0.9, b2=0.99,
                                       weight_decay=0.0))
  params = jax.tree.map(jnp.zeros_like, grads)

  def first_moment(per_model):   # Adam's first moment after one step: (1 - b1) x what it was fed
    opt = make_optimizer(ml_collections.ConfigDict({**cfg.to_dict(), 'clip_per_model': per_model}))
    _, state = opt.update(grads, opt.init(params), params)
    return optax.tree_utils.tree_get(state, 'mu')

  mu = first_moment(True)   # each model clipped by its own norm
  np.testing.assert_allclose(mu['policy']['w'], 0.1 * np.array([0.3, 0.4]), rtol=1e-5)
  np.testing.assert_allclose(mu['value']['w'], 0.1 * np.array([0.6, 0.8]), rtol=1e-5)
  mu = first_moment(False)  # one global norm: the value's gradient scales the policy's down
  np.testing.assert_allclose(mu['policy']['w'], 0.1 * np.array([0.3, 0.4]) / np.hypot(0.5, 500),
                             rtol=1e-4)


def test_ppo_caps_the_reward_of_empty_and_unending_replies_whatever_the_reward_model_says():
  from lmresearch.stages import rl
  e, a = 6, 5   # <|end|>, <|assistant|>
  tokens = jnp.array([[a, e, 0, 0],     # ends at once: empty
                      [a, 40, e, 0],    # one content token, then the end: a real (short) reply
                      [a, 40, 41, 42],  # never ends
                      [a, 2, e, 0]])    # only special tokens before the end: empty too
  resp = jnp.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 0]], jnp.float32)
  finished = jnp.array([True, True, False, True])
  scores, empty, unfinished = rl.cap_degenerate(jnp.array([5.0, 5.0, 5.0, -9.0]), tokens, resp,
                                                finished, -4.0)
  np.testing.assert_array_equal(empty, [True, False, False, True])
  np.testing.assert_array_equal(unfinished, [False, False, True, False])
  np.testing.assert_array_equal(scores, [-4.0, 5.0, -4.0, -9.0])   # a cap, never a raise


def test_group_advantages_are_normalized_per_group():
  from lmresearch.stages.grpo import group_advantages
  adv = group_advantages(np.array([1, 0, 0, 0, 1, 1, 1, 1], np.float32), 4)
  np.testing.assert_allclose(adv[:4].mean(), 0, atol=1e-6)
  assert adv[0] > 0 > adv[1] and np.allclose(adv[4:], 0)


def test_ppo_runs_from_sft_and_logs_its_rollout_and_update(pipeline_dirs, tmp_path):
  c = stage_config('ppo', pipeline_dirs)
  c.train.update(batch_size=4, eval_every=2)
  out = launch.run(c, str(tmp_path / 'ppo'), devices=jax.devices()[:1])
  for k in ('ppo/reward_mean', 'ppo/kl', 'ppo/entropy', 'ppo/clip_frac', 'ppo/value_loss',
            'ppo/response_len', 'ppo/empty_frac', 'ppo/unfinished_frac', 'eval/ppo/reward_mean',
            'eval/ppo/unfinished_frac', 'train/grad_norm_policy', 'train/grad_norm_value'):
    assert np.isfinite(out[k]), k


def test_ppo_ptx_optimizes_the_ppo_loss_plus_gamma_times_the_pretraining_nll(pipeline_dirs, tmp_path):
  c = stage_config('ppo', pipeline_dirs)
  c.train.update(batch_size=4, eval_every=2)
  c.ppo.ptx_coef = 0.5
  c.ptx_data.update(seq_len=32, vocab_size=300)
  c.ptx_data.synthetic.num_docs = 50
  out = launch.run(c, str(tmp_path / 'ppo_ptx'), devices=jax.devices()[:1])
  assert out['ppo/ptx_loss'] > 0
  np.testing.assert_allclose(out['train/loss'], out['ppo/policy_loss'] + 0.5 * out['ppo/value_loss']
                             + 0.5 * out['ppo/ptx_loss'], rtol=1e-4, atol=1e-5)


def test_grpo_runs_from_sft(pipeline_dirs, tmp_path):
  c = stage_config('grpo', pipeline_dirs)
  c.grpo.group_size = 4
  c.train.update(batch_size=2, eval_every=2)
  out = launch.run(c, str(tmp_path / 'grpo'), devices=jax.devices()[:1])
  for k in ('grpo/accuracy', 'grpo/kl', 'eval/grpo/accuracy'):
    assert np.isfinite(out[k]), k


def test_grpo_logs_the_sampler_trainer_gap_at_fp32_noise_and_pass_at_k(pipeline_dirs, tmp_path):
  """Sampler and trainer in the same numerics: the log-probs of the sampled tokens agree to fp32
  noise; each evaluation logs pass@k and maj@k up to eval_samples."""
  c = stage_config('grpo', pipeline_dirs)
  c.grpo.update(group_size=4, eval_samples=4)
  c.train.update(batch_size=2, eval_every=2)
  out = launch.run(c, str(tmp_path / 'grpo'), devices=jax.devices()[:1])
  assert out['grpo/gap_max'] < 1e-5, out['grpo/gap_max']   # measured: 5e-7
  for k in ('pass@1', 'pass@2', 'pass@4', 'maj@4', 'entropy'):
    assert np.isfinite(out[f'eval/grpo/{k}']), k
  assert out['eval/grpo/pass@1'] <= out['eval/grpo/pass@4']


@pytest.mark.parametrize('recipe', ['dapo', 'dr_grpo', 'gspo', 'rloo'])
def test_grpo_family_recipes_train(recipe, pipeline_dirs, tmp_path):
  """Each published recipe runs as the stage's options (configs/grpo.py:recipe=NAME); DAPO's
  here with a sampler holding bf16 weights: the gap is measured, and TIS weights it."""
  c = stage_config('grpo', pipeline_dirs, arg=f'recipe={recipe}')
  c.grpo.update(group_size=4, eval_samples=2, max_refills=1)
  if recipe == 'dapo':
    c.grpo.update(sampler_dtype='bfloat16', tis=True)
  c.train.update(batch_size=2, eval_every=2)
  out = launch.run(c, str(tmp_path / recipe), devices=jax.devices()[:1])
  assert np.isfinite(out['train/loss']) and np.isfinite(out['grpo/entropy'])
  if recipe == 'dapo':
    assert out['grpo/gap_mean'] > 1e-4, out['grpo/gap_mean']   # measured: 2.6e-4
  if recipe == 'rloo':
    assert 'grpo/kl' not in out   # its KL is in the reward, not the loss


def _saved_params(workdir):
  import orbax.checkpoint as ocp
  from lmresearch.training.checkpoint import Checkpointer
  ckpt = Checkpointer(str(workdir / 'checkpoints'))
  step = max(ckpt.manager.all_steps())
  params = ckpt.manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))['params']
  ckpt.close()
  return params


def test_ppo_value_model_starts_from_the_normalized_reward_model(pipeline_dirs, tmp_path):
  import shutil
  # The same reward model, pooled at the last token (InstructGPT) instead of summed.
  last = tmp_path / 'reward_last'
  shutil.copytree(pipeline_dirs / 'reward', last)
  cfg = json.load(open(last / 'config.json'))
  assert cfg['reward']['pool'] == 'sum'
  cfg['reward']['pool'] = 'last'
  json.dump(cfg, open(last / 'config.json', 'w'))
  rm = _saved_params(pipeline_dirs / 'reward')
  offset = reward_stage.load_reward_offset(str(pipeline_dirs / 'reward'))
  assert offset != 0
  for name, reward_from in (('sum', pipeline_dirs / 'reward'), ('last', last)):
    c = stage_config('ppo', pipeline_dirs)
    c.reward_from = str(reward_from)
    c.train.update(steps=1, lr=0.0, min_lr=0.0, batch_size=4, eval_every=0)   # lr 0: the start
    launch.run(c, str(tmp_path / name), devices=jax.devices()[:1])
    value = _saved_params(tmp_path / name)['value']
    for a, b in zip(jax.tree.leaves(value['backbone']), jax.tree.leaves(rm['backbone'])):
      np.testing.assert_array_equal(a, b)
    if name == 'last':   # the scalar at a token is a return estimate: RM minus the offset
      np.testing.assert_allclose(value['score']['bias'], rm['score']['bias'] - offset, rtol=1e-6)
      np.testing.assert_array_equal(value['score']['kernel'], rm['score']['kernel'])
    else:                # the reward model itself; PPO subtracts the offset from its running sum
      np.testing.assert_array_equal(value['score']['kernel'], rm['score']['kernel'])
      np.testing.assert_array_equal(value['score']['bias'], rm['score']['bias'])


def test_summed_reward_counts_only_the_reply():
  tokens = jnp.array([[1, 4, 9, 9, 6, 5, 7, 8, 6, 0],    # <|bos|><|user|>..<|end|><|assistant|> 7 8 <|end|> pad
                      [0, 1, 4, 9, 6, 5, 7, 6, 0, 0]])   # left pad; the reply is 7 <|end|>
  mask = jnp.array([[1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
                    [0, 1, 1, 1, 1, 1, 1, 1, 0, 0]])
  values = jnp.arange(10, dtype=jnp.float32)[None].repeat(2, 0)
  np.testing.assert_allclose(reward_stage.pool_rewards(values, tokens, mask, 'sum'), [6 + 7 + 8, 6 + 7])
  np.testing.assert_allclose(reward_stage.pool_rewards(values, tokens, mask, 'last'), [8, 7])

"""PPO against the reward model (InstructGPT), and PPO-ptx.

Policy and frozen reference start from the SFT run (config.init_from); the value model and the
frozen reward model from the reward run (config.reward_from). Per step: sample responses, score
them (reward model minus its SFT-sample mean), penalize each token by beta * (log pi - log ref),
estimate advantages with GAE (a reply that is empty or never ends scores at most
ppo.degenerate_reward, whatever the reward model says), then several minibatch epochs of the clipped surrogate plus a
clipped value loss. With ptx_coef > 0 (PPO-ptx) the pretraining log-likelihood on pretraining
batches is mixed into every update.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lmresearch.core import parallel
from lmresearch.generation import batched
from lmresearch.data import formats, packing, sources
from lmresearch.models import lora
from lmresearch.models.logprobs import positions_from_mask, target_logprobs, token_logprobs
from lmresearch.stages import rl
from lmresearch.stages.base import load_parent_params
from lmresearch.stages.reward import after, build_scalar_model, load_reward_offset, reward_pool, score


ROLLOUT_STATS = ('ppo/reward_mean', 'ppo/reward_std', 'ppo/kl', 'ppo/response_len',
                 'ppo/empty_frac', 'ppo/unfinished_frac')


class PPOStage(rl.RLStage):
  name = 'ppo'
  rollout_keys = ROLLOUT_STATS

  def __init__(self, config, workdir: str):
    super().__init__(config, workdir)
    self.value_model = build_scalar_model(config, self.tokenizer)
    self.rm_model = build_scalar_model(config, self.tokenizer, lora=False)   # frozen: no adapters
    self.prompts = self.prompt_dataset(formats.load('questions', config.data, 'train'))
    self.eval_prompts = self.load_eval_prompts('questions')
    self.ptx_ds = None
    if config.ppo.ptx_coef > 0:
      docs = sources.documents(config.ptx_data, 'train')
      self.ptx_ds = packing.PackedDataset.from_token_lists(
          self.tokenizer.encode_batch(docs), config.ptx_data.seq_len, self.tokenizer.bos_id,
          self.tokenizer.eos_id)
    self.reward_offset = load_reward_offset(config.reward_from)
    self.reward_pool = reward_pool(config.reward_from)

  # ---- models and params ---------------------------------------------------------------------
  def init_params(self, rng):
    tokens = jnp.zeros((1, self.config.data.seq_len), jnp.int32)
    k1, k2 = jax.random.split(rng)
    return {'policy': self.model.init(k1, tokens)['params'],
            'value': self.value_model.init(k2, tokens)['params']}

  def initial_params(self, params, shardings):
    policy = load_parent_params(self.config.init_from, params['policy'], shardings['policy'])
    value = load_parent_params(self.config.reward_from, params['value'], shardings['value'])
    # The value model predicts normalized returns and starts as the reward model, read as "the
    # reward of the reply so far" (see `values`). A last-token reward model's head is shifted by the
    # SFT-sample mean here, not left off by that offset at every token (which early GAE would read
    # as a huge advantage); a summing one has the offset subtracted in `values`.
    if self.reward_pool == 'sum':
      return {'policy': policy, 'value': value}
    score = dict(value['score'], bias=value['score']['bias'] - self.reward_offset)
    return {'policy': policy, 'value': {**value, 'score': score}}

  def values(self, value_params, tokens, mask, positions, prompt_len: int):
    """V at every position: the value model's scalar there, or for a summing reward model the sum
    of its scalars over the reply up to there (so V at the reply's last token is its reward)."""
    v = self.value_model.apply({'params': value_params}, tokens, positions, mask)
    if self.reward_pool == 'sum':
      return jnp.cumsum(v * after(tokens, mask, prompt_len), -1) - self.reward_offset
    return v

  def bind(self, mesh, rules):
    super().bind(mesh, rules)
    abstract, shardings = parallel.abstract_and_shardings(
        lambda: self.rm_model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params'],
        mesh, rules)
    self.rm_params = load_parent_params(self.config.reward_from, abstract, shardings)
    if self.lora:   # keep only the score head: the backbone is the value model's base
      self.rm_params = {'score': self.rm_params['score']}
    self._rollout = jax.jit(self.rollout)

  def reward_params(self, params):
    """The frozen reward model; with LoRA its backbone is the value model's frozen base (read
    from this step's params: one copy) and only its small score head is kept apart."""
    if not self.lora:
      return self.rm_params
    return {'backbone': lora.base(params['value'])['backbone'], 'score': self.rm_params['score']}

  # ---- data ----------------------------------------------------------------------------------
  def train_iterator(self):
    it = packing.train_iterator(self.prompts, self.config.train.batch_size, self.config.seed)
    if self.ptx_ds is None:
      return it
    return _Zip(it, packing.train_iterator(self.ptx_ds, self.config.train.batch_size,
                                           self.config.seed + 1))

  # ---- rollout (device) ----------------------------------------------------------------------
  def rollout(self, params, ref_params, rm_params, batch, rng):
    rc, pc = self.config.rl, self.config.ppo
    out = batched.generate_arrays(self.model, params['policy'], batch['prompt'],
                                   batch['prompt_mask'], rng, max_new_tokens=rc.max_new_tokens,
                                   temperature=rc.temperature, stop_ids=self.tokenizer.stop_ids,
                                   pad_id=self.tokenizer.pad_id)
    tokens, mask = out['tokens'], out['mask']
    resp = rl.response_mask(mask, batch['prompt'].shape[1])
    old_lp = token_logprobs(self.model, params['policy'], tokens, mask)
    ref_lp = token_logprobs(self.ref_model, ref_params, tokens, mask)
    positions = positions_from_mask(mask)
    p_len = batch['prompt'].shape[1]
    values = self.values(params['value'], tokens, mask, positions, p_len)[:, :-1]
    scores = score(self.rm_model, rm_params, tokens, mask, positions,
                   self.reward_pool, after(tokens, mask, p_len)) - self.reward_offset
    scores, empty, unfinished = rl.cap_degenerate(scores, tokens, resp, out['finished'],
                                                  pc.degenerate_reward, self.tokenizer.special_ids)
    kl = (old_lp - ref_lp) * resp
    last = jax.nn.one_hot(jnp.sum(resp, 1).astype(jnp.int32) + batch['prompt'].shape[1] - 2,
                          resp.shape[1]) * (jnp.sum(resp, 1, keepdims=True) > 0)
    rewards = -pc.kl_coef * kl + last * scores[:, None]
    adv, returns = rl.gae(rewards, values, resp, pc.gamma, pc.lam)
    if pc.whiten_advantages:
      adv = rl.whiten(adv, resp)
    rows = dict(tokens=tokens, mask=mask, resp=resp, old_lp=old_lp, old_values=values * resp,
                adv=adv, returns=returns, finished=out['finished'])
    for k in ('inputs', 'targets', 'positions', 'segment_ids', 'weights'):   # PPO-ptx rows
      if k in batch:
        rows['ptx_' + k] = batch[k]
    stats = {'ppo/reward_mean': jnp.mean(scores), 'ppo/reward_std': jnp.std(scores),
             'ppo/kl': jnp.mean(jnp.sum(kl, 1)),
             'ppo/response_len': jnp.mean(jnp.sum(resp, 1)),
             'ppo/empty_frac': jnp.mean(empty), 'ppo/unfinished_frac': jnp.mean(unfinished)}
    return rows, stats

  def prepare(self, batch, state):
    rng = rl.rollout_rng(state)
    params = state.full_params
    rows, stats = self._rollout(params, self.reference(params), self.reward_params(params), batch, rng)
    return {**rows, **stats}

  # ---- update (device) -----------------------------------------------------------------------
  def loss_fn(self, params, mb, rng):
    pc = self.config.ppo
    lp, entropy = token_logprobs(self.model, params['policy'], mb['tokens'], mb['mask'], rng,
                                 self.config.model.dropout, with_entropy=True)
    resp = mb['resp']
    pg_loss, clip_frac = rl.clipped_surrogate(lp, mb['old_lp'], mb['adv'], resp, pc.clip)
    positions = positions_from_mask(mb['mask'])
    values = self.values(params['value'], mb['tokens'], mb['mask'], positions,
                         self.config.rl.max_prompt_len)[:, :-1]
    v_clipped = mb['old_values'] + jnp.clip(values - mb['old_values'], -pc.value_clip, pc.value_clip)
    v_loss = 0.5 * rl.masked_mean(jnp.maximum(jnp.square(values - mb['returns']),
                                              jnp.square(v_clipped - mb['returns'])), resp)
    loss = pg_loss + pc.vf_coef * v_loss
    metrics = {'ppo/policy_loss': pg_loss, 'ppo/value_loss': v_loss, 'ppo/clip_frac': clip_frac,
               'ppo/entropy': rl.masked_mean(entropy, resp),
               'ppo/approx_kl': rl.masked_mean(mb['old_lp'] - lp, resp)}
    if 'ptx_inputs' in mb:
      logits = self.model.apply({'params': params['policy']}, mb['ptx_inputs'], mb['ptx_positions'],
                                mb['ptx_segment_ids'])
      ptx = rl.masked_mean(-target_logprobs(logits, mb['ptx_targets'])[0], mb['ptx_weights'])
      loss = loss + pc.ptx_coef * ptx
      metrics['ppo/ptx_loss'] = ptx
    return loss, metrics

  # ---- held-out check --------------------------------------------------------------------------
  def evaluate(self, params) -> dict:
    """Mean normalized reward and KL of sampled responses to a fixed set of held-out prompts."""
    b = {k: jnp.asarray(v) for k, v in self.eval_rows().items()}
    rows, stats = self._rollout(params, self.reference(params), self.reward_params(params), b,
                                jax.random.PRNGKey(1))
    out = {f'eval/{k}': float(stats[k]) for k in ROLLOUT_STATS}
    n = b['prompt'].shape[0]   # the proxy's standard error over the held-out prompts
    out['eval/ppo/reward_mean_se'] = out['eval/ppo/reward_std'] * (n / max(n - 1, 1)) ** 0.5 / n ** 0.5
    if self.config.data.source == 'synthetic':   # the world's gold labeler knows its questions
      out.update(self.gold_scores(rows['tokens'], rows['mask'], rows['finished']))
    return out


class _Zip:
  """Two checkpointable iterators as one (prompts + PPO-ptx pretraining rows)."""

  def __init__(self, a, b):
    self.a, self.b = a, b

  def __next__(self):
    return {**next(self.a), **next(self.b)}

  def get_state(self):
    return {'prompts': self.a.get_state(), 'ptx': self.b.get_state()}

  def set_state(self, state):
    self.a.set_state(state['prompts'])
    self.b.set_state(state['ptx'])

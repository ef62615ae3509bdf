"""GRPO with verifiable rewards, and its family (DAPO, Dr. GRPO, GSPO, RLOO) as named options: no
value model, no reward model.

Each prompt is answered G times; a reply earns 1 if its final answer ('The answer is N' / '#### N')
equals the gold answer, else 0. Advantages come from the group (config.grpo.advantage), the policy
follows a clipped ratio objective (per token or per sequence, with its own lower and upper clip)
aggregated over tokens as the chosen paper does, optionally with a KL term to the frozen SFT
reference in the loss or in the reward. Every piece and the published recipes are in
stages/grpo_family.py (`configs/grpo.py:recipe=dapo`).

Each step also measures what the recipes react to: the gap between the sampler's and the
trainer's log-probs of the sampled tokens (truncated importance sampling corrects for it with
config.grpo.tis), the token entropy, clipping on each side; and each evaluation what RL does to
the spread of answers: pass@k and maj@k over config.grpo.eval_samples samples per held-out prompt
(stages/answer_stats.py), the length of right and of wrong replies.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lmresearch.core import parallel
from lmresearch.core.errors import ConfigError
from lmresearch.data import formats
from lmresearch.generation import batched
from lmresearch.models.logprobs import token_logprobs
from lmresearch.stages import answer_stats, rl
from lmresearch.stages import grpo_family as gf
from lmresearch.text.answers import is_correct, predict

OPTIONS = {'advantage': gf.ADVANTAGES, 'aggregation': gf.AGGREGATIONS, 'ratio': gf.RATIOS,
           'overlong': gf.OVERLONG, 'kl': gf.KL_ESTIMATORS, 'kl_in': gf.KL_PLACES,
           'sampler_dtype': ('', 'float32', 'bfloat16', 'float16')}


def group_advantages(rewards, group: int, eps: float = 1e-4):
  """rewards [n * group] (groups contiguous) -> (r - group mean) / (group std + eps)."""
  return gf.advantages(rewards, group, 'grpo', eps)


def as_sampler_holds(params, dtype: str):
  """The policy's weights as a sampler in `dtype` holds them (rounded, computed as before): the
  sampler/trainer numerics gap of an inference engine in lower precision, made measurable."""
  if not dtype:
    return params
  return jax.tree.map(lambda x: x.astype(dtype).astype(x.dtype)
                      if jnp.issubdtype(x.dtype, jnp.floating) else x, params)


class GRPOStage(rl.RLStage):
  name = 'grpo'
  rollout_keys = ('grpo/accuracy', 'grpo/response_len', 'grpo/kept_groups', 'grpo/gap_mean',
                  'grpo/gap_max', 'grpo/gap_share', 'grpo/truncated')

  @classmethod
  def validate(cls, config) -> None:
    super().validate(config)
    gc = config.grpo
    for key, allowed in OPTIONS.items():
      if gc[key] not in allowed:
        raise ConfigError(f'config.grpo.{key}={gc[key]!r}: expected one of {list(allowed)}.')
    if not (0 <= gc.clip_low < 1 and gc.clip_high >= 0):
      raise ConfigError(f'config.grpo.clip_low={gc.clip_low} / clip_high={gc.clip_high}: the '
                        'clip range is [1 - clip_low, 1 + clip_high], clip_low in [0, 1).')
    if gc.group_size < 2:
      raise ConfigError(f'config.grpo.group_size={gc.group_size}: a group needs 2 replies or more.')
    if gc.eval_samples < 1:
      raise ConfigError(f'config.grpo.eval_samples={gc.eval_samples} must be >= 1.')

  def __init__(self, config, workdir: str):
    super().__init__(config, workdir)
    train = formats.load('prompts', config.data, 'train')
    if any(not p['answer'] for p in train):
      raise ValueError('GRPO needs an "answer" for every prompt (verifiable reward).')
    self.train_ds = self.prompt_dataset(train)
    self.eval_prompts = self.load_eval_prompts('prompts')

  def bind(self, mesh, rules):
    super().bind(mesh, rules)
    self._sample = jax.jit(self._sample_fn, static_argnames=('group', 'temperature'))
    self._logprobs = jax.jit(lambda p, t, m: token_logprobs(self.model, p, t, m, with_entropy=True))
    self._ref_logprobs = jax.jit(lambda p, t, m: token_logprobs(self.ref_model, p, t, m))

  def _sample_fn(self, params, prompt, prompt_mask, rng, group: int, temperature: float):
    prompt, prompt_mask = jnp.repeat(prompt, group, 0), jnp.repeat(prompt_mask, group, 0)
    return batched.generate_arrays(self.model, params, prompt, prompt_mask, rng,
                                   max_new_tokens=self.config.rl.max_new_tokens,
                                   temperature=temperature, stop_ids=self.tokenizer.stop_ids,
                                   pad_id=self.tokenizer.pad_id)

  def _judge(self, out, indices, dataset, group: int):
    """Host side: each reply decoded and its final answer checked -> (right [rows] bool, the
    answers, lengths [rows])."""
    p = dataset.prompt.shape[1]
    host = parallel.fetch({'tokens': out['tokens'], 'lengths': out['lengths'], 'i': indices})
    tokens, lengths = np.asarray(host['tokens'])[:, p:], np.asarray(host['lengths'])
    golds = [dataset.examples[int(i)]['answer'] for i in np.asarray(host['i'])]
    texts = [self.tokenizer.decode(tokens[k, :lengths[k]], skip_special=True)
             for k in range(len(tokens))]
    right = np.array([is_correct(t, golds[k // group]) for k, t in enumerate(texts)], bool)
    return right, [predict(t, golds[k // group]) for k, t in enumerate(texts)], lengths

  def _rewards(self, out, indices, dataset, group: int):
    return self._judge(out, indices, dataset, group)[0].astype(np.float32)

  def _rollout(self, params, batch, rng):
    """One batch of groups, and with dynamic sampling the groups of fresh prompts that replace
    those whose rewards are all equal (up to config.grpo.max_refills more rollouts; groups still
    missing then are filled with dropped ones, kept out of the loss) -> (the rollout's arrays,
    rewards, keep [rows])."""
    gc, g = self.config.grpo, self.config.grpo.group_size
    temperature = self.config.rl.temperature
    out = self._sample(params, batch['prompt'], batch['prompt_mask'], rng, group=g,
                       temperature=temperature)
    rewards = self._rewards(out, batch['index'], self.train_ds, g)
    n = len(rewards) // g
    if not gc.dynamic_sampling:
      return out, rewards, np.ones(len(rewards), np.float32)
    pieces = [(out, rewards)]
    for refill in range(gc.max_refills):
      if sum((~np.asarray(gf.all_equal_groups(jnp.asarray(r), g))).sum() for _, r in pieces) >= n:
        break
      # Fresh prompts, a pure function of the step's key and the refill (resumes stay exact).
      key = jax.random.fold_in(rng, 1 + refill)
      idx = np.asarray(jax.random.choice(key, len(self.train_ds), (n,), replace=False)
                       if len(self.train_ds) >= n else
                       jax.random.randint(key, (n,), 0, len(self.train_ds)))
      more = self.train_ds.rows(idx)
      o = self._sample(params, more['prompt'], more['prompt_mask'], jax.random.fold_in(key, 7),
                       group=g, temperature=temperature)
      pieces.append((o, self._rewards(o, more['index'], self.train_ds, g)))
    rows, keep = gf.select_groups([r for _, r in pieces], g, n)
    both = {k: jnp.concatenate([pc[0][k] for pc in pieces]) for k in out}
    picked = jax.tree.map(lambda x: jnp.take(x, jnp.asarray(rows), axis=0), both)
    rewards = np.concatenate([pc[1] for pc in pieces])[rows]
    return picked, rewards, keep

  def prepare(self, batch, state):
    gc, rc = self.config.grpo, self.config.rl
    g = gc.group_size
    sampler_params = as_sampler_holds(state.full_params, gc.sampler_dtype)
    out, rewards, keep = self._rollout(sampler_params, batch, rl.rollout_rng(state))
    tokens, mask = out['tokens'], out['mask']
    p = batch['prompt'].shape[1]
    resp = rl.response_mask(mask, p)
    old_lp, _ = self._logprobs(state.full_params, tokens, mask)
    # The sampler's log-probs of its own tokens, aligned with the targets (token p + j is target
    # p + j - 1): the trainer recomputes them above, and the two should agree.
    sampler_lp = jnp.concatenate([jnp.zeros((tokens.shape[0], p - 1), jnp.float32),
                                  out['logprobs']], axis=1)[:, :old_lp.shape[1]]
    gap = gf.logprob_gap(old_lp, sampler_lp, resp, gc.gap_threshold)
    accuracy = float(rewards[keep > 0].mean()) if keep.any() else float(rewards.mean())
    finished = np.asarray(parallel.fetch(out['finished']))
    shaped = rewards.copy()
    if gc.overlong == 'soft':
      cache = gc.overlong_cache or max(1, rc.max_new_tokens // 5)
      shaped = shaped + np.asarray(gf.overlong_penalty(
          jnp.asarray(parallel.fetch(out['lengths'])), jnp.asarray(finished), rc.max_new_tokens,
          cache))
    rows = dict(tokens=tokens, mask=mask, old_lp=old_lp, reply=resp)   # reply: every sampled token
    kl_on = gc.kl != 'none' and gc.kl_coef > 0
    if kl_on:
      ref_lp = self._ref_logprobs(self.reference(state.full_params), tokens, mask)
      if gc.kl_in == 'reward':
        per_reply = jnp.sum(gf.kl_estimate(old_lp, ref_lp, gc.kl) * resp, 1)
        shaped = shaped - gc.kl_coef * np.asarray(parallel.fetch(per_reply))
      else:
        rows['ref_lp'] = ref_lp
    if gc.overlong == 'mask':
      resp = resp * jnp.asarray(finished, jnp.float32)[:, None]
    resp = resp * jnp.asarray(keep)[:, None]
    adv = jnp.asarray(gf.advantages(jnp.asarray(shaped), g, gc.advantage))
    rows.update(resp=resp, adv=adv[:, None] * resp)
    if gc.tis:
      rows['tis'] = gf.tis_weights(old_lp, sampler_lp, gc.tis_cap)
    return {**rows, 'grpo/accuracy': jnp.float32(accuracy),
            'grpo/response_len': jnp.mean(jnp.sum(rl.response_mask(mask, p), 1)),
            'grpo/kept_groups': jnp.float32(keep.mean()),
            'grpo/gap_mean': gap['mean'], 'grpo/gap_max': gap['max'],
            'grpo/gap_share': gap['share_above'],
            'grpo/truncated': jnp.float32(1.0 - finished.mean())}

  def loss_fn(self, params, mb, rng):
    gc = self.config.grpo
    lp, entropy = token_logprobs(self.model, params, mb['tokens'], mb['mask'], rng,
                                 self.config.model.dropout, with_entropy=True)
    resp = mb['resp']
    agg = lambda x: gf.aggregate(x, resp, gc.aggregation, self.config.rl.max_new_tokens)
    ratio = gf.ratios(lp, mb['old_lp'], resp, gc.ratio)
    per_token, low, high = gf.clipped_objective(ratio, mb['adv'], gc.clip_low, gc.clip_high)
    if 'tis' in mb:
      per_token = per_token * mb['tis']
    loss = agg(per_token)
    metrics = {'grpo/clip_frac': rl.masked_mean((low | high).astype(jnp.float32), resp),
               'grpo/clip_low_frac': rl.masked_mean(low.astype(jnp.float32), resp),
               'grpo/clip_high_frac': rl.masked_mean(high.astype(jnp.float32), resp),
               'grpo/entropy': rl.masked_mean(entropy, mb['reply'])}
    if 'ref_lp' in mb:
      kl = gf.kl_estimate(lp, mb['ref_lp'], gc.kl)
      loss = loss + gc.kl_coef * agg(kl)
      metrics['grpo/kl'] = rl.masked_mean(kl, resp)
    return loss, metrics

  def evaluate(self, params) -> dict:
    """On a fixed set of held-out prompts: greedy accuracy, and eval_samples replies per prompt
    at the training temperature (fixed key, so steps compare): their accuracy, pass@k and maj@k
    for k = 1, 2, 4 ... eval_samples, the length of right and of wrong replies, token entropy."""
    rows = self.eval_rows()
    prompt, mask = jnp.asarray(rows['prompt']), jnp.asarray(rows['prompt_mask'])
    greedy = self._sample(params, prompt, mask, jax.random.PRNGKey(0), group=1, temperature=0.0)
    n = self.config.grpo.eval_samples
    sampled = self._sample(params, prompt, mask, jax.random.PRNGKey(1), group=n,
                           temperature=self.config.rl.temperature)
    right, answers, lengths = self._judge(sampled, rows['index'], self.eval_prompts, n)
    _, entropy = self._logprobs(params, sampled['tokens'], sampled['mask'])
    resp = rl.response_mask(sampled['mask'], prompt.shape[1])
    stats = answer_stats.curve(right.reshape(-1, n), [answers[i:i + n] for i in
                                                      range(0, len(answers), n)],
                               lengths.reshape(-1, n))
    out = {'eval/grpo/accuracy': float(self._rewards(greedy, rows['index'], self.eval_prompts,
                                                     1).mean()),
           'eval/grpo/sampled_accuracy': float(right.mean()),
           'eval/grpo/entropy': float(rl.masked_mean(entropy, resp))}
    out.update({f'eval/grpo/{k}': v for k, v in stats.items()})
    return out

  def tokens_per_step(self) -> int:
    rc = self.config.rl
    return self.config.train.batch_size * self.config.grpo.group_size * (rc.max_prompt_len + rc.max_new_tokens)

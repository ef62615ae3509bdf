"""GRPO (Shao et al. 2024) with verifiable rewards: no value model, no reward model.

Each prompt is answered G times; a response earns 1 if its final answer ('The answer is N' /
'#### N') equals the gold answer, else 0. Advantages are normalized within each group of G
((r - mean) / (std + eps)), and the policy follows the clipped ratio objective, optionally with a
KL penalty to the frozen SFT reference (the k3 estimator).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lmresearch.core import parallel
from lmresearch.generation import batched
from lmresearch.data import formats
from lmresearch.text.answers import is_correct
from lmresearch.models.logprobs import token_logprobs
from lmresearch.stages import rl


def group_advantages(rewards, group: int, eps: float = 1e-4):
  """rewards [n * group] (groups contiguous) -> (r - group mean) / (group std + eps)."""
  r = rewards.reshape(-1, group)
  adv = (r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + eps)
  return adv.reshape(-1)


class GRPOStage(rl.RLStage):
  name = 'grpo'
  rollout_keys = ('grpo/accuracy', 'grpo/response_len')

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
    self._logprobs = jax.jit(lambda p, t, m: token_logprobs(self.model, p, t, m))
    self._ref_logprobs = jax.jit(lambda p, t, m: token_logprobs(self.ref_model, p, t, m))

  def _sample_fn(self, params, prompt, prompt_mask, rng, group: int, temperature: float):
    prompt, prompt_mask = jnp.repeat(prompt, group, 0), jnp.repeat(prompt_mask, group, 0)
    return batched.generate_arrays(self.model, params, prompt, prompt_mask, rng,
                                    max_new_tokens=self.config.rl.max_new_tokens,
                                    temperature=temperature, stop_ids=self.tokenizer.stop_ids,
                                    pad_id=self.tokenizer.pad_id)

  def _rewards(self, out, indices, dataset, group: int):
    """Host side: decode each response and check its final answer."""
    p = dataset.prompt.shape[1]
    host = parallel.fetch({'tokens': out['tokens'], 'lengths': out['lengths'], 'i': indices})
    tokens, lengths = np.asarray(host['tokens'])[:, p:], np.asarray(host['lengths'])
    answers = [dataset.examples[int(i)]['answer'] for i in np.asarray(host['i'])]
    texts = [self.tokenizer.decode(tokens[k, :lengths[k]], skip_special=True) for k in range(len(tokens))]
    return np.array([float(is_correct(t, answers[k // group])) for k, t in enumerate(texts)], np.float32)

  def prepare(self, batch, state):
    g = self.config.grpo.group_size
    out = self._sample(state.full_params, batch['prompt'], batch['prompt_mask'], rl.rollout_rng(state),
                       group=g, temperature=self.config.rl.temperature)
    rewards = self._rewards(out, batch['index'], self.train_ds, g)
    tokens, mask = out['tokens'], out['mask']
    resp = rl.response_mask(mask, batch['prompt'].shape[1])
    adv = jnp.asarray(group_advantages(rewards, g))[:, None] * resp
    rows = dict(tokens=tokens, mask=mask, resp=resp, adv=adv,
                old_lp=self._logprobs(state.full_params, tokens, mask))
    if self.config.grpo.kl_coef > 0:
      rows['ref_lp'] = self._ref_logprobs(self.reference(state.full_params), tokens, mask)
    return {**rows, 'grpo/accuracy': jnp.float32(rewards.mean()),
            'grpo/response_len': jnp.mean(jnp.sum(resp, 1))}

  def loss_fn(self, params, mb, rng):
    gc = self.config.grpo
    lp = token_logprobs(self.model, params, mb['tokens'], mb['mask'], rng, self.config.model.dropout)
    resp = mb['resp']
    # GRPO averages over each response's tokens, then over responses.
    loss, clip_frac = rl.clipped_surrogate(lp, mb['old_lp'], mb['adv'], resp, gc.clip,
                                           per_sequence=True)
    metrics = {'grpo/clip_frac': clip_frac}
    if 'ref_lp' in mb:
      d = mb['ref_lp'] - lp
      kl = jnp.exp(d) - d - 1   # k3: unbiased, always >= 0
      loss = loss + gc.kl_coef * rl.sequence_mean(kl, resp)
      metrics['grpo/kl'] = rl.masked_mean(kl, resp)
    return loss, metrics

  def evaluate(self, params) -> dict:
    """On a fixed set of held-out prompts: greedy accuracy, and the accuracy of G samples at the
    training temperature (what the objective optimizes; fixed key, so steps compare)."""
    rows = self.eval_rows()
    prompt, mask = jnp.asarray(rows['prompt']), jnp.asarray(rows['prompt_mask'])
    greedy = self._sample(params, prompt, mask, jax.random.PRNGKey(0), group=1, temperature=0.0)
    g = self.config.grpo.group_size
    sampled = self._sample(params, prompt, mask, jax.random.PRNGKey(1), group=g,
                           temperature=self.config.rl.temperature)
    return {'eval/grpo/accuracy': float(self._rewards(greedy, rows['index'], self.eval_prompts, 1).mean()),
            'eval/grpo/sampled_accuracy':
                float(self._rewards(sampled, rows['index'], self.eval_prompts, g).mean())}

  def tokens_per_step(self) -> int:
    rc = self.config.rl
    return self.config.train.batch_size * self.config.grpo.group_size * (rc.max_prompt_len + rc.max_new_tokens)

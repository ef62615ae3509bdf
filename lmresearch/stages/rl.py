"""What PPO and GRPO share (`RLStage`): prompt batches, the frozen reference, rollouts, the clipped
surrogate, GAE, and several minibatch updates per step.

An RL stage's trainer step is one iteration: `prepare()` samples responses with the current
policy (the KV-cache sampler) and scores them; the jitted step then runs `epochs` passes of
`minibatches` optimizer updates over that rollout. The data iterator only holds the prompt
position, so a checkpoint at a step boundary resumes exactly (rollouts are a pure function of
params, prompts and the step's RNG).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmresearch.core import parallel
from lmresearch.text import tokenizers
from lmresearch.core.errors import ConfigError
from lmresearch.text.answers import matches, predict
from lmresearch.data import formats, world_labeler
from lmresearch.models import lora
from lmresearch.stages.base import LMStage
from lmresearch.training.trainer import TrainState, with_frozen


class PromptDataset:
  """Prompts rendered as chat prompts (ending in <|assistant|>), left-padded to max_prompt_len."""

  def __init__(self, tok, prompts: list[dict], max_prompt_len: int):
    n = len(prompts)
    self.prompt = np.zeros((n, max_prompt_len), np.int32)
    self.prompt_mask = np.zeros((n, max_prompt_len), np.int32)
    self.examples = prompts
    for i, p in enumerate(prompts):
      ids = tokenizers.generation_prompt(tok, p['prompt'])
      if len(ids) > max_prompt_len:
        raise ValueError(f'prompt {i} has {len(ids)} tokens > config.rl.max_prompt_len='
                         f'{max_prompt_len}: raise it or shorten the prompt.')
      self.prompt[i, max_prompt_len - len(ids):] = ids
      self.prompt_mask[i, max_prompt_len - len(ids):] = 1

  def __len__(self) -> int:
    return len(self.prompt)

  def rows(self, indices) -> dict:
    i = np.asarray(indices)
    return {'prompt': self.prompt[i], 'prompt_mask': self.prompt_mask[i], 'index': i.astype(np.int32)}


def rollout_rng(state):
  """The step's sampling key: a function of the checkpointed RNG and step, so resumes are exact."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 0x5eed)


def response_mask(mask, prompt_len: int):
  """[b, T] token mask -> [b, T-1] mask over targets that are generated tokens."""
  cols = jnp.arange(1, mask.shape[1])[None, :]
  return (mask[:, 1:] * (cols >= prompt_len)).astype(jnp.float32)


def cap_degenerate(scores, tokens, resp, finished, cap: float, special_ids=None):
  """A reply that ends at once (no content token before the stop token) or never ends within
  max_new_tokens is a bad outcome whatever the reward model says (cf. TRL's non-EOS penalty): its
  score is at most `cap`. tokens [b, T], resp [b, T-1] (targets), finished [b] -> (scores, empty,
  unfinished)."""
  special_ids = tuple(range(len(tokenizers.SPECIALS))) if special_ids is None else special_ids
  content = jnp.sum(resp * ~jnp.isin(tokens[:, 1:], jnp.asarray(special_ids)), 1)
  empty, unfinished = (content == 0) & finished, ~finished
  return jnp.where(empty | unfinished, jnp.minimum(scores, cap), scores), empty, unfinished


def gae(rewards, values, mask, gamma: float, lam: float):
  """Generalized advantage estimation over the masked (contiguous) response tokens [b, T].

  delta_t = r_t + gamma V_{t+1} - V_t (V after the last response token = 0);
  A_t = delta_t + gamma lam A_{t+1}. Returns (advantages, returns = A + V), zero off the mask."""
  values = values * mask
  next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
  next_mask = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
  deltas = (rewards + gamma * next_values * next_mask - values) * mask

  def step(carry, xs):
    delta, nmask = xs
    adv = delta + gamma * lam * carry * nmask
    return adv, adv

  _, adv = jax.lax.scan(step, jnp.zeros(rewards.shape[0]), (deltas.T, next_mask.T), reverse=True)
  adv = adv.T * mask
  return adv, (adv + values) * mask


def masked_mean(x, mask):
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def whiten(x, mask):
  mean = masked_mean(x, mask)
  var = masked_mean(jnp.square(x - mean), mask)
  return (x - mean) * jax.lax.rsqrt(var + 1e-8) * mask


def sequence_mean(x, mask):
  """The mean over rows of each row's masked token mean (GRPO weighs every response alike)."""
  return jnp.mean(jnp.sum(x * mask, 1) / jnp.maximum(jnp.sum(mask, 1), 1))


def clipped_surrogate(logp, old_logp, adv, mask, clip: float, per_sequence: bool = False):
  """PPO's clipped objective as a loss, and the fraction of tokens clipped (a token mean). The loss
  is a token mean, or with per_sequence a mean over responses of their token means (GRPO)."""
  ratio = jnp.exp(logp - old_logp)
  loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv)
  clipped = (jnp.abs(ratio - 1) > clip).astype(jnp.float32)
  return (sequence_mean if per_sequence else masked_mean)(loss, mask), masked_mean(clipped, mask)


def make_minibatch_step(loss_fn, optimizer, schedule, epochs: int, minibatches: int,
                        rollout_keys: tuple = ()):
  """A trainer step of `epochs` x `minibatches` optimizer updates on one rollout batch.

  loss_fn(params, minibatch, rng) -> (loss, metrics) with loss a mean (not a sum). Metrics are
  averaged over the updates; the batch's `rollout_keys` (scalars measured during the rollout)
  are passed through to the logged metrics."""
  def train_step(state: TrainState, batch):
    grad_fn = jax.value_and_grad(with_frozen(loss_fn, state.frozen), has_aux=True)
    rng = jax.random.fold_in(state.rng, state.step)
    rows = {k: v for k, v in batch.items() if k not in rollout_keys}
    n = next(iter(rows.values())).shape[0]
    if n % minibatches:
      raise ValueError(f'{n} rollout rows do not split into {minibatches} minibatches.')
    order = jnp.concatenate([jax.random.permutation(jax.random.fold_in(rng, e), n)
                             for e in range(epochs)]).reshape(epochs * minibatches, -1)

    def update(carry, xs):
      params, opt_state = carry
      idx, i = xs
      mb = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), rows)
      (loss, metrics), grads = grad_fn(params, mb, jax.random.fold_in(rng, 1000 + i))
      updates, opt_state = optimizer.update(grads, opt_state, params)
      metrics = dict(metrics, **{'train/loss': loss, 'train/grad_norm': optax.tree.norm(grads)})
      if isinstance(grads, dict) and 'policy' in grads:   # PPO: how the norm splits per model
        metrics.update({f'train/grad_norm_{k}': optax.tree.norm(g) for k, g in grads.items()})
      return (optax.apply_updates(params, updates), opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(
        update, (state.params, state.opt_state), (order, jnp.arange(order.shape[0])))
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics.update({k: batch[k] for k in rollout_keys})
    metrics['train/lr'] = schedule(state.step * epochs * minibatches)
    return TrainState(state.step + 1, params, opt_state, state.rng, state.frozen), metrics

  return train_step


class RLStage(LMStage):
  """An RL stage: prompts in, rollouts sampled by the policy, `epochs` x `minibatches` updates of
  config.<name> per trainer step. Subclasses supply loss_fn, prepare (the rollout and its
  scores) and evaluate; `rollout_keys` name the rollout's scalars passed through to the logs."""
  rollout_keys: tuple = ()

  @classmethod
  def validate(cls, config) -> None:
    """Prompt and reply must fit in the model's context; no gradient accumulation (each step
    already splits its rollout into config.<name>.minibatches updates)."""
    rc, max_len = config.rl, config.model.max_len
    if config.train.grad_accum > 1:
      raise ConfigError(f'config.train.grad_accum={config.train.grad_accum}: {cls.name} cannot '
                        f'accumulate gradients; set it to 1 (config.{cls.name}.minibatches splits '
                        'each rollout).')
    if rc.max_prompt_len + rc.max_new_tokens > max_len:
      raise ConfigError(f'config.rl.max_prompt_len + config.rl.max_new_tokens = '
                        f'{rc.max_prompt_len + rc.max_new_tokens} exceeds the model '
                        f'context config.model.max_len={max_len}.')

  def prompt_dataset(self, examples) -> PromptDataset:
    return PromptDataset(self.tokenizer, examples, self.config.rl.max_prompt_len)

  def load_eval_prompts(self, kind: str) -> PromptDataset:
    """The first config.rl.eval_prompts held-out prompts, a fixed set for `evaluate`."""
    return self.prompt_dataset(
        formats.load(kind, self.config.data, 'validation')[:self.config.rl.eval_prompts])

  def gold_scores(self, tokens, mask, finished) -> dict:
    """The held-out replies judged by the embedded world's noise-free labeler (the gold reward a
    reward model only approximates) and by their answer: what over-optimization is measured by."""
    width = self.config.rl.max_prompt_len
    tokens, mask, finished = parallel.fetch((tokens, mask, finished))
    tokens, mask = np.asarray(tokens)[:, width:], np.asarray(mask)[:, width:].astype(bool)
    gold, right = [], []
    for ex, t, m, f in zip(self.eval_prompts.examples, tokens, mask, np.asarray(finished)):
      text, target = self.tokenizer.decode(t[m].tolist(), skip_special=True), ex.get('answer', '')
      gold.append(world_labeler.gold(text, ex['prompt'], target, bool(f)))
      right.append(bool(target) and matches(predict(text, target), target))
    se = lambda x: float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float('nan')
    return {f'eval/{self.name}/gold_quality': float(np.mean(gold)),
            f'eval/{self.name}/gold_quality_se': se(gold),
            f'eval/{self.name}/accuracy': float(np.mean(right))}

  def eval_batches(self) -> list:
    return []   # held-out rollouts instead: `evaluate`

  def eval_rows(self) -> dict:
    """Every held-out prompt as one batch (host arrays)."""
    return self.eval_prompts.rows(np.arange(len(self.eval_prompts)))

  def bind(self, mesh, rules):
    super().bind(mesh, rules)
    # The frozen SFT reference; with LoRA the policy's base itself (`reference`), no second copy.
    self.ref_params = None if self.lora else self.load_lm_params(self.config.init_from)

  def reference(self, params):
    """The frozen reference's params, given the policy's full params of this step (with LoRA
    read from them, the base without adapters: the live arrays, as steps donate the state)."""
    if not self.lora:
      return self.ref_params
    return lora.base(params['policy'] if 'policy' in params else params)

  def make_train_step(self, optimizer, grad_accum, schedule):
    c = self.config[self.name]
    return make_minibatch_step(self.loss_fn, optimizer, schedule, c.epochs, c.minibatches,
                               rollout_keys=self.rollout_keys)

  def tokens_per_step(self) -> int:
    rc = self.config.rl
    return self.config.train.batch_size * (rc.max_prompt_len + rc.max_new_tokens)

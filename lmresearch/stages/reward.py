"""Reward model from rankings (InstructGPT): the SFT transformer with a scalar head.

One batch element is one prompt with its K ranked responses; the loss is the mean over all
K(K-1)/2 (non-tied) pairs of -log sigmoid(r_better - r_worse), so a prompt's pairs share one
forward pass and no prompt outweighs another. A response's reward is the head's scalar summed
over its tokens or read at its last token (`config.reward.pool`, see `pool_rewards`). After
training, rewards are shifted so that the SFT model's own samples score 0 on average
(`reward_norm.json`).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from lmresearch.core import fileio
from lmresearch.generation import batched
from lmresearch.text import tokenizers
from lmresearch.data import formats
from lmresearch.core.errors import ConfigError
from lmresearch.models.heads import last_token_index
from lmresearch.models.logprobs import positions_from_mask
from lmresearch.stages.base import LMStage, load_parent_params
from lmresearch.stages.builders import build_scalar_model  # noqa: F401  (its home before)

NORM_FILE = 'reward_norm.json'


class RankingDataset:
  """Rankings -> fixed arrays [n, K, T]; row i of a batch holds every response of prompt i."""

  def __init__(self, tok, rankings, seq_len: int):
    k = max(len(r['responses']) for r in rankings)
    n = len(rankings)
    self.tokens = np.zeros((n, k, seq_len), np.int32)
    self.mask = np.zeros((n, k, seq_len), np.int32)
    self.reply = np.zeros((n, k, seq_len), np.int32)   # the response's tokens, as rendered
    self.valid = np.zeros((n, k), np.float32)
    self.tie = np.zeros((n, k, k), np.float32)
    self.truncated = 0
    for i, r in enumerate(rankings):
      for j, resp in enumerate(r['responses']):
        ids, reply = tokenizers.render_reply(tok, r['prompt'], resp)
        if len(ids) > seq_len:
          ids, reply = ids[:seq_len], reply[:seq_len]
          self.truncated += 1
        self.tokens[i, j, :len(ids)] = ids
        self.mask[i, j, :len(ids)] = 1
        self.reply[i, j, :len(ids)] = reply
        self.valid[i, j] = 1
      for a, b in r.get('ties', []):
        self.tie[i, a, b] = self.tie[i, b, a] = 1
    self.seq_len = seq_len

  def __len__(self) -> int:
    return len(self.tokens)

  def rows(self, indices) -> dict:
    i = np.asarray(indices)
    return {'tokens': self.tokens[i], 'mask': self.mask[i], 'reply': self.reply[i],
            'valid': self.valid[i], 'tie': self.tie[i]}


def ranking_loss(rewards, valid, tie):
  """rewards [b, K] in ranked order (best first) -> (sum of per-prompt losses, metric sums)."""
  k = rewards.shape[-1]
  better = jnp.triu(jnp.ones((k, k)), 1)                      # i ranked above j when i < j
  pairs = better * valid[:, :, None] * valid[:, None, :] * (1 - tie)
  diff = rewards[:, :, None] - rewards[:, None, :]
  n_pairs = jnp.sum(pairs, axis=(1, 2))
  has = (n_pairs > 0).astype(jnp.float32)
  per_prompt = jnp.sum(-jax.nn.log_sigmoid(diff) * pairs, axis=(1, 2)) / jnp.maximum(n_pairs, 1)
  acc = jnp.sum((diff > 0) * pairs, axis=(1, 2)) / jnp.maximum(n_pairs, 1)
  loss = jnp.sum(per_prompt * has)
  return loss, {'train/loss': loss, 'reward/loss': loss, 'reward/accuracy': jnp.sum(acc * has),
                'count': jnp.sum(has)}


POOLS = ('last', 'sum')
_ASSISTANT_ID = tokenizers.SPECIALS.index(tokenizers.ASSISTANT)   # the same id in every tokenizer


def reply_mask(tokens, mask):
  """1 on the tokens after each row's last <|assistant|> marker: the reply being judged (our
  chat template; callers that rendered the reply pass its mask instead, as any template needs)."""
  idx = jnp.arange(tokens.shape[-1])
  marker = jnp.max(jnp.where((tokens == _ASSISTANT_ID) & (mask > 0), idx, -1), axis=-1)
  return (idx > marker[..., None]) * mask


def pool_rewards(values, tokens, mask, pool: str, reply=None):
  """Per-position scalars [b, T] -> one reward per sequence.

  'last' (InstructGPT): the scalar at the last real token, which must sum up the whole reply.
  'sum': the sum of the scalars over the reply's tokens, so that a mistake can be scored where
  it is written: on the embedded world a reply is right or wrong by one number (measured against
  'last': docs/devlog.md, "Measured design choices")."""
  if pool == 'last':
    return jnp.take_along_axis(values, last_token_index(mask)[..., None], -1)[..., 0]
  if pool == 'sum':
    return jnp.sum(values * (reply_mask(tokens, mask) if reply is None else reply), -1)
  raise ValueError(f'config.reward.pool={pool!r}: expected one of {POOLS}.')


def reward_pool(workdir: str) -> str:
  """How the reward model at `workdir` pools its scalars (runs from before the option: 'last')."""
  from lmresearch.training import config as lmc
  return lmc.load(workdir).get('reward', {}).get('pool', 'last')


def score(model, params, tokens, mask, positions=None, pool: str = 'last', reply=None):
  """Reward of each sequence (left or right padded), pooled as `pool_rewards` says; `reply`
  marks the response's tokens."""
  if positions is None:
    positions = positions_from_mask(mask)
  values = model.apply({'params': params}, tokens, positions, mask)
  return pool_rewards(values, tokens, mask, pool, reply)


def after(tokens, mask, start: int):
  """The tokens from column `start` on (a left-padded prompt block, then the reply)."""
  return (jnp.arange(tokens.shape[-1])[None, :] >= start) * mask


def load_reward_offset(workdir: str) -> float:
  path = fileio.join(workdir, NORM_FILE)
  if not fileio.exists(path):
    return 0.0
  return float(fileio.read_json(path)['offset'])


class RewardStage(LMStage):
  name = 'reward'

  @classmethod
  def validate(cls, config) -> None:
    if config.reward.get('pool', 'last') not in POOLS:
      raise ConfigError(f'config.reward.pool={config.reward.pool!r}: expected one of {POOLS}.')

  def __init__(self, config, workdir: str):
    super().__init__(config, workdir)
    self.rm = build_scalar_model(config, self.tokenizer)
    dc = config.data
    self.train_ds = RankingDataset(self.tokenizer, formats.load('ranking', dc, 'train'), dc.seq_len)
    self.eval_rankings = formats.load('ranking', dc, 'validation')
    self.eval_ds = RankingDataset(self.tokenizer, self.eval_rankings, dc.seq_len)

  def init_params(self, rng):
    return self.rm.init(rng, jnp.zeros((1, self.config.data.seq_len), jnp.int32))['params']

  def initial_params(self, params, shardings):
    if not self.config.init_from:
      return params
    backbone = load_parent_params(self.config.init_from, params['backbone'], shardings['backbone'])
    return {**params, 'backbone': backbone}

  def rewards(self, params, batch, rng=None):
    b, k, t = batch['tokens'].shape
    tokens, mask = batch['tokens'].reshape(b * k, t), batch['mask'].reshape(b * k, t)
    positions = jnp.broadcast_to(jnp.arange(t), (b * k, t))
    deterministic = rng is None or self.config.model.dropout == 0
    values = self.rm.apply({'params': params}, tokens, positions, mask, deterministic=deterministic,
                           rngs=None if deterministic else {'dropout': rng})
    return pool_rewards(values, tokens, mask, self.config.reward.pool,
                        batch['reply'].reshape(b * k, t)).reshape(b, k)

  def loss_fn(self, params, batch, rng):
    return ranking_loss(self.rewards(params, batch, rng), batch['valid'], batch['tie'])

  def tokens_per_step(self) -> int:
    return int(self.config.train.batch_size * self.train_ds.tokens.shape[1] * self.config.data.seq_len)

  def finalize(self, params) -> dict:
    """Shift rewards so that the SFT model's samples average 0 (InstructGPT's normalization)."""
    n = self.config.reward.norm_samples
    if n <= 0 or not self.config.init_from:
      return {}
    lm, lm_params = self.ref_model, self.load_lm_params(self.config.init_from)
    prompts = [r['prompt'] for r in self.eval_rankings[:n]]
    ids = [tokenizers.generation_prompt(self.tokenizer, p) for p in prompts]
    out = batched.generate(lm, lm_params, ids, max_new_tokens=self.config.reward.norm_max_new_tokens,
                            rng=jax.random.PRNGKey(self.config.seed), temperature=1.0,
                            stop_ids=self.tokenizer.stop_ids, pad_id=self.tokenizer.pad_id)
    r = score(self.rm, params, out['tokens'], out['mask'], out['positions'], self.config.reward.pool,
              after(out['tokens'], out['mask'], out['prompt_len']))
    offset = float(jnp.mean(r))
    fileio.write_json(fileio.join(self.workdir, NORM_FILE),
                      {'offset': offset, 'num_samples': len(prompts)})
    return {'reward/sft_sample_mean_before_norm': offset}

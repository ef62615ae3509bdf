"""Direct preference optimization (Rafailov et al. 2023) from rankings or pairs.

Every ranked pair (better, worse) of a K-way ranking is one example. With h the chosen-over-
rejected log-ratio margin  [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)]:
  sigmoid (DPO):  -log sigmoid(beta * h)
  ipo (IPO, Azar et al. 2023):  (h - 1 / (2 beta))^2
The frozen reference is the SFT model; its log-probs are computed on device before each step.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from lmresearch import parallel, tokenizers
from lmresearch.data import formats, packing
from lmresearch.stages.base import LMStage
from lmresearch.models.logprobs import token_logprobs


def ranking_pairs(rankings) -> list[tuple[str, str, str]]:
  out = []
  for r in rankings:
    ties = {tuple(sorted(t)) for t in r.get('ties', [])}
    for i, j in itertools.combinations(range(len(r['responses'])), 2):
      if (i, j) not in ties:
        out.append((r['prompt'], r['responses'][i], r['responses'][j]))
  return out


class PairDataset:
  """(prompt, chosen, rejected) -> tokens/attention mask/response mask, each [n, 2, T]."""

  def __init__(self, tok, pairs, seq_len: int):
    n = len(pairs)
    self.tokens = np.zeros((n, 2, seq_len), np.int32)
    self.mask = np.zeros((n, 2, seq_len), np.int32)
    self.response = np.zeros((n, 2, seq_len), np.float32)
    for i, (prompt, *responses) in enumerate(pairs):
      for j, resp in enumerate(responses):
        ids, m = tokenizers.render_reply(tok, prompt, resp)
        ids, m = ids[:seq_len], m[:seq_len]
        self.tokens[i, j, :len(ids)] = ids
        self.mask[i, j, :len(ids)] = 1
        self.response[i, j, :len(m)] = m

  def __len__(self) -> int:
    return len(self.tokens)

  def rows(self, indices) -> dict:
    i = np.asarray(indices)
    return {'tokens': self.tokens[i], 'mask': self.mask[i], 'response': self.response[i]}


def dpo_loss(policy_w, policy_l, ref_w, ref_l, beta: float, kind: str = 'sigmoid'):
  """Summed losses over pairs of sequence log-probs [b] each, and metric sums."""
  h = (policy_w - ref_w) - (policy_l - ref_l)
  if kind == 'sigmoid':
    losses = -jax.nn.log_sigmoid(beta * h)
  elif kind == 'ipo':
    losses = jnp.square(h - 1.0 / (2.0 * beta))
  else:
    raise ValueError(f"config.dpo.loss={kind!r}: expected 'sigmoid' or 'ipo'.")
  loss = jnp.sum(losses)
  return loss, {'train/loss': loss, 'dpo/loss': loss, 'dpo/margin': jnp.sum(h),
                'dpo/accuracy': jnp.sum((h > 0).astype(jnp.float32)),
                'dpo/chosen_logratio': jnp.sum(policy_w - ref_w),
                'dpo/rejected_logratio': jnp.sum(policy_l - ref_l), 'count': jnp.float32(h.shape[0])}


class DPOStage(LMStage):
  name = 'dpo'

  def __init__(self, config, workdir: str):
    super().__init__(config, workdir)
    dc = config.data
    self.train_ds = PairDataset(self.tokenizer, ranking_pairs(formats.load('ranking', dc, 'train')),
                                dc.seq_len)
    self.eval_ds = PairDataset(self.tokenizer, ranking_pairs(formats.load('ranking', dc, 'validation')),
                               dc.seq_len)
    self._ref = None

  def bind(self, mesh, rules):
    super().bind(mesh, rules)
    self.ref_params = self.load_lm_params(self.config.init_from)
    self._ref = jax.jit(lambda p, b: self.sequence_logprobs(p, b, None))

  def sequence_logprobs(self, params, batch, rng):
    b, _, t = batch['tokens'].shape
    flat = lambda x: x.reshape(b * 2, t)
    lp = token_logprobs(self.model, params, flat(batch['tokens']), flat(batch['mask']), rng,
                        self.config.model.dropout)
    return jnp.sum(lp * flat(batch['response'])[:, 1:], axis=-1).reshape(b, 2)

  def prepare(self, batch, state):
    return dict(batch, ref=self._ref(self.ref_params, batch))

  def eval_batches(self):
    batches = packing.eval_batches(self.eval_ds, self.config.train.batch_size,
                                   self.config.train.eval_batches)
    with parallel.activate(self.mesh, self.rules):   # reference log-probs once, kept on the host
      return [dict(b, ref=np.asarray(self._ref(self.ref_params, b))) for b in batches]

  def loss_fn(self, params, batch, rng):
    pol = self.sequence_logprobs(params, batch, rng)
    ref = batch['ref']
    return dpo_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], self.config.dpo.beta,
                    self.config.dpo.loss)

  def tokens_per_step(self) -> int:
    return 2 * self.config.train.batch_size * self.config.data.seq_len

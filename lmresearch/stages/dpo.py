"""Direct preference optimization (Rafailov et al. 2023) from rankings or pairs.

Every ranked pair (better, worse) is one example. With h the chosen-over-rejected log-ratio
margin  [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)]:
  sigmoid (DPO):  -log sigmoid(beta * h)
  ipo (IPO, Azar et al. 2023):  (h - 1 / (2 beta))^2
The frozen reference is the SFT model; its log-probs are computed on device before each step.

Where the pairs come from (config.dpo.pairs):
  rankings     every ranked pair of the K-way rankings (config.data: the world's, or JSONL)
  policy_gold  the paper's controlled setting (Sec. 6, App. C.1: 4 completions per prefix from the
               SFT model, all 6 pairs labeled by a ground-truth reward): config.dpo.policy.samples
               replies per question sampled from the SFT model at T = 1, every pair of them the
               world's gold labeler ranks apart (ties dropped); written to policy_pairs_<split>.jsonl
               once, so a resumed run trains on the same pairs
"""
from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np

from lmresearch.core import fileio, parallel
from lmresearch.generation import batched
from lmresearch.text import tokenizers
from lmresearch.data import formats, world_labeler, packing
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


def gold_pairs(questions: list[dict], replies: list[list[str]], finished: list[list[bool]]):
  """Every pair of one question's replies that the gold labeler ranks apart, better first."""
  out = []
  for q, rs, fs in zip(questions, replies, finished):
    golds = [world_labeler.gold(r, q['prompt'], q.get('answer', ''), f) for r, f in zip(rs, fs)]
    for i, j in itertools.combinations(range(len(rs)), 2):
      if golds[i] != golds[j]:
        w, l = (i, j) if golds[i] > golds[j] else (j, i)
        out.append((q['prompt'], rs[w], rs[l]))
  return out


class DPOStage(LMStage):
  name = 'dpo'

  @classmethod
  def validate(cls, config) -> None:
    from lmresearch.core.errors import ConfigError
    if config.dpo.get('pairs', 'rankings') not in ('rankings', 'policy_gold'):
      raise ConfigError(f"config.dpo.pairs={config.dpo.pairs!r}: expected 'rankings' or "
                        "'policy_gold'.")

  def __init__(self, config, workdir: str):
    super().__init__(config, workdir)
    dc = config.data
    self.train_ds = self.eval_ds = None
    if config.dpo.get('pairs', 'rankings') == 'rankings':
      self.train_ds = PairDataset(self.tokenizer, ranking_pairs(formats.load('ranking', dc, 'train')),
                                  dc.seq_len)
      self.eval_ds = PairDataset(self.tokenizer,
                                 ranking_pairs(formats.load('ranking', dc, 'validation')), dc.seq_len)
    self._ref = None

  def bind(self, mesh, rules):
    super().bind(mesh, rules)
    # The frozen reference: the SFT model; with LoRA the base the adapters sit on (start()).
    self.ref_params = None if self.lora else self.load_lm_params(self.config.init_from)
    self._ref = jax.jit(lambda p, b: self.sequence_logprobs(p, b, None, self.ref_model))
    if self.train_ds is None:   # sampled from the reference (SFT) policy, needs it placed
      ref = self.ref_params if self.ref_params is not None else self.load_lm_params(self.config.init_from)
      with parallel.activate(mesh, rules):
        self.train_ds, self.eval_ds = (
            PairDataset(self.tokenizer, self.policy_pairs(split, ref), self.config.data.seq_len)
            for split in ('train', 'validation'))

  def start(self, state):
    if self.lora:   # for eval_batches(), which runs before the first (donating) step
      self.ref_params = state.frozen

  def policy_pairs(self, split: str, ref_params) -> list[tuple[str, str, str]]:
    """config.dpo.policy's pairs for one split, sampled once and kept in the workdir."""
    path = fileio.join(self.workdir, f'policy_pairs_{split}.jsonl')
    if fileio.exists(path):
      return [tuple(json.loads(line)) for line in fileio.read_text(path).splitlines() if line]
    pc = self.config.dpo.policy
    n = pc.prompts if split == 'train' else pc.eval_prompts
    questions = formats.load('questions', self.config.data, split)[:n]
    prompts = [tokenizers.generation_prompt(self.tokenizer, q['prompt']) for q in questions]
    rng = jax.random.PRNGKey(self.config.seed + (0 if split == 'train' else 1))
    replies, finished = [[] for _ in questions], [[] for _ in questions]
    for k in range(pc.samples):
      for start in range(0, len(prompts), pc.batch_size):
        out = batched.generate(self.ref_model, ref_params, prompts[start:start + pc.batch_size],
                                max_new_tokens=pc.max_new_tokens, temperature=1.0,
                                rng=jax.random.fold_in(jax.random.fold_in(rng, k), start),
                                stop_ids=self.tokenizer.stop_ids, pad_id=self.tokenizer.pad_id)
        texts = batched.decode_completions(self.tokenizer, out['completions'])
        done = np.asarray(parallel.fetch(out['finished'])).tolist()
        for i, (t, f) in enumerate(zip(texts, done)):
          replies[start + i].append(t)
          finished[start + i].append(bool(f))
    pairs = gold_pairs(questions, replies, finished)
    if not pairs:
      raise ValueError(f'config.dpo.pairs=policy_gold: the gold labeler ranked no two of the '
                       f'{pc.samples} samples of any of {len(questions)} {split} questions apart; '
                       'raise config.dpo.policy.samples or .prompts.')
    fileio.write_text(path, ''.join(json.dumps(p) + '\n' for p in pairs))
    print(f'[dpo] {len(pairs)} {split} pairs from {pc.samples} SFT samples of {len(questions)} '
          f'questions, ranked by the gold labeler: {path}', flush=True)
    return pairs

  def sequence_logprobs(self, params, batch, rng, model=None):
    b, _, t = batch['tokens'].shape
    flat = lambda x: x.reshape(b * 2, t)
    lp = token_logprobs(model or self.model, params, flat(batch['tokens']), flat(batch['mask']), rng,
                        self.config.model.dropout)
    return jnp.sum(lp * flat(batch['response'])[:, 1:], axis=-1).reshape(b, 2)

  def prepare(self, batch, state):
    ref = state.frozen if self.lora else self.ref_params   # the live base: steps donate the state
    return dict(batch, ref=self._ref(ref, batch))

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

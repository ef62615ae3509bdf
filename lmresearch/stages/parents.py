"""A parent run's params for a later stage, also when the parent trained LoRA adapters.

A LoRA run's checkpoint holds only what it trained (adapters, a new scalar head); its base is its
own parents' (init_from; for PPO's value model, reward_from). Loading it therefore loads those
(recursively, any of them may be LoRA too), lays the run's trained leaves over them and folds each
adapter into the weight it adapts (W + alpha / rank · A B), on device in W's sharding: the result
is an ordinary model, as a later stage, sampling or export reads it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lmresearch.training import config as lmc
from lmresearch.core import parallel
from lmresearch.text import tokenizers
from lmresearch.models import lora
from lmresearch.stages.builders import build_model, build_scalar_model
from lmresearch.training.checkpoint import abstract_with_shardings, restore_params


def _lm_init(model):
  return lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params']


def _models(config):
  return tokenizers, build_model, build_scalar_model


def _run_init(cfg, tok):
  """A function returning the run's own (boxed) params, adapters included."""
  _, build_model, build_scalar_model = _models(cfg)
  if cfg.stage == 'ppo':
    lm, value = build_model(cfg, tok), build_scalar_model(cfg, tok)
    return lambda: {'policy': _lm_init(lm)(), 'value': _lm_init(value)()}
  if cfg.stage == 'reward':
    return _lm_init(build_scalar_model(cfg, tok))
  return _lm_init(build_model(cfg, tok))


def trained(workdir: str, mesh):
  """(config, what the LoRA run trained: its adapters and heads) from its checkpoint."""
  cfg = lmc.load(workdir)
  if not lmc.lora_on(cfg):
    raise ValueError(f'{workdir} is not a LoRA run (config.lora.rank = 0): export it whole with '
                     '--to_hf, without --adapters_only.')
  rules = parallel.rules_from_config(cfg)
  with parallel.activate(mesh, rules):
    full_abs, full_sh = parallel.abstract_and_shardings(
        _run_init(cfg, tokenizers.load_tokenizer(workdir)), mesh, rules)
  params, _ = restore_params(workdir, abstract_with_shardings(lora.split(full_abs)[0],
                                                              lora.split(full_sh)[0]))
  return cfg, params


def load(workdir: str, abstract, shardings):
  """The run's params in the tree of `abstract` (a language model, or a scalar-head model when
  the run is a reward model), placed with `shardings`."""
  cfg = lmc.load(workdir)
  if not lmc.lora_on(cfg):
    params, _ = restore_params(workdir, abstract_with_shardings(abstract, shardings))
    return params
  tokenizers = _models(cfg)[0]
  tok = tokenizers.load_tokenizer(workdir)
  mesh = jax.tree.leaves(shardings)[0].mesh
  rules = parallel.rules_from_config(cfg)
  init = _run_init(cfg, tok)
  with parallel.activate(mesh, rules):
    full_abs, full_sh = parallel.abstract_and_shardings(init, mesh, rules)
  trained_abs, base_abs = lora.split(full_abs)
  trained_sh, base_sh = lora.split(full_sh)
  trained, _ = restore_params(workdir, abstract_with_shardings(trained_abs, trained_sh))
  if cfg.stage == 'ppo':
    base = {'policy': load(cfg.init_from, base_abs['policy'], base_sh['policy']),
            'value': {'backbone': load(cfg.reward_from, {'backbone': base_abs['value']['backbone'],
                                                         **_score(full_abs['value'])},
                                       {'backbone': base_sh['value']['backbone'],
                                        **_score(full_sh['value'])})['backbone']}}
  elif cfg.stage == 'reward':
    base = {'backbone': load(cfg.init_from, base_abs['backbone'], base_sh['backbone'])}
  else:
    base = load(cfg.init_from, base_abs, base_sh)
  folded = lora.fold(lora.merge(base, trained), cfg.lora.alpha / cfg.lora.rank,
                lora.token_ids(cfg.lora.get('tokens', ''), tok))
  if cfg.stage == 'ppo' and 'policy' not in abstract:
    return folded['policy']
  return folded


def _score(tree):
  return {'score': tree['score']} if 'score' in tree else {}

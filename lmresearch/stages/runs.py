"""A trained run, loaded for use: its model (language or reward), params, tokenizer and mesh.

Sampling, evaluation and the pipeline all load runs through `load`.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp

from lmresearch.training import config as lmc
from lmresearch.core import fileio, parallel
from lmresearch.text import tokenizers
from lmresearch.core.errors import ConfigError
from lmresearch.stages import parents
from lmresearch.stages.base import build_model
from lmresearch.stages.reward import build_scalar_model, load_reward_offset, reward_pool
from lmresearch.training import checkpoint


@dataclasses.dataclass
class Run:
  """A model ready to evaluate. mesh None: no mesh context (a model built in a test)."""
  model: Any
  params: Any
  tok: Any
  chat: bool = False
  config: Any = None
  mesh: Any = None
  rules: Any = ()
  step: Optional[int] = None
  offset: float = 0.0   # reward models: the SFT samples' mean reward, subtracted
  pool: str = 'last'    # reward models: how per-token scalars become one reward

  def active(self):
    if self.mesh is None:
      return contextlib.nullcontext()
    return parallel.activate(self.mesh, self.rules)

  def batch_rows(self, n: int) -> int:
    """n rounded up so that a batch splits evenly over the mesh's batch shards."""
    m = 1 if self.mesh is None else parallel.num_batch_shards(self.mesh, self.rules)
    return -(-n // m) * m


def load(workdir: str, reward: bool = False, chat: Optional[bool] = None, mesh=None,
         rules=None, step: Optional[int] = None, lean: bool = False) -> Run:
  """A run directory's latest checkpoint: its language model, or (reward=True) its reward model.
  chat None: the chat template unless the run is a pretrained base model. (sample.load_run does
  the same for language models only, and importing it would define the sampler's CLI flags.)
  lean: the checkpoint is read about one array at a time (memory for `convert`; see
  checkpoint.restore_params)."""
  config = lmc.load(workdir)
  own = fileio.exists(fileio.join(workdir, tokenizers.FILENAME))
  tok = tokenizers.load_tokenizer(workdir if own else config.data.get('tokenizer_path') or workdir)
  # A LoRA run is loaded with its adapters folded into the weights: an ordinary model.
  model = (build_scalar_model if reward else build_model)(config, tok, lora=False)
  if mesh is None:
    rules = parallel.rules_from_config(config)
    try:
      mesh = parallel.make_mesh(config.mesh)
    except ConfigError:   # trained on another machine shape: data-parallel over what is here
      mesh = parallel.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
  dummy = jnp.zeros((1, 1), jnp.int32)
  init = lambda: model.init(jax.random.PRNGKey(0), dummy)['params']
  lora_run = lmc.lora_on(config)
  if config.stage == 'ppo' and not reward and not lora_run:   # PPO: the policy and the value model
    value = build_scalar_model(config, tok)
    init = lambda: {'policy': model.init(jax.random.PRNGKey(0), dummy)['params'],
                    'value': value.init(jax.random.PRNGKey(0), dummy)['params']}
  with parallel.activate(mesh, rules):
    abstract, shardings = parallel.abstract_and_shardings(init, mesh, rules)
  if lora_run:
    if step is not None:
      raise ValueError(f'{workdir}: a LoRA run is loaded at its latest step (its base has no '
                       'other); drop --step.')
    params = parents.load(workdir, abstract, shardings)
    step = checkpoint.Checkpointer(fileio.join(workdir, 'checkpoints')).latest_step()
  else:
    params, step = checkpoint.restore_params(
        workdir, checkpoint.abstract_with_shardings(abstract, shardings), step,
        concurrent_bytes=checkpoint.largest_bytes(abstract) if lean else 0)
  if config.stage == 'ppo' and not reward and not lora_run:
    params = params['policy']
  if chat is None:   # a base model completes documents; an imported instruct model chats
    chat = config.stage != 'pretrain' or bool(config.get('hf', {}).get('chat'))
  return Run(model, params, tok, chat, config,
             mesh, rules, step, load_reward_offset(workdir) if reward else 0.0,
             reward_pool(workdir) if reward else 'last')

"""The one trainer every stage runs on.

A stage supplies its params, batches and a pure `loss_fn(params, batch, rng) -> (loss_sum,
metric_sums)`, where `metric_sums['count']` is the loss's denominator (tokens, pairs, ...). The
trainer divides summed gradients and metrics by the summed count, so gradient accumulation over
micro-batches is exact, whatever the masking.

Per step: host batch -> global array sharded over the batch axes -> jitted step (shardings in and
out, state donated); then the hooks that are due (`Hook`: every N steps and at the last one, as
Levanter's trainer runs its callbacks): held-out evaluation, the metrics record (metrics are
fetched only then: no host sync in between), and an async Orbax checkpoint holding params,
optimizer state, RNG and the data iterator's position. SIGTERM ends the loop at the next step
with its checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from lmresearch.training import config as lmc
from lmresearch.core import parallel
from lmresearch.models import lora
from lmresearch.models.transformer import param_counts
from lmresearch.training import compiles
from lmresearch.training.checkpoint import Checkpointer, abstract_with_shardings
from lmresearch.training.metrics import MetricWriter, peak_flops
from lmresearch.training.optimizers import learning_rate_schedule, make_optimizer


class NonFiniteLossError(RuntimeError):
  pass


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any          # what the optimizer trains (with LoRA: the adapters and any new head)
  opt_state: Any
  rng: jax.Array
  frozen: Any = None   # with LoRA: the base, read from init_from, never saved or updated

  @property
  def full_params(self):
    """Every param the stage's models read: the trained ones and the frozen base."""
    return lora.merge(self.frozen, self.params)


@dataclasses.dataclass
class StepEnd:
  """What a hook sees after a step: the step count, the state and the metrics record being made
  (the step's train metrics and throughput; an evaluation hook adds its own)."""
  step: int
  state: TrainState
  row: dict
  evaluated: bool = False


@dataclasses.dataclass(eq=False)
class Hook:
  """`fn(StepEnd)` every `every` steps and at the last step (also one cut short by SIGTERM);
  `every` <= 0 is never, unless `always_last` (the checkpoint: a stopped or finished run always
  leaves one). `also_after`: run too whenever that hook ran (the record after an evaluation)."""
  name: str
  every: int
  fn: Callable[[StepEnd], None]
  also_after: str = ''
  always_last: bool = False

  def due(self, step: int, is_last: bool) -> bool:
    if self.every > 0 and step % self.every == 0:
      return True
    return is_last and (self.every > 0 or self.always_last)


class _StepTimer:
  """Step time, tokens/s and MFU between hook steps, the first (compiling) step left out."""

  def __init__(self, tokens_per_step, flops_per_step, peak):
    self.tokens, self.flops, self.peak = tokens_per_step, flops_per_step, peak
    self.t0, self.steps = None, 0

  def stepped(self, metrics):
    if self.t0 is None:   # exclude compilation from throughput
      jax.block_until_ready(metrics)
      self.t0, self.steps = time.perf_counter(), 0
    else:
      self.steps += 1

  def figures(self) -> dict:
    if not self.steps:
      return {}
    dt = (time.perf_counter() - self.t0) / self.steps
    return {'perf/step_time_s': dt, 'perf/tokens_per_sec': self.tokens / dt,
            'perf/mfu': self.flops / dt / self.peak if self.peak else 0.0}

  def restart(self):
    self.t0, self.steps = time.perf_counter(), 0


def accumulate_gradients(loss_fn, params, batch, rng, num_micro: int):
  """Summed grads and metric sums over `num_micro` micro-batches (lax.scan, one at a time)."""
  grad_fn = jax.grad(loss_fn, has_aux=True)
  if num_micro == 1:
    return grad_fn(params, batch, rng)

  def split(x):  # row j*num_micro + i goes to micro-batch i: each shard keeps its own rows
    return x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)

  micro = jax.tree.map(split, batch)

  def body(acc, xs):
    mb, i = xs
    grads, metrics = grad_fn(params, mb, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, acc, (grads, metrics)), None

  first = jax.tree.map(lambda x: x[0], micro)
  shapes = jax.eval_shape(grad_fn, params, first, rng)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)
  (grads, metrics), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(num_micro)))
  return grads, metrics


def with_frozen(loss_fn, frozen):
  """loss_fn of the trained params alone: the frozen base merged in (no gradient reaches it)."""
  if not frozen:
    return loss_fn
  return lambda params, *args: loss_fn(lora.merge(frozen, params), *args)


def make_train_step(loss_fn, optimizer, num_micro: int, schedule):
  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    grads, sums = accumulate_gradients(with_frozen(loss_fn, state.frozen), state.params, batch,
                                       rng, num_micro)
    count = jnp.maximum(sums.pop('count'), 1.0)
    grads = jax.tree.map(lambda g, p: (g / count).astype(p.dtype), grads, state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: v / count for k, v in sums.items()}
    metrics['train/grad_norm'] = optax.tree.norm(grads)
    metrics['train/lr'] = schedule(state.step)
    return TrainState(state.step + 1, params, opt_state, state.rng, state.frozen), metrics
  return train_step


def make_eval_step(loss_fn):
  def eval_step(params, batch):
    return loss_fn(params, batch, None)   # rng None = deterministic (no dropout)
  return eval_step


class Trainer:
  def __init__(self, config, workdir: str, stage, mesh, rules):
    self.config, self.workdir, self.stage, self.mesh, self.rules = config, workdir, stage, mesh, rules
    self.train_cfg = config.train
    self.optimizer = make_optimizer(config.train)
    self.lora = lmc.lora_on(config)
    self.schedule = learning_rate_schedule(config.train)
    self._stop = self._signaled = False
    stage.bind(mesh, rules)

  # ---- state ---------------------------------------------------------------------------
  def _init_fn(self):
    params = self.stage.init_params(jax.random.PRNGKey(self.config.seed))
    frozen = None
    if self.lora:
      params, frozen = lora.split(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.optimizer.init(params),
                      rng=jax.random.PRNGKey(self.config.seed + 1), frozen=frozen)

  def _start_from_parents(self, state, shardings, trained=None):
    """The stage's initial params (its parents' checkpoints). With LoRA the parents give the base
    (the tree without adapters: a new scalar head comes from them too), and the trained params
    are the fresh adapters, or `trained` (restored on resume)."""
    if not self.lora:
      return state.replace(params=self.stage.initial_params(state.params, shardings.params))
    full = lora.merge(state.frozen, state.params)
    full_sh = lora.merge(shardings.frozen, shardings.params)
    start = lora.merge(lora.base(self.stage.initial_params(lora.base(full), lora.base(full_sh))),
                       lora.split(full, lora.is_adapter)[0])
    params, frozen = lora.split(start)
    return state.replace(params=params if trained is None else trained, frozen=frozen)

  def abstract_state(self):
    """Shapes and shardings of the train state, with no memory allocated."""
    with parallel.activate(self.mesh, self.rules):
      boxed = jax.eval_shape(self._init_fn)
    shardings = parallel.logical_shardings(self.mesh, self.rules, boxed)
    abstract = nn.unbox(boxed)
    parallel.check_divisible(self.mesh, shardings.params, abstract.params)
    return abstract, shardings

  def init_state(self, shardings):
    """Initializes the state directly in its shards (never whole on one device)."""
    with parallel.activate(self.mesh, self.rules):
      return jax.jit(lambda: nn.unbox(self._init_fn()), out_shardings=shardings)()

  def compile_step(self, shardings):
    """The stage's train step jitted as run() runs it: the state keeps its `shardings` in and out
    and is donated (updated in place); the batch keeps the sharding `parallel.put_batch` gave it.
    --dry_run and the benchmarks use it too, so that they compile this step and no copy of it."""
    with parallel.activate(self.mesh, self.rules):
      return jax.jit(self.stage.make_train_step(self.optimizer, self.train_cfg.grad_accum,
                                                self.schedule),
                     in_shardings=(shardings, None), out_shardings=(shardings, None),
                     donate_argnums=(0,))

  # ---- the loop --------------------------------------------------------------------------
  def run(self) -> dict:
    cfg, tc, stage = self.config, self.train_cfg, self.stage
    abstract, shardings = self.abstract_state()
    ckpt = Checkpointer(f'{self.workdir}/checkpoints', cfg.checkpoint.max_to_keep,
                        cfg.checkpoint.use_async)
    writer = MetricWriter(self.workdir)
    data_iter = stage.train_iterator()
    found = self._restore(ckpt, abstract, shardings, data_iter)
    if found is None:
      state = self._start_from_parents(self.init_state(shardings), shardings)
      start = 0
    else:
      start, state = found
      if self.lora:   # the checkpoint holds the adapters; the base comes from the parents again
        state = self._start_from_parents(self.init_state(shardings).replace(
            step=state.step, opt_state=state.opt_state, rng=state.rng), shardings, state.params)
      writer.truncate_after(start)
      print(f'resumed from {self.workdir}/checkpoints step {start}', flush=True)
    stage.start(state)

    batch_sharding = lambda ndim: parallel.batch_sharding(self.mesh, self.rules, ndim)
    step_fn = self.compile_step(shardings)
    with parallel.activate(self.mesh, self.rules):
      eval_fn = jax.jit(make_eval_step(stage.loss_fn),
                        in_shardings=(lora.merge(shardings.frozen, shardings.params), None))
    eval_batches = [parallel.put_batch(b, batch_sharding) for b in stage.eval_batches()] \
        if tc.eval_every > 0 else []

    timer = _StepTimer(stage.tokens_per_step(), stage.flops_per_step(), peak_flops(tc.peak_flops))
    old_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
    pbar = tqdm(total=tc.steps, initial=start, desc=stage.name, dynamic_ncols=True,
                disable=None, file=sys.stderr)
    pending, last = [], {}
    wall0 = time.time()
    programs0, compile_s0 = compiles.count(), compiles.seconds()

    # What runs between steps, each every N steps and at the last one, in this order: held-out
    # evaluation, the metrics record (also whenever an evaluation ran), the checkpoint.
    def evaluate(at: StepEnd):
      at.row.update(self._evaluate(eval_fn, at.state.full_params, eval_batches))
      at.evaluated = True

    def log(at: StepEnd):
      writer.write(at.step, at.row)
      last.clear()
      last.update(at.row)
      self._show(pbar, at.step, at.row)

    def checkpoint(at: StepEnd):
      ckpt.save(at.step, at.state.params, {'step': at.state.step, 'opt_state': at.state.opt_state,
                                           'rng': at.state.rng}, data_iter.get_state())

    hooks = [Hook('eval', tc.eval_every, evaluate),
             Hook('log', tc.log_every, log, also_after='eval'),
             Hook('checkpoint', cfg.checkpoint.every, checkpoint, always_last=True)]
    try:
      with parallel.activate(self.mesh, self.rules):
        if start == 0:   # one step-0 record: what is trained (size axes read it) ...
          first = {f'model/{k}': v for k, v in param_counts(state.full_params).items()}
          first['model/params_trained'] = param_counts(state.params)['params']
          if tc.eval_every > 0 and tc.eval_at_start:
            # ... and the starting point (e.g. the SFT policy): a stage's gain is read off its log.
            first.update(self._evaluate(eval_fn, state.full_params, eval_batches))
          writer.write(0, first)
        for step in range(start, tc.steps):
          batch = parallel.put_batch(next(data_iter), batch_sharding)
          batch = stage.prepare(batch, state)
          state, metrics = step_fn(state, batch)
          pending.append((step + 1, metrics))
          if len(pending) > 2:   # keep at most two steps in flight: XLA:CPU collectives can
            jax.block_until_ready(pending[-3][1])   # deadlock under an unbounded queue
          done = step + 1
          timer.stepped(metrics)
          stopping = self._stopping()   # one snapshot: the signal may land mid-iteration
          is_last = done == tc.steps or stopping
          due = [h for h in hooks if h.due(done, is_last)]
          if not due:
            continue
          row = self._drain(pending)[-1][1]
          row.update(timer.figures())
          at = StepEnd(done, state, row)
          ran = set()
          for h in hooks:
            if h in due or h.also_after in ran:
              if h.name == 'log':   # the record counts what compiled since the loop began
                row['perf/programs'] = compiles.count() - programs0
                row['perf/compile_s'] = compiles.seconds() - compile_s0
              h.fn(at)
              ran.add(h.name)
          pbar.update(done - pbar.n)
          timer.restart()
          if stopping:
            print(f'SIGTERM: saved step {done} to {ckpt.directory}; exiting.', flush=True)
            break
        if not self._stop:   # e.g. reward normalization
          extra = stage.finalize(state.full_params)
          if extra:
            writer.write(tc.steps, extra)
            last.update(extra)
    finally:
      ckpt.close()
      writer.close()
      pbar.close()
      signal.signal(signal.SIGTERM, old_handler)
    summary = {k: v for k, v in last.items()}
    summary.update(step=int(jax.device_get(state.step)), wall_seconds=time.time() - wall0)
    print('summary: ' + ' '.join(f'{k}={_fmt(v)}' for k, v in summary.items()), flush=True)
    self.state = state
    return summary

  def _restore(self, ckpt, abstract, shardings, data_iter):
    """(step, state) from the newest intact checkpoint (a damaged newer one is set aside)."""
    a_params = abstract_with_shardings(abstract.params, shardings.params)
    a_train = abstract_with_shardings(
        {'step': abstract.step, 'opt_state': abstract.opt_state, 'rng': abstract.rng},
        {'step': shardings.step, 'opt_state': shardings.opt_state, 'rng': shardings.rng})
    found = ckpt.restore_latest_intact(a_params, a_train)
    if found is None:
      return None
    step, params, train, data_state = found
    data_iter.set_state(data_state)
    return step, TrainState(train['step'], params, train['opt_state'], train['rng'], None)

  def _drain(self, pending):
    """Fetches the metrics of every step since the last drain; stops on a non-finite loss."""
    rows = [(s, {k: float(v) for k, v in jax.device_get(m).items()}) for s, m in pending]
    pending.clear()
    for s, m in rows:
      if not math.isfinite(m.get('train/loss', 0.0)):
        raise NonFiniteLossError(
            f'non-finite train/loss ({m["train/loss"]}) at step {s}; stopping without '
            'checkpointing it. Lower config.train.lr, raise warmup_steps or set clip_norm.')
    return rows

  def _evaluate(self, eval_fn, params, batches) -> dict:
    """The stage's own held-out metrics (RL stages: rollouts), else loss_fn over `batches`."""
    row = self.stage.evaluate(params)
    if row is not None:
      return row
    total = None
    for b in batches:
      _, sums = jax.block_until_ready(eval_fn(params, b))   # see the in-flight note in run()
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    sums = jax.device_get(total)
    count = max(float(sums.pop('count')), 1.0)
    return {('eval/' + k[6:] if k.startswith('train/') else 'eval/' + k): float(v) / count
            for k, v in sums.items()}

  def _show(self, pbar, step, row):
    if pbar.disable:
      print(f'step {step}: ' + ' '.join(f'{k}={_fmt(v)}' for k, v in row.items()), flush=True)
    else:
      pbar.set_postfix(loss=f'{row.get("train/loss", 0):.4f}',
                       tok_s=f'{row.get("perf/tokens_per_sec", 0):.0f}',
                       mfu=f'{row.get("perf/mfu", 0):.2%}', refresh=False)

  def _on_sigterm(self, *_):
    self._signaled = True

  def _stopping(self) -> bool:
    """Every process of a job stops at the same step (the checkpoint and the steps are
    collective) as soon as any of them got SIGTERM: a host-level all-gather of one flag a step
    (runtime.init_distributed turns off JAX's own preemption service, whose C++ handler would
    otherwise take SIGTERM from ours). The handler's flag is only read here, never overwritten:
    a signal landing during the all-gather counts at the next step."""
    signaled = self._signaled
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      signaled = bool(np.any(multihost_utils.process_allgather(np.int32(signaled))))
    self._stop = self._stop or signaled
    return self._stop


def _fmt(v):
  return f'{v:.5g}' if isinstance(v, float) else str(v)

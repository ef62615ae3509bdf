"""PPO throughput: rollout tokens/s (KV-cache sampling + scoring) and update step time, and the
share of a PPO step in generation, in the forwards after it, and in the update.

  python scripts/bench_rl.py [--runs runs/demo] [--iters 5] [--batch 32] [--new 48] [--ptx 0.3]

Uses the SFT and reward runs of a pipeline workdir (default runs/demo, made by scripts/demo.sh);
without them it first trains seconds-long stand-ins of the same shapes (speed only, not quality).
Measures the code the trainer runs: PPOStage.prepare (the jitted rollout: generate, policy /
reference / value / reward forwards, GAE) and the jitted PPO step (epochs x minibatches updates).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time



def stand_in_runs(root: str) -> str:
  """Tiny-config base/SFT/reward runs with the default model shape, a few steps each."""
  from lmresearch.training import config as lmc
  from lmresearch.stages import launch
  pretrain, sft, reward = (lmc.config_file(n) for n in ('pretrain', 'sft', 'reward'))
  for name, mod, parent in (('pretrain', pretrain, None), ('sft', sft, 'pretrain'), ('reward', reward, 'sft')):
    c = mod.get_config()
    if parent:
      c.init_from = os.path.join(root, parent)
    c.train.update(steps=2, eval_every=0, log_every=1)
    c.checkpoint.update(every=2, use_async=False)
    c.data.synthetic.num_docs = 400
    if name == 'reward':
      c.reward.norm_samples = 0
    launch.run(c, os.path.join(root, name))
  return root


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--runs', default='runs/demo')
  ap.add_argument('--iters', type=int, default=5)
  ap.add_argument('--batch', type=int, default=32, help='prompts per rollout')
  ap.add_argument('--new', type=int, default=48, help='max new tokens per response')
  ap.add_argument('--ptx', type=float, default=0.0,
                  help='PPO-ptx coefficient (the pipeline runs 0.3): adds the pretraining rows')
  ap.add_argument('--json', default='')
  args = ap.parse_args()

  from lmresearch.runtime import setup_jax
  setup_jax(cpu_devices=-1)
  import jax
  from lmresearch.training import config as lmc
  from lmresearch.core import parallel
  ppo_config = lmc.config_file('ppo')
  from lmresearch.stages.ppo import PPOStage
  from lmresearch.training.trainer import Trainer

  runs = args.runs
  if not all(os.path.exists(os.path.join(runs, n, 'checkpoints')) for n in ('sft', 'reward')):
    print(f'{runs}: no sft/reward runs; training stand-ins (speed only)', file=sys.stderr)
    runs = stand_in_runs(tempfile.mkdtemp())
  c = ppo_config.get_config(f'ptx={args.ptx}')
  c.init_from, c.reward_from = os.path.join(runs, 'sft'), os.path.join(runs, 'reward')
  c.train.batch_size = args.batch
  c.rl.max_new_tokens = args.new
  lmc.inherit_model(c)
  lmc.validate(c, jax.device_count())
  mesh, rules = parallel.make_mesh(c.mesh), parallel.rules_from_config(c)
  stage = PPOStage(c, tempfile.mkdtemp())
  trainer = Trainer(c, '', stage, mesh, rules)
  abstract, shardings = trainer.abstract_state()
  state = trainer.init_state(shardings)
  state = state.replace(params=stage.initial_params(state.params, shardings.params))
  step_fn = trainer.compile_step(shardings)
  from lmresearch.generation import batched
  from lmresearch.stages import rl
  rc, tok = c.rl, stage.tokenizer
  # The rollout's generation alone (same params, prompts and key: the same tokens), so that the
  # rollout splits into generation and the forwards after it (policy, reference, value, reward
  # model, GAE).
  generate = jax.jit(lambda p, prompt, mask, rng: batched.generate_arrays(
      stage.model, p, prompt, mask, rng, max_new_tokens=rc.max_new_tokens,
      temperature=rc.temperature, stop_ids=tok.stop_ids, pad_id=tok.pad_id)['tokens'])
  with parallel.activate(mesh, rules):
    it = stage.train_iterator()
    roll, upd, gen, gen_tokens = [], [], [], []
    for i in range(args.iters + 1):   # the first iteration compiles
      batch = parallel.put_batch(next(it), lambda nd: parallel.batch_sharding(mesh, rules, nd))
      t = time.perf_counter()
      jax.block_until_ready(generate(state.full_params['policy'], batch['prompt'],
                                     batch['prompt_mask'], rl.rollout_rng(state)))
      t_gen = time.perf_counter() - t
      t = time.perf_counter()
      batch = jax.block_until_ready(stage.prepare(batch, state))
      t_roll = time.perf_counter() - t
      t = time.perf_counter()
      state, metrics = jax.block_until_ready(step_fn(state, batch))
      t_upd = time.perf_counter() - t
      if i:
        roll.append(t_roll)
        upd.append(t_upd)
        gen.append(t_gen)
        gen_tokens.append(float(metrics['ppo/response_len']) * args.batch)
  out = {
      'devices': jax.device_count(), 'prompts_per_rollout': args.batch, 'max_new_tokens': args.new,
      'ptx_coef': c.ppo.ptx_coef,
      'rollout_s_median': statistics.median(roll),
      'rollout_tokens_per_s': sum(gen_tokens) / sum(roll),
      'update_step_s_median': statistics.median(upd),
      'updates_per_step': c.ppo.epochs * c.ppo.minibatches,
      'mean_response_tokens': statistics.mean(gen_tokens) / args.batch,
      'generation_s_median': statistics.median(gen),
  }
  # A PPO step = rollout (generation + forwards) + update; each part's share of it (medians).
  total = out['rollout_s_median'] + out['update_step_s_median']
  out['share_generation'] = min(out['generation_s_median'], out['rollout_s_median']) / total
  out['share_forwards'] = max(out['rollout_s_median'] - out['generation_s_median'], 0) / total
  out['share_update'] = out['update_step_s_median'] / total
  for k, v in out.items():
    print(f'{k:>24}: {v:.4g}' if isinstance(v, float) else f'{k:>24}: {v}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=2)


if __name__ == '__main__':
  main()

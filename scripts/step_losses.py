"""The first losses of the default pretraining step, to check that a faster step computes the same
function (issue 20: "each changed step gives the old step's losses over its first 20 steps").

  python scripts/step_losses.py --out=tests/data/step_losses.json    # record (with the old code)

tests/test_speed_equivalence.py runs the same cases with the code as it is and compares (rtol
1e-4). The cases: the default pipeline's pretraining stage (Llama style, 16 x 256 tokens), and the
same with GPT-2's style (learned positions, LayerNorm, GELU, tied head), one device each.
"""
import argparse
import json
import os
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {'llama_default': {}, 'gpt2_style': {'style': 'gpt2'}}


def losses(case: str, steps: int = 20) -> list:
  import jax
  from lmresearch.training import config as lmc
  from lmresearch.core import parallel
  get_config = lmc.config_file('pipeline').get_config
  from lmresearch.stages import REGISTRY
  from lmresearch.training.trainer import Trainer
  c = get_config().stages.pretrain
  c.model.update(**CASES[case])
  devices = jax.devices()[:1]
  lmc.inherit_model(c)
  lmc.validate(c, 1, REGISTRY)
  with tempfile.TemporaryDirectory() as tmp:
    rules, mesh = parallel.rules_from_config(c), parallel.make_mesh(c.mesh, devices)
    stage = REGISTRY[c.stage](c, tmp)
    trainer = Trainer(c, tmp, stage, mesh, rules)
    _, shardings = trainer.abstract_state()
    state, step = trainer.init_state(shardings), trainer.compile_step(shardings)
    batches, out = stage.train_iterator(), []
    with parallel.activate(mesh, rules):
      for _ in range(steps):
        batch = parallel.put_batch(next(batches), lambda nd: parallel.batch_sharding(mesh, rules, nd))
        state, metrics = step(state, batch)
        out.append(float(metrics['train/loss']))
  return out


if __name__ == '__main__':
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', required=True)
  p.add_argument('--steps', type=int, default=20)
  a = p.parse_args()
  res = {case: losses(case, a.steps) for case in CASES}
  with open(a.out, 'w') as f:
    json.dump(res, f, indent=1)
  print(json.dumps(res))

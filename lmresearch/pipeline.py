"""The main job: every stage of a model's life, then the measured report.

  python -m lmresearch.pipeline --workdir=runs/demo [--config=configs/pipeline.py[:all=1]]

pretrain -> SFT -> reward model -> PPO (-> DPO, GRPO) run one after another on the one trainer,
each in <workdir>/<stage> and started from its parent's checkpoint; then every model is evaluated
(answers, prompting methods, rewards, win rates, KL) and report.{md,html,json} is written.
Run it again after an interruption: finished stages are not redone, an unfinished one resumes.
"""
from __future__ import annotations

import os
import time

from absl import app, flags
from ml_collections import config_flags

from lmresearch.core import fileio
from lmresearch.runtime import cli_errors, parse_flags, setup_jax
from lmresearch.stages import PARENT

config_flags.DEFINE_config_file('config', os.path.join(os.path.dirname(__file__), '..', 'configs',
                                                       'pipeline.py'),
                                'Pipeline config (configs/pipeline.py[:size=smoke|all=1]).')
flags.DEFINE_string('workdir', 'runs/demo', 'Where every stage and the report go.')
flags.DEFINE_integer('cpu_devices', -1, 'See lmresearch.main --cpu_devices.')
FLAGS = flags.FLAGS



def _load_json(path, default=None):
  return fileio.read_json(path) if fileio.exists(path) else default


def run_stages(config, workdir: str, devices=None) -> dict:
  """Trains each stage of config.run unless its DONE.json says it finished; returns timings."""
  from lmresearch.stages import launch
  done = {}
  reuse = check_reuse(config)
  for name in config.run.split(','):
    stage_dir = fileio.join(workdir, name)
    marker = fileio.join(stage_dir, 'DONE.json')
    if name in reuse and not fileio.exists(marker):
      if os.path.islink(stage_dir):   # a link whose target has gone: point it again
        os.remove(stage_dir)
      # '{seed}' in config.upstream: a sweep over seeds takes each seed's own upstream run.
      link_upstream(config.upstream.format(seed=config.seed), name, stage_dir)
    if fileio.exists(marker):
      done[name] = {**_load_json(marker), 'reused': os.path.islink(stage_dir)}
      print(f'[pipeline] {name}: finished earlier, skipped', flush=True)
      continue
    sc = config.stages[name]
    with sc.unlocked():
      sc.seed = config.seed
      if name in PARENT:
        sc.init_from = fileio.join(workdir, PARENT[name])
      if name == 'ppo':
        sc.reward_from = fileio.join(workdir, 'reward')
    print(f'[pipeline] {name}: training in {stage_dir}', flush=True)
    t = time.time()
    summary = launch.run(sc, stage_dir, devices=devices)
    if summary.get('step', sc.train.steps) < sc.train.steps:   # SIGTERM: saved, not finished
      raise StageInterrupted(f'{name} stopped at step {summary["step"]} of {sc.train.steps}; '
                             'run the pipeline again to resume it.')
    done[name] = {'seconds': time.time() - t, 'summary': summary}
    fileio.write_json(marker, done[name], indent=2)
  return done


class StageInterrupted(Exception):
  """A stage checkpointed and stopped early (SIGTERM): later stages and the evaluation wait."""


def check_reuse(config) -> list[str]:
  """The stages taken from config.upstream: each one's parent must be reused too (one lineage)."""
  from lmresearch.training.config import reused_stages
  from lmresearch.core.errors import ConfigError
  reuse = reused_stages(config)
  for name in reuse:
    parent = PARENT.get(name)
    if parent and parent in config.run.split(',') and parent not in reuse:
      raise ConfigError(f'config.reuse={config.reuse!r} takes {name} from {config.upstream} but '
                        f'trains its parent {parent} anew; reuse {parent} too, or train both.')
  return reuse


def link_upstream(upstream: str, name: str, stage_dir: str) -> None:
  """A finished stage of another pipeline run, used as this run's own (a symlink): sweeps of a
  later stage's settings train their common parents once (config.upstream, config.reuse)."""
  from lmresearch.core.errors import ConfigError
  if fileio.is_remote(stage_dir):
    raise ConfigError(f'config.reuse links finished stages into the workdir, and {stage_dir} is '
                      'on an object store (no symlinks): use a local or mounted workdir, or '
                      'train every stage (config.reuse=\'\').')
  source = os.path.abspath(os.path.join(upstream, name))
  if not os.path.exists(os.path.join(source, 'DONE.json')):
    raise ConfigError(f'config.upstream={upstream!r}: {source} holds no finished {name} stage '
                      f'(DONE.json); run that pipeline first, or drop {name} from config.reuse.')
  if os.path.lexists(stage_dir):
    raise ConfigError(f'{stage_dir} holds an unfinished {name} stage of its own, and '
                      f'config.reuse asks for {source}: remove it, or drop {name} from config.reuse.')
  os.makedirs(os.path.dirname(os.path.abspath(stage_dir)), exist_ok=True)
  os.symlink(source, stage_dir)
  print(f'[pipeline] {name}: reused from {source}', flush=True)


def run_pipeline(config, workdir: str, devices=None) -> dict:
  from lmresearch.evals import pipeline_eval, report
  fileio.makedirs(workdir)
  done = run_stages(config, workdir, devices)
  t = time.time()
  results = pipeline_eval.evaluate(config, workdir, [n for n in config.run.split(',')])
  eval_seconds = _load_json(fileio.join(workdir, 'eval', 'seconds.json'), 0.0) + time.time() - t
  fileio.write_json(fileio.join(workdir, 'eval', 'seconds.json'), eval_seconds, indent=2)
  # A reused stage's time was spent by the upstream run: this run's own time leaves it out, and
  # the time the whole pipeline takes (what a fresh run of this config costs) counts it.
  results['wall_seconds'] = sum(d['seconds'] for d in done.values() if not d.get('reused')) + eval_seconds
  results['stage_seconds'] = {n: d['seconds'] for n, d in done.items()}
  results['reused_stages'] = [n for n, d in done.items() if d.get('reused')]
  results['pipeline_seconds'] = sum(d['seconds'] for d in done.values()) + eval_seconds
  runs = {n: fileio.join(workdir, n) for n in done}
  out = report.write(workdir, results, runs) if fileio.is_primary() else results
  print(f'[pipeline] report: {workdir}/report.md, report.html, report.json '
        f'({results["wall_seconds"]:.0f} s of stage and evaluation time)', flush=True)
  return out


def main(argv):
  del argv
  setup_jax(cpu_devices=FLAGS.cpu_devices)
  try:
    with cli_errors():
      run_pipeline(FLAGS.config, FLAGS.workdir)
  except StageInterrupted as e:   # like a stage run alone: saved on SIGTERM, exit 0
    print(f'[pipeline] {e}', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

"""Entry point: python -m lmresearch.main --config=configs/pretrain.py[:preset] --workdir=runs/x

Builds the mesh and the stage named by config.stage, then runs the one trainer. Starting again on
the same workdir resumes from its latest checkpoint.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from lmresearch.stages.launch import run
from lmresearch.core.parallel import mesh_devices
from lmresearch.runtime import cli_errors, parse_flags, setup_jax

config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. configs/pretrain.py:size=tiny.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, tokenizer, config.')
flags.DEFINE_integer('cpu_devices', -1, 'On a CPU-only host, split the CPU into this many JAX '
                     'devices (data parallel across cores is faster than one device using all '
                     'cores). -1 = one per core; 1 = off. Ignored if XLA_FLAGS already sets it.')
flags.DEFINE_bool('dry_run', False, 'Validate the config, build the sharded state abstractly and '
                  'compile-check one train step, without data or memory (for pod presets). On a '
                  'CPU host it simulates as many devices as config.mesh asks for.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.workdir and not FLAGS.dry_run:
    print('error: --workdir is required (the run directory).', file=sys.stderr)
    sys.exit(2)
  cpu_devices = FLAGS.cpu_devices
  if FLAGS.dry_run and cpu_devices == -1:   # on a CPU host, simulate the devices the mesh asks for
    cpu_devices = mesh_devices(FLAGS.config.mesh, len(os.sched_getaffinity(0)))
  setup_jax(cpu_devices=cpu_devices)
  with cli_errors():
    run(FLAGS.config, FLAGS.workdir, FLAGS.dry_run)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main, flags_parser=parse_flags)

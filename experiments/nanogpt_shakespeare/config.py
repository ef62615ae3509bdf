"""nanoGPT's train_shakespeare_char CPU recipe ("I only have a macbook"), 2000 iterations, 3 seeds.

  python -m lmresearch.sweep --config=experiments/nanogpt_shakespeare/config.py \
      --workdir=runs/exp/nanogpt_shakespeare
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from _common import load_config  # noqa: E402
from lmresearch.training.config import parse_arg  # noqa: E402


def get_config(arg=None):
  parse_arg(arg)   # no preset arguments
  c = load_config('pretrain', 'preset=shakespeare_char')
  c.train.eval_batches = 200   # nanoGPT's estimate_loss: 200 batches
  return c


def get_sweep(h):
  return h.sweep('seed', [0, 1, 2])


def get_report():
  return {
      'title': "nanoGPT's shakespeare_char on a laptop CPU (nanoGPT README)",
      'metrics': {'eval/loss': 'validation loss at iteration 2000 (200 batches of 12 x 64 '
                               'characters)',
                  'train/loss': 'training loss of the last logged step',
                  'perf/step_time_s': 'seconds per iteration (last logged)'},
      'labels': {'eval/loss': 'val loss', 'train/loss': 'train loss',
                 'perf/step_time_s': 's / iteration'},
      'per_trial': ['eval/loss', 'train/loss'],
      'claims': [{'claim': "Our trainer reaches nanoGPT's CPU loss", 'value': 'eval/loss',
                  'criterion': 'within 0.05 of 1.88',
                  'paper': 'nanoGPT README, "I only have a macbook": the CPU recipe "gets us a '
                           'loss of only 1.88" (one run, 20 evaluation batches, no interval)'}],
      'curves': [{'name': 'val_loss', 'x': 'step', 'y': 'eval/loss', 'group': 'seed',
                  'connect': True, 'title': 'validation loss along training (evaluated every 500 iterations)'}],
  }

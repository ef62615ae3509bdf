"""The benchmark scripts: scripts/bench_gpu.sh runs end to end on this CPU with its tiny preset
(issue 20: the GPU script stays tested where no accelerator is) and its table says what it
measured; scripts/bench.py's suite section reads pytest's own figures."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import bench  # noqa: E402


def test_the_suite_section_reads_pytest_s_counts_and_slowest_phases():
  out = """........s..F
============================= slowest 3 durations ==============================
99.69s call     tests/test_a.py::test_x[ocdbt.process_1/d]
57.60s setup    tests/test_b.py::test_y
0.50s teardown tests/test_c.py::test_z
=========================== short test summary info ============================
FAILED tests/test_d.py::test_w - AssertionError
1 failed, 340 passed, 2 skipped, 16 warnings in 1349.59s (0:22:29)
"""
  r = bench.parse_pytest(out)
  assert (r['passed'], r['failed'], r['skipped'], r['pytest_s']) == (340, 1, 2, 1349.59)
  assert [(t['s'], t['phase'], t['test']) for t in r['slowest']] == [
      (99.69, 'call', 'tests/test_a.py::test_x[ocdbt.process_1/d]'),
      (57.60, 'setup', 'tests/test_b.py::test_y'), (0.5, 'teardown', 'tests/test_c.py::test_z')]
  assert bench.parse_pytest('no summary')['pytest_s'] is None


@pytest.mark.slow
def test_the_gpu_benchmark_runs_end_to_end_on_the_cpu_with_its_tiny_preset(tmp_path):
  out = tmp_path / 'gpu.json'
  env = dict(os.environ, LMR_NO_INSTALL='1')   # no accelerator here: nothing to install anyway
  env.pop('XLA_FLAGS', None)   # the CPU as one device, as an accelerator-less host runs it
  proc = subprocess.run(['bash', 'scripts/bench_gpu.sh', '--tiny', f'--json={out}'], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  assert res['machine']['platform'] == 'cpu' and res['machine']['devices'] == 1
  train, sample, main = res['train'], res['sample'], res['main']
  assert train['shape'] == 'tiny' and train['ms_per_step'] > 0 and train['iters'] == 3
  assert 0 < train['mfu'] < 1 and train['peak_flops'] > 0   # against the CPU's measured peak
  assert 0 < train["last_loss"] < 20   # a finite cross-entropy over a 512-token vocabulary
  assert sample['batch'] == 4 and sample['tokens_per_s'] > 0 and sample['ttft_ms'] > 0
  assert set(main['stages_s']) == {'pretrain', 'sft'} and main['wall_s'] > sum(main['stages_s'].values())
  lines = proc.stdout.splitlines()
  table = [l for l in lines if l.startswith('| ')]
  assert [l.split(' | ')[0] for l in table[2:]] == ['| train step, tiny shape, float32, 2 x 128 '
                                                    'tokens on 1 device(s)',
                                                    '| sampler, batch 4, prompt 64, 128 new tokens, '
                                                    'greedy, float32',
                                                    '| main job (configs/pipeline.py:size=smoke '
                                                    '--config.run=pretrain,sft '
                                                    '--config.eval.prompting=False '
                                                    '--config.eval.rm_rankings=0)']
  assert 'MFU' in table[2] and 'tokens/s' in table[3] and 'wall' in table[4]

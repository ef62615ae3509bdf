"""EleutherAI's lm-evaluation-harness on our model in process (lmresearch/evals/harness.py,
model 'lmresearch'), checked against the harness's own `hf` backend on the same weights: tiny
random Hugging Face models built here (tests/test_hf.py `build`) and imported as runs. Every
request's log-likelihood within 1e-3 and the same is_greedy, the same acc / acc_norm, the same
greedy generations, cut at the same stop strings.

Llama's tokenizer adds a BOS, GPT-2's adds nothing (an empty context is then the EOS id, and a
document's rolling windows start from it). Both backends get a 64-token context, so the long
document is scored in several windows, and batches of 4 rows, so requests of several lengths
share a padded batch. The tasks are local files (tests/data/lm_eval_harness); the CLI test also
runs our shipped tasks (lmresearch/evals/lm_eval_tasks) through `python -m
lmresearch.evaluate --lm_eval`.
"""
import json
import os
import subprocess
import sys

# The harness and `datasets` must not reach for the hub (no network here; local files only).
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import jax  # noqa: E402
import pytest  # noqa: E402

lm_eval = pytest.importorskip('lm_eval', reason='lm-evaluation-harness is a test extra: '
                              'pip install -e .[test]')
pytest.importorskip('transformers', reason='the hf backend is the reference: pip install -e .[test]')

import lm_eval.models  # noqa: E402,F401  (registers the harness's own backends: 'hf')
from lm_eval.tasks import TaskManager  # noqa: E402

from lmresearch.training import config as lmc  # noqa: E402
from lmresearch import convert  # noqa: E402
from lmresearch.evals import harness  # noqa: E402  (registers model 'lmresearch')
from test_hf import build  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS_DIR = os.path.join(ROOT, 'tests', 'data', 'lm_eval_harness')
TASKS = ['harness_choice', 'harness_rolling', 'harness_generate']
MAX_LENGTH = 64
TOL = 1e-3


@pytest.fixture(scope='module', params=['llama_gqa', 'gpt2'])
def imported(request, tmp_path_factory):
  """(the Hugging Face directory, the run imported from it)."""
  root = tmp_path_factory.mktemp(request.param)
  build(request.param, str(root / 'hf'))
  convert.import_run(str(root / 'hf'), str(root / 'run'), devices=jax.devices()[:1])
  return str(root / 'hf'), str(root / 'run')


def evaluate(model, model_args, monkeypatch, **kw):
  """simple_evaluate from the repository root (the tasks' data_files are relative to it):
  ({task: {doc_id: its logged sample}}, {task: its metrics})."""
  monkeypatch.chdir(ROOT)
  out = lm_eval.simple_evaluate(
      model=model, model_args=model_args, tasks=TASKS, log_samples=True, bootstrap_iters=0,
      task_manager=TaskManager(include_path=TASKS_DIR, include_defaults=False), batch_size=4,
      torch_random_seed=None, **kw)
  return {t: {s['doc_id']: s for s in ss} for t, ss in out['samples'].items()}, out['results']


def _answers(sample) -> list:
  """A sample's (log-likelihood, is_greedy) per request (a choice, or a whole document)."""
  return [tuple(r[0]) if isinstance(r[0], (list, tuple)) else (r[0], None) for r in sample['resps']]


def test_in_process_backend_scores_and_generates_as_the_hf_backend(imported, monkeypatch):
  hf_dir, run_dir = imported
  ours, our_metrics = evaluate(harness.MODEL_NAME, f'workdir={run_dir},max_length={MAX_LENGTH}',
                               monkeypatch)
  ref, ref_metrics = evaluate('hf', f'pretrained={hf_dir},dtype=float32,max_length={MAX_LENGTH}',
                              monkeypatch, device='cpu')
  worst = 0.0
  for task in ('harness_choice', 'harness_rolling'):
    assert sorted(ours[task]) == sorted(ref[task])
    for doc, sample in ref[task].items():
      want, got = _answers(sample), _answers(ours[task][doc])
      assert len(got) == len(want)
      for (w, w_greedy), (g, g_greedy) in zip(want, got):
        assert abs(g - w) <= TOL, (task, doc, got, want)
        assert g_greedy == w_greedy, (task, doc, got, want)
        worst = max(worst, abs(g - w))
    for metric, value in ref_metrics[task].items():   # perplexities, to the log-likelihoods' tolerance
      if isinstance(value, float) and not metric.endswith('stderr,none'):
        assert our_metrics[task][metric] == pytest.approx(value, rel=1e-3, abs=1e-3), metric
  for metric in ('acc,none', 'acc_norm,none'):
    assert our_metrics['harness_choice'][metric] == ref_metrics['harness_choice'][metric]
  # The long document really was scored in several 64-token windows.
  assert len(ref['harness_rolling'][0]['doc']['text'].encode()) > 3 * MAX_LENGTH
  gen = {d: s['resps'][0][0] for d, s in ours['harness_generate'].items()}
  assert gen == {d: s['resps'][0][0] for d, s in ref['harness_generate'].items()}
  assert any(gen.values()), 'every generation empty: nothing was compared'
  print(f'{os.path.basename(os.path.dirname(hf_dir))}: max |d loglik| in process vs hf backend '
        f'= {worst:.2e}')


def test_evaluate_cli_runs_harness_tasks_and_writes_the_results_beside_the_run(imported):
  hf_dir, run_dir = imported
  if 'gpt2' in hf_dir:
    pytest.skip('the command line is checked once, on the Llama import')
  tasks = ['harness_choice', 'harness_rolling', 'lmr_world_facts', 'lmr_world_facts_gen',
           'lmr_world_arithmetic', 'lmr_world_text']
  gsm8k = os.path.exists(os.path.join(lmc.DATA_DIR, 'gsm8k', 'test.jsonl'))
  tasks += ['lmr_gsm8k'] if gsm8k else []
  r = subprocess.run(
      [sys.executable, '-m', 'lmresearch.evaluate', f'--workdir={run_dir}',
       f'--lm_eval={",".join(tasks)}', f'--include_path={TASKS_DIR}', '--limit=3',
       '--num_fewshot=1', '--batch_size=8'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'PYTHONPATH': ROOT})
  assert r.returncode == 0, r.stderr[-3000:]
  results = json.load(open(os.path.join(run_dir, 'eval', 'lm_eval_results.json')))
  assert set(results['results']) == set(tasks)
  assert set(results['n-samples']) == set(tasks)
  for task in tasks:
    assert results['n-samples'][task]['effective'] == 3, task
    assert f'| {task}' in r.stdout or f'|{task}' in r.stdout.replace(' ', ''), r.stdout
  choice = results['results']['harness_choice']
  assert 0 <= choice['acc,none'] <= 1 and 0 <= choice['acc_norm,none'] <= 1
  assert results['results']['harness_rolling']['bits_per_byte,none'] > 0
  assert results['results']['lmr_world_text']['bits_per_byte,none'] > 0
  assert 0 <= results['results']['lmr_world_facts']['acc,none'] <= 1
  assert 'exact_match,strict-match' in results['results']['lmr_world_arithmetic']
  assert results['configs']['lmr_world_arithmetic']['num_fewshot'] == 1
  assert 'results: ' + os.path.join(run_dir, 'eval', 'lm_eval_results.json') in r.stdout


def test_evaluate_cli_names_an_unknown_task_in_one_line(imported):
  hf_dir, run_dir = imported
  if 'gpt2' in hf_dir:
    pytest.skip('checked once')
  r = subprocess.run(
      [sys.executable, '-m', 'lmresearch.evaluate', f'--workdir={run_dir}',
       '--lm_eval=harness_choice,no_such_task_xyz', f'--include_path={TASKS_DIR}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'PYTHONPATH': ROOT})
  assert r.returncode == 2
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'no_such_task_xyz' in last, r.stderr[-2000:]


@pytest.mark.parametrize('kwargs', [
    {'until': 'Question:', 'max_gen_toks': 5},
    {'until': ['a', 'b'], 'do_sample': True, 'temperature': 0.7, 'top_p': 0.9},
    {'temperature': 0.5, 'max_new_tokens': 7},
    {'do_sample': False, 'temperature': 0.8, 'max_tokens': 9},
    {}])
def test_generation_settings_are_read_as_the_harness_reads_them(kwargs):
  from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
  want = normalize_gen_kwargs(dict(kwargs), 256)
  got = harness.generation_settings(dict(kwargs), 256, '</s>')
  assert got['until'] == handle_stop_sequences(want['until'], eos='</s>')
  assert got['max_gen_toks'] == want['max_gen_toks']
  assert got['temperature'] == (want['temperature'] if want['do_sample'] else 0.0)


@pytest.mark.parametrize('family', ['gemma3', 'gemma2'])
def test_shared_context_scoring_equals_scoring_every_row_whole(family, tmp_path):
  """Answer choices scored after their context is prefilled once (`_shared_contexts`, a KV
  cache copied to each choice) give what running every row whole gives (`_whole_rows`), on
  families with sliding windows, soft-capping and QK-norm, with contexts that cross the window,
  a context whose choices fill more than one batch, and one-token continuations."""
  build(family, str(tmp_path / 'hf'))
  convert.import_run(str(tmp_path / 'hf'), str(tmp_path / 'run'), devices=jax.devices()[:1])
  lm = harness.LMResearchLM(workdir=str(tmp_path / 'run'), batch_size=4, max_length=128)
  rng = __import__('random').Random(0)
  rows, conts = [], []
  for length, choices in ((90, 6), (9, 3), (23, 2), (2, 1)):   # the window is 64
    ctx = [rng.randrange(3, 200) for _ in range(length)]
    for _ in range(choices):
      c = rng.randrange(1, 7)
      rows.append(ctx + [rng.randrange(3, 200) for _ in range(c)])
      conts.append(c)
  contexts = [tuple(r[:-c]) for r, c in zip(rows, conts)]
  shared = lm._shared_contexts(contexts, rows, conts)
  whole = lm._whole_rows(rows, conts)
  for (a, ga), (b, gb) in zip(shared, whole):
    assert abs(a - b) <= 1e-4, (a, b)
    assert ga == gb

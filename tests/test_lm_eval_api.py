"""EleutherAI's lm-evaluation-harness itself against `python -m lmresearch.serve`: its
`local-completions` model (loglikelihood by echo + logprobs, loglikelihood_rolling,
generate_until) and `local-chat-completions` (generate_until) on tiny random Hugging Face models
of three families, checked against the harness's own `hf` backend on the same weights: every
request's log-likelihood within 1e-3, the same accuracies, the same greedy generations.

The families differ where the harness is fragile: Llama's tokenizer adds a BOS, GPT-2's and
Qwen2's add nothing (an echoed prompt must still give its first token, with a null log-prob, or
the harness's slice is off by one). GPT-2 is asked with string prompts (the server tokenizes
them), the others with token ids, each in batches of several prompts per request. The runs are
served through symlinks in the server's workdir. Tasks are local files (tests/data/lm_eval_tasks).
"""
import os
import sys

# The harness and `datasets` must not reach for the hub (no network here; local files only).
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import jax  # noqa: E402
import pytest  # noqa: E402



lm_eval = pytest.importorskip('lm_eval', reason='lm-evaluation-harness is a test extra: '
                              'pip install "lm_eval[api]"')
import lm_eval.evaluator  # noqa: E402,F401
import lm_eval.tasks  # noqa: E402,F401

from lmresearch import convert  # noqa: E402
from servers import free_port, running  # noqa: E402
from test_hf import build  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS_DIR = os.path.join(ROOT, 'tests', 'data', 'lm_eval_tasks')
TASKS = ['lmr_choice', 'lmr_rolling', 'lmr_generate']
TOL = 1e-3

# How the harness asks each family (beyond base_url, model, tokenizer): string prompts for GPT-2
# (where a dropped first token showed); Llama's BOS in the harness's ids as the hf backend adds it.
ASK = {'gpt2': 'tokenized_requests=False', 'llama_gqa': 'add_bos_token=True', 'qwen2': ''}
# The hf backend's context; the API backend keeps back one token for the one it asks for and one
# for the rolling windows' context, so it is given two more to cut the documents alike. Short: the
# longest choice is cut (alike), the documents take several windows, and every request fits the
# server's 32-token buckets (each bucket is a program the server compiles).
HF_MAX_LENGTH = 31


@pytest.fixture(scope='module')
def served(tmp_path_factory):
  """Each family built and imported, its run linked into one workdir, served by one server:
  (its url, {family: the Hugging Face directory})."""
  root = tmp_path_factory.mktemp('lm_eval')
  workdir = root / 'served'
  workdir.mkdir()
  hf = {}
  for name in ASK:
    hf[name] = str(root / name / 'hf')
    build(name, hf[name])
    convert.import_run(hf[name], str(root / name / 'run'), devices=jax.devices()[:1])
    (workdir / name).symlink_to(root / name / 'run', target_is_directory=True)
  port = free_port()
  env = {**os.environ, 'PYTHONPATH': ROOT, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
  argv = [sys.executable, '-m', 'lmresearch.serve', f'--workdir={workdir}', f'--port={port}',
          '--slots=2']
  with running(argv, port, root / 'serve.log', env=env) as (url, _):
    yield url, hf


@pytest.fixture(scope='module')
def task_manager():
  from lm_eval.tasks import TaskManager
  return TaskManager(include_path=TASKS_DIR, include_defaults=False)


def evaluate(task_manager, model, model_args, tasks, monkeypatch, **kw):
  """simple_evaluate from the repository root (the tasks' data_files are relative to it):
  ({task: {doc_id: its logged sample}}, {task: its metrics})."""
  monkeypatch.chdir(ROOT)
  out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=tasks,
                                task_manager=task_manager, log_samples=True, bootstrap_iters=0,
                                **kw)
  samples = {t: {s['doc_id']: s for s in ss} for t, ss in out['samples'].items()}
  return samples, out['results']


def _logliks(sample) -> list:
  """A sample's log-likelihoods, one per request (a choice, or a whole document)."""
  return [r[0][0] if isinstance(r[0], (list, tuple)) else r[0] for r in sample['resps']]


@pytest.mark.parametrize('family', sorted(ASK))
def test_local_completions_scores_and_generates_as_the_hf_backend(served, task_manager, family,
                                                                  monkeypatch):
  url, hf = served
  api, api_metrics = evaluate(
      task_manager, 'local-completions',
      f'base_url={url}/v1/completions,model={family},tokenizer={hf[family]},'
      f'tokenizer_backend=huggingface,max_length={HF_MAX_LENGTH + 2},max_retries=1,'
      + ASK[family], TASKS, monkeypatch, batch_size=4)
  ref, ref_metrics = evaluate(
      task_manager, 'hf', f'pretrained={hf[family]},dtype=float32,max_length={HF_MAX_LENGTH}',
      TASKS, monkeypatch, batch_size=1, device='cpu')
  worst = 0.0
  for task in ('lmr_choice', 'lmr_rolling'):
    assert sorted(api[task]) == sorted(ref[task])
    for doc, sample in ref[task].items():
      want, got = _logliks(sample), _logliks(api[task][doc])
      assert len(got) == len(want)
      for w, g in zip(want, got):
        assert abs(g - w) <= TOL, (task, doc, got, want)
        worst = max(worst, abs(g - w))
    # acc, acc_norm, perplexities: the same (to the tolerance the log-likelihoods allow)
    for metric, value in ref_metrics[task].items():
      if isinstance(value, float) and not metric.endswith('stderr,none'):
        assert api_metrics[task][metric] == pytest.approx(value, rel=1e-3, abs=1e-3), metric
  assert api_metrics['lmr_choice']['acc,none'] == ref_metrics['lmr_choice']['acc,none']
  assert api_metrics['lmr_choice']['acc_norm,none'] == ref_metrics['lmr_choice']['acc_norm,none']
  gen = {d: s['resps'][0][0] for d, s in api['lmr_generate'].items()}
  assert gen == {d: s['resps'][0][0] for d, s in ref['lmr_generate'].items()}
  assert any(gen.values()), 'every generation empty: nothing was compared'
  print(f'{family}: max |d loglik| server vs hf backend = {worst:.2e}')


def test_local_chat_completions_generates_as_the_hf_backend_with_the_chat_template(
    served, task_manager, monkeypatch):
  url, hf = served
  api, _ = evaluate(task_manager, 'local-chat-completions',
                    f'base_url={url}/v1/chat/completions,model=qwen2,max_retries=1',
                    ['lmr_generate'], monkeypatch, apply_chat_template=True)
  ref, _ = evaluate(task_manager, 'hf', f'pretrained={hf["qwen2"]},dtype=float32',
                    ['lmr_generate'], monkeypatch, batch_size=1, device='cpu',
                    apply_chat_template=True)
  gen = {d: s['resps'][0][0] for d, s in api['lmr_generate'].items()}
  assert gen == {d: s['resps'][0][0] for d, s in ref['lmr_generate'].items()}
  assert any(gen.values()), 'every generation empty: nothing was compared'

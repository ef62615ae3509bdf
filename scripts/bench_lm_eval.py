"""lm-evaluation-harness tasks on one model, three ways, in one run on one machine: the harness's
own `hf` backend (transformers + torch), our in-process backend (model 'lmresearch',
lmresearch/evals/harness.py) and, with --server, the harness's `local-completions` against
`python -m lmresearch.serve`. The issue's targets: in process at least 2x the hf backend's speed;
through the server at least as fast as hf.

  python scripts/bench_lm_eval.py                      # the small shape
  python scripts/bench_lm_eval.py --shape=100m --server

The model: a random Llama-style checkpoint built with transformers (`--shape`: small = 4 layers
x 256 wide, ~5M parameters; 100m = 12 layers x 768 wide, ~97M), with a byte-level BPE tokenizer
trained on the embedded world's corpus (a BOS in front of every text, as Llama's), imported as a
run with `lmresearch.convert`. The tasks: our shipped world tasks, the three request kinds --
lmr_world_facts (multiple choice: 60 questions x 6-12 answer sentences), lmr_world_text
(whole documents, loglikelihood_rolling) and lmr_world_arithmetic (3-shot, greedy generation of
up to 96 tokens; random weights never stop early, in either backend) -- each cut to --limit
documents. Every backend runs in its own process, one after another (never two at once), with
the same batch size (--batch_size; the hf backend's default is 1: --hf_batch_size=1 to time that
too). Seconds are the wall time of one `simple_evaluate` per task with the model already loaded,
printed per task and summed; ours includes its compiles (its second, warm pass is printed beside
it), and so does the server's (started without --warmup, it compiles on the first requests of
each shape; its second pass is printed too). The backends' metrics are printed
too: they should agree (tests/test_lm_eval_harness.py checks that to 1e-3 per request).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from bench_common import OthersShare, cores  # noqa: E402

TASKS_DIR = os.path.join(ROOT, 'lmresearch', 'evaluation', 'lm_eval_tasks')
TASKS = ['lmr_world_facts', 'lmr_world_text', 'lmr_world_arithmetic']
SHAPES = {   # transformers LlamaConfig keys
    'small': dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=4),
    '100m': dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=12),
}
VOCAB, MAX_LEN = 8192, 512
BOS, EOS = '<|begin_of_text|>', '<|end_of_text|>'
OFFLINE = {'HF_DATASETS_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}


def build(shape: str, out: str) -> dict:
  """The checkpoint as a Hugging Face directory (out/hf) and as our run (out/run)."""
  import jax
  import torch
  import transformers
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  from lmresearch import convert
  from lmresearch.data import world
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(world.corpus(0, 5000), trainers.BpeTrainer(
      vocab_size=VOCAB, special_tokens=[BOS, EOS], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.post_processor = processors.TemplateProcessing(single=f'{BOS} $A',
                                                     special_tokens=[(BOS, tok.token_to_id(BOS))])
  hf_dir = os.path.join(out, 'hf')
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                              pad_token=EOS)
  fast.save_pretrained(hf_dir)
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=MAX_LEN,
                                 bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                                 **SHAPES[shape])
  model = transformers.AutoModelForCausalLM.from_config(cfg)
  model.save_pretrained(hf_dir)
  convert.import_run(hf_dir, os.path.join(out, 'run'), devices=jax.devices()[:1])
  return {'params': sum(p.numel() for p in model.parameters()), 'vocab': tok.get_vocab_size()}


def evaluate(lm, limit: int, batch_size: int) -> tuple[float, dict, float, dict]:
  """(seconds, {task: metrics}, the machine's CPU share that other processes took meanwhile,
  {task: seconds}): one simple_evaluate per task, one after another."""
  import lm_eval
  from lm_eval.tasks import TaskManager
  manager = TaskManager(include_path=TASKS_DIR, include_defaults=False)
  others = OthersShare().start()
  metrics, per_task = {}, {}
  for task in TASKS:
    t = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit,
                                  batch_size=batch_size, bootstrap_iters=0, log_samples=False,
                                  torch_random_seed=None)
    per_task[task] = time.perf_counter() - t
    metrics[task] = {k: v for k, v in out['results'][task].items() if isinstance(v, float)}
  return sum(per_task.values()), metrics, others.stop(), per_task


def worker(kind: str, out: str, limit: int, batch_size: int, url: str = '') -> dict:
  t = time.perf_counter()
  if kind == 'ours':
    from lmresearch.evals import harness
    lm = harness.LMResearchLM(workdir=os.path.join(out, 'run'), batch_size=batch_size)
  elif kind == 'hf':
    from lm_eval.models.huggingface import HFLM
    lm = HFLM(pretrained=os.path.join(out, 'hf'), dtype='float32', device='cpu',
              batch_size=batch_size)
  else:   # the server, through the harness's OpenAI-compatible completions client
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    lm = LocalCompletionsAPI(base_url=f'{url}/v1/completions', model='run',
                             tokenizer=os.path.join(out, 'hf'), tokenizer_backend='huggingface',
                             max_length=MAX_LEN, add_bos_token=True, batch_size=batch_size,
                             num_concurrent=1, max_retries=1)
  load = time.perf_counter() - t
  seconds, metrics, others, per_task = evaluate(lm, limit, batch_size)
  result = {'load_s': load, 'seconds': seconds, 'metrics': metrics, 'others': others,
            'tasks': per_task}
  if kind != 'hf':   # again, every program compiled: the steady state
    warm = evaluate(lm, limit, batch_size)
    result['warm_seconds'], result['warm_tasks'] = warm[0], warm[3]
  return result


def run_worker(kind: str, out: str, a, url: str = '') -> dict:
  argv = [sys.executable, __file__, f'--worker={kind}', f'--out={out}', f'--limit={a.limit}',
          f'--batch_size={a.hf_batch_size if kind == "hf" else a.batch_size}', f'--url={url}']
  r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **OFFLINE,
                                                                'PYTHONPATH': ROOT})
  if r.returncode:
    sys.exit(f'error: the {kind} worker failed:\n{r.stderr[-3000:]}')
  return json.loads(r.stdout.strip().splitlines()[-1])


def serve(out: str, a) -> dict:
  """--server: `python -m lmresearch.serve` on the run (linked as 'run' in its workdir)."""
  sys.path.insert(0, os.path.join(ROOT, 'tests'))
  from servers import free_port, running
  served = os.path.join(out, 'served')
  os.makedirs(served, exist_ok=True)
  if not os.path.exists(os.path.join(served, 'run')):
    os.symlink(os.path.join(out, 'run'), os.path.join(served, 'run'))
  port = free_port()
  argv = [sys.executable, '-m', 'lmresearch.serve', f'--workdir={served}', f'--port={port}',
          f'--slots={a.batch_size}']
  with running(argv, port, os.path.join(out, 'serve.log'), cwd=ROOT,
               env={**os.environ, 'PYTHONPATH': ROOT}, timeout=300) as (url, _):
    return run_worker('server', out, a, url)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--shape', choices=sorted(SHAPES), default='small')
  p.add_argument('--limit', type=int, default=40, help='documents per task')
  p.add_argument('--batch_size', type=int, default=32, help='rows per call (ours; hf by default)')
  p.add_argument('--hf_batch_size', type=int, default=None, help='the hf backend\'s (default: '
                 '--batch_size)')
  p.add_argument('--server', action='store_true', help='also time local-completions through '
                 'python -m lmresearch.serve')
  p.add_argument('--out', default=None, help='where the checkpoint is built (default: a temp dir)')
  p.add_argument('--json', default=None, help='also write the figures here')
  p.add_argument('--worker', choices=('ours', 'hf', 'server'), help=argparse.SUPPRESS)
  p.add_argument('--url', default='', help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker:
    print(json.dumps(worker(a.worker, a.out, a.limit, a.batch_size, a.url)), flush=True)
    return
  a.hf_batch_size = a.hf_batch_size or a.batch_size
  out = a.out or tempfile.mkdtemp(prefix='bench_lm_eval_')
  info_file = os.path.join(out, 'info.json')   # a checkpoint built before (--out) is reused
  if not os.path.exists(info_file):
    os.makedirs(out, exist_ok=True)
    info = build(a.shape, out)
    with open(info_file, 'w') as f:
      json.dump(info, f)
  info = json.load(open(info_file))
  print(f'shape {a.shape} ({(info["params"] or 0) / 1e6:.1f}M parameters, vocab {info["vocab"]}, '
        f'context {MAX_LEN}); tasks {", ".join(TASKS)}, limit {a.limit} each; batch size '
        f'{a.batch_size} (hf {a.hf_batch_size}); {cores()} cores', flush=True)
  res = {'date': time.strftime('%Y-%m-%d'), 'shape': a.shape, 'limit': a.limit, 'batch_size': a.batch_size,
         'hf_batch_size': a.hf_batch_size, 'cores': cores(), **info}
  res['hf'] = run_worker('hf', out, a)   # hf compiles nothing: its second pass is its first
  busy = lambda r: f'; others used {r["others"]:.0%} of the CPU' if r['others'] is not None else ''
  print(f'hf backend           {res["hf"]["seconds"]:8.1f} s   (load {res["hf"]["load_s"]:.1f} s'
        f'{busy(res["hf"])})', flush=True)
  res['ours'] = run_worker('ours', out, a)
  o = res['ours']
  print(f'in process (ours)    {o["seconds"]:8.1f} s   (load {o["load_s"]:.1f} s; warm pass '
        f'{o["warm_seconds"]:.1f} s{busy(o)})   {res["hf"]["seconds"] / o["seconds"]:.2f}x hf '
        f'({res["hf"]["seconds"] / o["warm_seconds"]:.2f}x warm; target >= 2x)', flush=True)
  if a.server:
    res['server'] = serve(out, a)
    s = res['server']
    print(f'server (local-completions) {s["seconds"]:8.1f} s   ({busy(s)[2:] or "-"}, the '
          'server\'s own included)   '
          f'{res["hf"]["seconds"] / s["seconds"]:.2f}x hf; warm pass {s["warm_seconds"]:.1f} s, '
          f'{res["hf"]["seconds"] / s["warm_seconds"]:.2f}x (target >= 1x)', flush=True)
  for task in TASKS:
    print(f'  {task}: ' + ', '.join(
        f'{k} {res[k]["tasks"][task]:.2f} s' + (f' (warm {res[k]["warm_tasks"][task]:.2f})'
                                               if 'warm_tasks' in res[k] else '')
        for k in ('hf', 'ours', 'server') if k in res))
  for task in TASKS:
    row = {k: {m: round(v, 4) for m, v in res[k]['metrics'][task].items()}
           for k in ('hf', 'ours', 'server') if k in res}
    print(f'  {task}: {json.dumps(row)}')
  if a.json:
    with open(a.json, 'w') as f:
      json.dump(res, f, indent=2)


if __name__ == '__main__':
  main()

"""Evaluate a run on a task with a prompting method:

  python -m lmresearch.evaluate --workdir=runs/sft --task=gsm8k
      --data=../shared/data/gsm8k/test.jsonl --prompting=cot --limit=50 --out=results.jsonl

Prints a JSON summary (accuracy overall and per step count, or loss and bits per byte, or a
win rate) and, with --out, writes one JSON line per example plus the summary beside it
(results.jsonl -> results.summary.json). Tasks and methods: lmresearch/evals/tasks.py and
prompting.py. A bad input (a malformed data line, a missing run) is a one-line error, exit 2.

EleutherAI's lm-evaluation-harness tasks run on the same model in process instead of --task:

  python -m lmresearch.evaluate --workdir=runs/sft --lm_eval=lmr_world_facts,hellaswag
      [--include_path=DIR] [--num_fewshot=N] [--limit=N]

prints the harness's table and writes its result dict to RUN/eval/lm_eval_results.json (with
--out, its logged samples as JSONL too; with --chat, prompts in the run's chat template, which
the harness leaves off by default). Our tasks for it (GSM8K on the local copy, the embedded
world's questions) are in lmresearch/evals/lm_eval_tasks/; the backend is
lmresearch/evals/harness.py (pip install -e .[eval]).
"""
from __future__ import annotations

import json
import os

from absl import app, flags

from lmresearch.training import config as lmc
from lmresearch.core import fileio
from lmresearch.evals import best_of_n, prompting, tasks
from lmresearch.runtime import check_args, cli_errors, setup_jax

flags.DEFINE_string('workdir', None, 'Run to evaluate (for reward_accuracy: a reward model run).')
flags.DEFINE_enum('task', 'world_arithmetic', tasks.TASKS, 'What to measure.')
flags.DEFINE_string('data', None, 'Data file: GSM8K or {"prompt", "answer"} JSONL (gsm8k, '
                    'win_rate), rankings JSONL (reward_accuracy), text or {"text"} JSONL '
                    '(perplexity). Default: the held-out embedded world (gsm8k: '
                    '../shared/data/gsm8k/test.jsonl).')
flags.DEFINE_string('prompting', 'direct', 'direct | instruction | few_shot | cot | '
                    'self_consistency@N (N sampled cot answers, majority vote).')
flags.DEFINE_integer('shots', None, 'Exemplars per prompt for few_shot / cot (default 4; cot on '
                     'gsm8k: the 8 published chain-of-thought exemplars; fewer where they would '
                     'not fit the model context).')
flags.DEFINE_float('temperature', None, 'Sampling temperature of self-consistency (default 0.7) '
                   'and best-of-n (default 1.0); every other method decodes greedily.')
flags.DEFINE_integer('best_of', 0, 'Best-of-n: sample N answers per question and keep the one the '
                     '--reward_from model scores highest; reports accuracy, proxy reward, gold '
                     'labeler quality and KL_bon for n = 1, 2, 4, ..., N (question tasks).')
flags.DEFINE_string('reward_from', None, 'best_of: the reward model run that picks.')
flags.DEFINE_integer('limit', None, 'Evaluate at most this many examples (--lm_eval: per task).')
flags.DEFINE_list('lm_eval', None, 'lm-evaluation-harness task names (or tags, groups) to run '
                  'in process instead of --task: ours (lmr_gsm8k, lmr_world_facts, lmr_world_text, '
                  'lmr_world_facts_gen, lmr_world_arithmetic; tag lmr_world), the harness\'s own '
                  'and those in --include_path.')
flags.DEFINE_string('include_path', None, '--lm_eval: a folder of more task YAML files.')
flags.DEFINE_integer('num_fewshot', None, '--lm_eval: exemplars per prompt (default: each '
                     'task\'s own).')
flags.DEFINE_string('out', None, 'Write per-example results here (JSONL).')
flags.DEFINE_bool('chat', None, 'Prompt with the chat template (default: unless the run is a '
                  'pretrained base model).')
flags.DEFINE_string('reward_workdir', None, 'win_rate: the reward model run that judges.')
flags.DEFINE_string('other_workdir', None, 'win_rate: the run that --workdir plays against.')
flags.DEFINE_integer('seed', 0, 'Seeds exemplar choice and sampling.')
flags.DEFINE_integer('max_new_tokens', 256, 'Tokens per answer at most (capped to the context).')
flags.DEFINE_integer('batch_size', 32, 'Rows per sampler / forward call.')
FLAGS = flags.FLAGS


def evaluate() -> dict:
  config = lmc.load(FLAGS.workdir)
  # Inputs are checked before any model loads: a bad line or method fails in a second.
  task = tasks.load_task(FLAGS.task, FLAGS.data, config.data.synthetic.world_seed, FLAGS.limit)
  prompting.parse_method(FLAGS.prompting)
  run = tasks.load(FLAGS.workdir, reward=FLAGS.task == 'reward_accuracy', chat=FLAGS.chat)
  other = judge = None
  if FLAGS.best_of:
    if not FLAGS.reward_from:
      raise ValueError('--best_of needs --reward_from (the reward model run that picks).')
    if task.name not in ('world_arithmetic', 'world_facts', 'gsm8k'):
      raise ValueError(f'--best_of works on question tasks, not --task={task.name}.')
    judge = tasks.load(FLAGS.reward_from, reward=True, mesh=run.mesh, rules=run.rules)
    summary, records = best_of_n.best_of_n(
        task, run, judge, n=FLAGS.best_of, seed=FLAGS.seed, batch_size=FLAGS.batch_size,
        temperature=1.0 if FLAGS.temperature is None else FLAGS.temperature,
        max_new_tokens=FLAGS.max_new_tokens)
    return _finish({**summary, 'reward_from': FLAGS.reward_from}, records, run)
  if FLAGS.task == 'win_rate':
    if not FLAGS.other_workdir or not FLAGS.reward_workdir:
      raise ValueError('--task=win_rate needs --other_workdir and --reward_workdir.')
    other = tasks.load(FLAGS.other_workdir, chat=FLAGS.chat, mesh=run.mesh, rules=run.rules)
    judge = tasks.load(FLAGS.reward_workdir, reward=True, mesh=run.mesh, rules=run.rules)
  summary, records = tasks.run_task(
      task, run, method=FLAGS.prompting, shots=FLAGS.shots,
      temperature=0.7 if FLAGS.temperature is None else FLAGS.temperature,
      seed=FLAGS.seed, batch_size=FLAGS.batch_size, max_new_tokens=FLAGS.max_new_tokens,
      other=other, judge=judge)
  return _finish(summary, records, run)


def evaluate_lm_eval() -> str:
  """--lm_eval: the harness's tasks on the run, in process -> the table to print."""
  from lmresearch.evals import harness   # lm_eval only where asked for
  config = lmc.load(FLAGS.workdir)
  # Task names are checked before any model loads: a typo fails in seconds.
  manager = harness.task_manager(FLAGS.lm_eval, FLAGS.include_path,
                                 metadata={'world_seed': config.data.synthetic.world_seed})
  run = tasks.load(FLAGS.workdir, chat=FLAGS.chat)
  results = harness.evaluate_run(
      run, FLAGS.lm_eval, manager, num_fewshot=FLAGS.num_fewshot, limit=FLAGS.limit,
      batch_size=FLAGS.batch_size, seed=FLAGS.seed, chat=bool(FLAGS.chat),
      log_samples=bool(FLAGS.out))
  if not fileio.is_primary():
    return ''
  samples = results.pop('samples', {})
  path = harness.write_results(FLAGS.workdir, results)
  if FLAGS.out:
    _write(FLAGS.out, ''.join(harness.dumps({'task': t, **s}) + '\n'
                              for t, ss in samples.items() for s in ss))
  return f'{harness.table(results)}\nresults: {path}'


def _finish(summary: dict, records: list, run) -> dict:
  summary.update(workdir=FLAGS.workdir, step=run.step, chat=run.chat, seed=FLAGS.seed)
  if FLAGS.out:
    _write(FLAGS.out, ''.join(json.dumps(r) + '\n' for r in records))
    _write(os.path.splitext(FLAGS.out)[0] + '.summary.json', json.dumps(summary, indent=2) + '\n')
  return summary


def _write(path: str, text: str) -> None:
  fileio.makedirs(os.path.dirname(fileio.absolute(path)))
  fileio.write_text(path, text)


def main(argv):
  check_args(argv, FLAGS.workdir, 'to evaluate')
  setup_jax()
  with cli_errors(ValueError, ImportError):
    if FLAGS.lm_eval:
      text = evaluate_lm_eval()
    else:
      summary = evaluate()
      text = json.dumps(summary, indent=2)
  if fileio.is_primary():   # one summary per job, not one per process
    print(text)


if __name__ == '__main__':
  app.run(main)

"""Sample from a trained run: python -m lmresearch.sample --workdir=runs/base --prompt="The banana is"

Loads the run's config, tokenizer and latest (or --step) checkpoint, then completes every
--prompt in one batch with the KV-cache sampler. With --chat each prompt becomes a user message
and the model writes the assistant's reply (for SFT / RL runs).

A prompt longer than the model context (config.model.max_len) is an error; a prompt plus
--max_new_tokens longer than the context is clamped to fit, with a warning.
"""
from __future__ import annotations

import sys
import warnings

from absl import app, flags

from lmresearch.core import fileio
from lmresearch.runtime import check_args, cli_errors, fail, setup_jax

flags.DEFINE_string('workdir', None, 'Run directory to sample from (its config.json, '
                    'tokenizer.json and checkpoints/).')
flags.DEFINE_multi_string('prompt', None, 'Prompt text; repeat the flag to batch several prompts. '
                          'A prompt longer than the model context (config.model.max_len tokens) '
                          'is an error.')
flags.DEFINE_integer('max_new_tokens', 64, 'Tokens to generate per prompt at most. If prompt + '
                     'max_new_tokens exceeds the model context, generation is clamped to fit '
                     'and a warning is printed.')
flags.DEFINE_float('temperature', 0.8, 'Sampling temperature; 0 = greedy.')
flags.DEFINE_integer('top_k', 0, 'Sample only from the k most likely tokens (0 = off).')
flags.DEFINE_float('top_p', 1.0, 'Nucleus sampling: the smallest set of tokens with this total '
                   'probability (1 = off).')
flags.DEFINE_multi_string('stop', [], 'Stop string: the completion is cut before it (repeatable). '
                          'Generation always stops at <|eos|> and <|end|>.')
flags.DEFINE_integer('seed', 0, 'PRNG seed (same seed, same samples).')
flags.DEFINE_integer('step', None, 'Checkpoint step to load (default: the latest).')
flags.DEFINE_bool('chat', False, 'Wrap each prompt as a user chat message and generate the '
                  "assistant's reply (the chat template of lmresearch.text.tokenizers.render_chat).")
flags.DEFINE_integer('best_of', 1, 'Sample N completions per prompt and print the one the '
                     '--reward_from reward model scores highest (best-of-n), with every score.')
flags.DEFINE_string('reward_from', None, 'best_of: the reward model run that picks.')
FLAGS = flags.FLAGS


def sample(workdir: str, prompts, *, max_new_tokens: int, temperature: float, top_k: int = 0,
           top_p: float = 1.0, stop_strings=(), seed: int = 0, step=None, chat: bool = False,
           best_of: int = 1, reward_from: str | None = None):
  """(completions, scores) of `prompts` from the run in `workdir`: with best_of > 1 each completion
  is the best of that many samples by the reward model in `reward_from`, and scores [prompts,
  best_of] holds every sample's reward; otherwise scores is None."""
  import jax

  from lmresearch.stages import runs
  from lmresearch.generation import batched
  from lmresearch.text import tokenizers
  from lmresearch.generation.stops import compile_stops

  run = runs.load(workdir, step=step, chat=chat)
  tok, model, params = run.tok, run.model, run.params
  print(f'{workdir}: checkpoint step {run.step}', file=sys.stderr)
  if chat:
    ids = [tokenizers.generation_prompt(tok, p) for p in prompts]
  else:
    ids = [batched.encode_prompt(tok, p) for p in prompts]
  if best_of > 1 and not reward_from:
    raise ValueError('--best_of needs --reward_from (the reward model run that picks).')
  ids = [x for x in ids for _ in range(best_of)]
  with run.active():
    out = batched.generate(model, params, ids, max_new_tokens=max_new_tokens,
                            rng=jax.random.PRNGKey(seed), temperature=temperature, top_k=top_k,
                            top_p=top_p, stop_ids=tok.stop_ids, pad_id=tok.pad_id,
                            stop_table=compile_stops(tok, stop_strings, model.cfg.vocab_size))
  texts = batched.decode_completions(tok, out['completions'], stop_strings)
  if best_of == 1:
    return texts, None
  from lmresearch.evals.best_of_n import score_samples
  rm = runs.load(reward_from, reward=True, mesh=run.mesh, rules=run.rules)
  scores = score_samples(rm, prompts, texts, best_of)
  return [texts[i * best_of + int(s.argmax())] for i, s in enumerate(scores)], scores


def main(argv):
  check_args(argv, FLAGS.workdir, 'to sample from', ' (pass prompts with --prompt)')
  if not FLAGS.prompt:
    fail('give at least one --prompt.')
  setup_jax()
  warnings.simplefilter('default')
  warnings.formatwarning = lambda msg, cat, *a, **k: f'warning: {msg}\n'
  with cli_errors(ValueError):
    texts, scores = sample(FLAGS.workdir, FLAGS.prompt, max_new_tokens=FLAGS.max_new_tokens,
                   temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p,
                   stop_strings=FLAGS.stop, seed=FLAGS.seed, step=FLAGS.step, chat=FLAGS.chat,
                   best_of=FLAGS.best_of, reward_from=FLAGS.reward_from)
  if not fileio.is_primary():   # every process samples its share; process 0 prints all
    return
  for i, (prompt, text) in enumerate(zip(FLAGS.prompt, texts), 1):
    what = (f'best of {FLAGS.best_of}, reward {scores[i - 1].max():+.3f} (all: '
            + ' '.join(f'{x:+.2f}' for x in sorted(scores[i - 1], reverse=True)) + ')'
            if scores is not None else 'completion')
    print(f'=== [{i}] prompt ===\n{prompt}\n=== [{i}] {what} ===\n{text}', flush=True)


if __name__ == '__main__':
  app.run(main)

"""What the pipeline measures after training: one result per (model, measurement), cached in
<workdir>/eval/ (a JSON summary and the per-example JSONL records) so a rerun only fills gaps.

  stages    held-out loss (nats/token on held-out world documents), answer accuracy (word
            problems + facts, zero-shot), mean normalized reward of those answers, win rate vs
            the previous stage (reward-model judge, ties 1/2), KL to SFT (sampled, per response)
  prompting base and SFT models x direct / instruction / few-shot / CoT / self-consistency@n
  examples  the same prompts answered by each model (the base model gets the bare question)
"""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from lmresearch.core import fileio, parallel
from lmresearch.generation import batched
from lmresearch.data import world_labeler
from lmresearch.text.answers import matches, predict
from lmresearch.evals import best_of_n, claims, prompting, scoring, tasks
from lmresearch.models.logprobs import token_logprobs
from lmresearch.models.transformer import param_counts

PREVIOUS = {'sft': 'base', 'rlhf': 'sft', 'dpo': 'sft', 'grpo': 'sft'}


class Cache:
  """Each measurement once per run directory: kept in memory, and on disk (by process 0) so a
  rerun skips it. Memory first: another process's file may not have landed yet when a key is
  asked for again, and a process that recomputed it alone would leave the others' collectives."""
  def __init__(self, workdir):
    self.dir = fileio.join(workdir, 'eval')
    self.memory = {}
    fileio.makedirs(self.dir)

  def get(self, key, fn, spec=None):
    """`spec`: what the measurement depends on besides the models (e.g. how many questions); a
    cached result measured under another spec is measured again, never reused."""
    spec = json.loads(json.dumps(spec, default=str)) if spec is not None else None
    if key in self.memory and self.memory[key].get('spec') == spec:
      return self.memory[key]
    path = fileio.join(self.dir, key + '.json')
    if fileio.exists(path):
      cached = fileio.read_json(path)
      if cached.get('spec') == spec:
        self.memory[key] = cached
        return cached
    summary, records = fn()
    fileio.write_text(fileio.join(self.dir, key + '.jsonl'),
                      ''.join(json.dumps(r, default=str) + '\n' for r in records))
    out = {'summary': summary, 'records': records, 'spec': spec}
    fileio.write_json(path, out, default=str)
    self.memory[key] = json.loads(json.dumps(out, default=str))   # what the file gives back
    return out


def samples_vs_reference(run, ref, questions, max_new_tokens: int, seed: int = 0):
  """Responses sampled at temperature 1 (the distribution RL optimizes), each with its KL to the
  reference, log pi(y) - log ref(y); the summary holds the mean, E_{y ~ pi}[...]."""
  prompts = [prompting.build_prompt(run.tok, q, 'direct', chat=True) for q in questions]
  with run.active():
    out = batched.generate(run.model, run.params, prompts, max_new_tokens=max_new_tokens,
                            rng=jax.random.PRNGKey(seed), temperature=1.0,
                            stop_ids=run.tok.stop_ids, pad_id=run.tok.pad_id)
    ref_lp = jax.jit(lambda p, t, m: token_logprobs(ref.model, p, t, m))(ref.params, out['tokens'], out['mask'])
    p_len = out['prompt_len']
    gen_ref = ref_lp[:, p_len - 1:]
    kl, finished = parallel.fetch(
        (jnp.sum((out['logprobs'] - gen_ref) * out['completion_mask'], axis=1), out['finished']))
  kl, finished = np.asarray(kl), np.asarray(finished).tolist()
  texts = batched.decode_completions(run.tok, out['completions'])
  records = [{'question': q, 'output': t, 'kl': float(k), 'finished': f}
             for q, t, k, f in zip(questions, texts, kl, finished)]
  return {'kl': float(np.mean(kl)), 'num_samples': len(prompts)}, records


MODELS = (('pretrain', 'base'), ('sft', 'sft'), ('ppo', 'rlhf'), ('dpo', 'dpo'), ('grpo', 'grpo'))


def evaluate(config, workdir: str, stages) -> dict:
  ec = config.eval
  cache = Cache(workdir)
  wanted = [m for m in ec.get('models', '').split(',') if m]
  runs = {model: tasks.load(fileio.join(workdir, stage)) for stage, model in MODELS
          if stage in stages and (not wanted or model in wanted or model == 'sft')}
  judge = tasks.load(fileio.join(workdir, 'reward'), reward=True) if 'reward' in stages else None
  world_seed = config.stages.pretrain.data.synthetic.world_seed
  arith = tasks.load_task('world_arithmetic', world_seed=world_seed, limit=3 * ec.per_step)
  facts = tasks.load_task('world_facts', world_seed=world_seed, limit=ec.facts)
  # Prompting methods on a prefix of the word problems (1, 2, 3 steps in turn, so any prefix is
  # balanced): self-consistency samples many paths per question.
  prompt_arith = dataclasses.replace(
      arith, examples=arith.examples[:3 * ec.get('prompting_per_step', ec.per_step)])
  heldout = tasks.load_task('perplexity', world_seed=world_seed, limit=200)
  kw = dict(seed=config.seed, batch_size=ec.batch_size, max_new_tokens=96)

  greedy = {model: _greedy_answers(model, run, judge, arith, facts, heldout, ec, kw, cache)
            for model, run in runs.items()}
  stages_out = {model: g['row'] for model, g in greedy.items()}
  _greedy_win_rates(stages_out, greedy)
  sampled = _sampled_answers(runs, judge, arith, facts, ec, config.seed, cache)
  for model, result in sampled.items():
    stages_out[model].update(result['row'])
  sampled_outcomes = _sampled_win_rates(stages_out, sampled)
  methods = (['direct', 'instruction', 'few_shot', 'cot'] + [f'self_consistency@{n}' for n in ec.sc_samples]
             if ec.get('prompting', True) else [])
  by_steps, prompting_correct = _prompting(runs, prompt_arith, methods, ec, kw, cache)

  rm = None
  if judge is not None and ec.rm_rankings:
    rankings = tasks.load_task('reward_accuracy', world_seed=world_seed, limit=ec.rm_rankings)
    rm = cache.get('reward__heldout_accuracy',
                   lambda: tasks.run_task(rankings, judge, batch_size=ec.batch_size),
                   {'rankings': len(rankings.examples)})['summary']
  bon = None
  if ec.get('best_of', 0) and judge is not None and 'sft' in runs:   # SFT's samples, picked by the RM
    questions = tasks.Task('best_of_n', (arith.examples + facts.examples)[:ec.sample_prompts])
    bon = cache.get(f'sft__best_of_{ec.best_of}', lambda: best_of_n.best_of_n(
        questions, runs['sft'], judge, n=ec.best_of, seed=config.seed, batch_size=ec.batch_size,
        max_new_tokens=96), {'questions': len(questions.examples)})['summary']['by_n']
  examples = side_by_side(runs, arith, facts, ec.compare_prompts, cache)
  answer_correct = {model: [bool(r['correct']) for r in g['records']] for model, g in greedy.items()}
  sc = f'self_consistency@{max(ec.sc_samples)}' if ec.sc_samples else None
  found = claims.evaluate(answer_correct, {model: g['fact_correct'] for model, g in greedy.items()},
                          {model: r['quality'] for model, r in sampled.items()}, sampled_outcomes,
                          {model: g['degenerate'] for model, g in greedy.items() if 'degenerate' in g},
                          prompting_correct, sc)
  return {'stages': stages_out, 'prompting_by_steps': by_steps, 'prompting_methods': methods,
          'examples': examples, 'stage_notes': STAGE_NOTES, 'claims': found,
          'claim_values': claims.values(found),
          'reward_model_accuracy': rm and rm['accuracy'], 'reward_model': rm, 'best_of_n': bon}


def _greedy_answers(model, run, judge, arith, facts, heldout, ec, kw, cache) -> dict:
  """One model's zero-shot greedy answers (word problems, then facts), held-out loss, and the
  reward model's scores of those answers -> its stage row and what the claims read."""
  arithmetic = cache.get(f'{model}__arithmetic_direct', lambda: tasks.run_task(
      arith, run, method='direct', **kw), {'questions': len(arith.examples)})
  fact = cache.get(f'{model}__facts_direct', lambda: tasks.run_task(
      facts, run, method='direct', **kw), {'questions': len(facts.examples)})
  loss = cache.get(f'{model}__heldout_loss', lambda: tasks.run_task(heldout, run, batch_size=ec.batch_size))
  records = arithmetic['records'] + fact['records']
  out = {'records': records, 'fact_correct': [bool(r['correct']) for r in fact['records']]}
  row = {'heldout_loss': loss['summary']['loss'], 'labeler_quality': _quality(records, run.chat),
         'answer_accuracy': float(np.mean([bool(r['correct']) for r in records])),
         'arithmetic_accuracy': arithmetic['summary']['accuracy'],
         'fact_accuracy': fact['summary']['accuracy'], **param_counts(run.params)}
  if run.chat:   # a base model's answers are document continuations cut at a stop string
    out['degenerate'] = [_degenerate(r) for r in records]
    row.update(degenerate_share=float(np.mean(out['degenerate'])), degenerate_kinds=_kinds(records))
  if judge is not None:
    scores = cache.get(f'{model}__rewards', lambda: ({}, tasks.reward_scores(
        judge, [r['question'] for r in records], [r['output'] for r in records], ec.batch_size).tolist()),
        {'answers': len(records)})
    out['rewards'] = np.asarray(scores['records'])
    row['reward_mean'] = float(np.mean(scores['records']))
    row['reward_by_outcome'] = _reward_by_outcome(records, scores['records'], run.chat)
  out['row'] = row
  return out


def _greedy_win_rates(stages_out, greedy) -> None:
  """Win rate vs the previous stage on the same questions: by the exact answer (only correctness
  counts) and by the reward model."""
  for model, prev in PREVIOUS.items():
    if model not in greedy or prev not in greedy:
      continue
    ours, theirs = greedy[model], greedy[prev]
    stages_out[model]['exact_win_rate_vs_previous'] = float(np.mean(scoring.exact_outcomes(
        [r['correct'] for r in ours['records']], [r['correct'] for r in theirs['records']])))
    if 'rewards' in ours and 'rewards' in theirs:
      stages_out[model]['win_rate_vs_previous'] = float(np.mean(scoring.win_outcomes(
          [r['output'] for r in ours['records']], ours['rewards'],
          [r['output'] for r in theirs['records']], theirs['rewards'])))


def _per_question(values, k: int) -> list[float]:
  """k consecutive samples per question -> each question's mean (what paired claims compare)."""
  v = np.asarray(values, np.float64)
  return v.reshape(-1, k).mean(axis=1).tolist()


def _sampled_answers(runs, judge, arith, facts, ec, seed, cache) -> dict:
  """Each chat model's answers sampled at temperature 1 (with their KL to SFT): accuracy, padding,
  labeler quality, degenerate share and (with a reward model) their rewards. Each question is
  answered eval.samples_per_prompt times (the same random streams for every model, so their
  differences are paired sample by sample); claims compare the per-question means."""
  if 'sft' not in runs:
    return {}
  k = ec.get('samples_per_prompt', 1)
  examples = [ex for ex in (arith.examples + facts.examples)[:ec.sample_prompts] for _ in range(k)]
  questions = [ex['question'] for ex in examples]
  spec = {'questions': len(questions) // k, 'samples_per_prompt': k}
  out = {}
  for model in ('sft', 'rlhf', 'dpo', 'grpo'):
    if model not in runs:
      continue
    samples = cache.get(f'{model}__samples', lambda: samples_vs_reference(
        runs[model], runs['sft'], questions, 96, seed), spec)
    outputs = [x['output'] for x in samples['records']]
    scored = [{**ex, 'output': x['output'], 'finished': x.get('finished', True),
               'correct': matches(predict(x['output'], ex['target']), ex['target'])}
              for ex, x in zip(examples, samples['records'])]
    quality = _qualities(scored)
    row = {'kl_to_sft': samples['summary']['kl'],
           'sampled_accuracy': float(np.mean([bool(r['correct']) for r in scored])),
           'sampled_padded_share': float(np.mean([world_labeler.padded(r['output']) for r in scored])),
           'sampled_labeler_quality': float(np.mean(quality)),
           'sampled_degenerate_share': float(np.mean([_degenerate(r) for r in scored])),
           'sampled_degenerate_kinds': _kinds(scored)}
    out[model] = {'row': row, 'quality': _per_question(quality, k), 'k': k}
    if judge is not None:   # what PPO maximizes: the reward of samples, not of greedy answers
      rewards = cache.get(f'{model}__samples_rewards', lambda: ({}, tasks.reward_scores(
          judge, questions, outputs, ec.batch_size).tolist()), spec)
      row['sampled_reward_mean'] = float(np.mean(rewards['records']))
      out[model]['judged'] = (outputs, rewards['records'])
  return out


def _sampled_win_rates(stages_out, sampled) -> dict:
  """The reward model judging pairs of samples vs the previous stage (the i-th sample of a
  question against the other model's i-th): what RL changed in the policy; per question, the
  mean over its samples."""
  outcomes = {}
  for model, prev in PREVIOUS.items():
    if 'judged' in sampled.get(model, {}) and 'judged' in sampled.get(prev, {}):
      each = scoring.win_outcomes(*sampled[model]['judged'], *sampled[prev]['judged'])
      outcomes[model] = _per_question(each, sampled[model]['k'])
      stages_out[model]['sampled_win_rate_vs_previous'] = float(np.mean(each))
  return outcomes


def _prompting(runs, arith, methods, ec, kw, cache):
  """Base and SFT models x prompting methods on the word problems -> (accuracy by step count,
  per-question correctness). Self-consistency samples the most paths once; fewer paths are the
  vote of its first n."""
  by_steps, correct = {}, {}
  for model in ('base', 'sft'):
    if model not in runs or not methods:
      continue
    by_steps[model], correct[model] = {}, {}
    most = max(ec.sc_samples, default=1)
    spec = {'questions': len(arith.examples), 'shots': ec.shots, 'temperature': ec.sc_temperature}
    run_method = lambda method: cache.get(f'{model}__prompting_{method}', lambda: tasks.run_task(
        arith, runs[model], method=method, shots=ec.shots, temperature=ec.sc_temperature, **kw),
        spec)
    for method in sorted(methods, key=lambda m: -prompting.parse_method(m)[1]):   # most paths first
      paths = prompting.parse_method(method)[1]
      sc = method.startswith('self_consistency')
      if sc and paths < most:   # @1 too: one sampled path, not the greedy one
        full = run_method(f'self_consistency@{most}')
        result = cache.get(f'{model}__prompting_{method}',
                           lambda: tasks.fewer_paths(full['summary'], full['records'], paths), spec)
      else:
        result = run_method(method)
      summary = result['summary']
      by_steps[model][method] = {'all': summary['accuracy'], **summary.get('accuracy_by_num_steps', {})}
      correct[model][method if sc else prompting.parse_method(method)[0]] = [
          bool(x['correct']) for x in result['records']]
  return by_steps, correct


def _qualities(records, chat: bool = True) -> list[float]:
  """Each answer's quality on the world labeler's own scale (4 = correct and concise, 0 =
  degenerate). A base model's continuation is judged as text only: whether it hit a stop token
  says nothing for a document completer."""
  return [world_labeler.labeler_quality(r['output'], bool(r['correct']), 'num_steps' in r, r['question'],
                                r.get('finished', True) or not chat) for r in records]


def _quality(records, chat: bool = True) -> float:
  return float(np.mean(_qualities(records, chat)))


def _degenerate(record) -> bool:
  return world_labeler.mechanically_degenerate(record['output'], record.get('finished', True))


def _kinds(records) -> dict:
  """How many answers are of each degenerate kind (the gold labeler's test, see data/world_labeler.py)."""
  kinds = [world_labeler.degenerate_kind(r['output'], r['question'], r.get('finished', True)) for r in records]
  return {k: kinds.count(k) for k in sorted(set(kinds) - {None})}


def _reward_by_outcome(records, rewards, chat: bool) -> dict:
  """The reward model's mean reward of this model's correct, wrong and degenerate answers."""
  groups = {}
  for r, x in zip(records, rewards):
    bad = chat and _degenerate(r)
    groups.setdefault('degenerate' if bad else 'correct' if r['correct'] else 'wrong', []).append(x)
  return {k: {'reward_mean': float(np.mean(v)), 'count': len(v)} for k, v in sorted(groups.items())}


def side_by_side(runs, arith, facts, n: int, cache) -> list[dict]:
  questions = [ex['question'] for pair in zip(facts.examples, arith.examples) for ex in pair][:n]

  def answer(m):
    run = runs[m]
    # The base model gets the bare question, as a document to continue; the others a chat turn.
    prompts = [prompting.build_prompt(run.tok, q, 'direct', chat=True) if run.chat
               else batched.encode_prompt(run.tok, q) for q in questions]
    texts, _ = tasks.generate(run, prompts, batch_size=len(prompts), max_new_tokens=48)
    return {}, [t[0] for t in texts]

  outs = {m: cache.get(f'{m}__side_by_side', lambda: answer(m), {'prompts': len(questions)})['records']
          for m in runs}
  return [{'prompt': q, 'answers': {m: outs[m][i] for m in runs}} for i, q in enumerate(questions)]


STAGE_NOTES = ('held-out loss: nats per token on held-out world documents (the base model\'s '
               'objective; chat models drift from it). answer accuracy: zero-shot word problems and '
               'fact questions (base: "Question: ...\\nAnswer:" documents; others: one chat turn). '
               'reward: the reward model\'s score of those (greedy) answers minus its SFT-sample mean. '
               'sampled reward: the same for responses sampled at temperature 1, the distribution '
               'RL optimizes; sampled accuracy and padded share are those samples\' share of right '
               'answers and of answers padded with filler. win rate: the reward model judges each '
               'pair of answers (ties 1/2; sampled: pairs of those samples); exact: '
               'only the answer\'s correctness counts. labeler quality: the world\'s own noise-free '
               'labeler scores each answer on the rankings\' scale (4 correct and concise, 3.5 correct '
               'without steps, 3 padded, 2 rude, 1 wrong, 0 degenerate): the gold preference the '
               'reward model approximates. degenerate share: answers that are empty, never end '
               'or hold non-printable characters (sampled: the same for the samples). KL to SFT: '
               'mean over the samples of sum_t log pi - log pi_sft.')

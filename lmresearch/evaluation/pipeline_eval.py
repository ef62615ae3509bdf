"""What the pipeline measures after training: one result per (model, measurement), cached in
<workdir>/eval/ (a JSON summary and the per-example JSONL records) so a rerun only fills gaps.

  stages    held-out loss (nats/token on held-out world documents), answer accuracy (word
            problems + facts, zero-shot), mean normalized reward of those answers, win rate vs
            the previous stage (reward-model judge, ties 1/2), KL to SFT (sampled, per response)
  prompting base and SFT models x direct / instruction / few-shot / CoT / self-consistency@n
  examples  the same prompts answered by each model (the base model gets the bare question)
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from lmresearch import fileio, sampling
from lmresearch.data import world
from lmresearch.evaluation import claims, prompting, tasks
from lmresearch.answers import matches, predict
from lmresearch.models.logprobs import token_logprobs

PREVIOUS = {'sft': 'base', 'rlhf': 'sft', 'dpo': 'sft', 'grpo': 'sft'}


class Cache:
  def __init__(self, workdir):
    self.dir = os.path.join(workdir, 'eval')
    os.makedirs(self.dir, exist_ok=True)

  def get(self, key, fn):
    path = os.path.join(self.dir, key + '.json')
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
    summary, records = fn()
    with open(os.path.join(self.dir, key + '.jsonl'), 'w') as f:
      for r in records:
        f.write(json.dumps(r, default=str) + '\n')
    out = {'summary': summary, 'records': records}
    fileio.write_json(path, out, default=str)
    return out


def samples_vs_reference(run, ref, questions, max_new_tokens: int, seed: int = 0):
  """Responses sampled at temperature 1 (the distribution RL optimizes), each with its KL to the
  reference, log pi(y) - log ref(y); the summary holds the mean, E_{y ~ pi}[...]."""
  prompts = [prompting.build_prompt(run.tok, q, 'direct', chat=True) for q in questions]
  with run.active():
    out = sampling.generate(run.model, run.params, prompts, max_new_tokens=max_new_tokens,
                            rng=jax.random.PRNGKey(seed), temperature=1.0)
    ref_lp = jax.jit(lambda p, t, m: token_logprobs(ref.model, p, t, m))(ref.params, out['tokens'], out['mask'])
    p_len = out['prompt_len']
    gen_ref = ref_lp[:, p_len - 1:]
    kl = np.asarray(jnp.sum((out['logprobs'] - gen_ref) * out['completion_mask'], axis=1))
  texts = sampling.decode_completions(run.tok, out['completions'])
  finished = np.asarray(out['finished']).tolist()
  records = [{'question': q, 'output': t, 'kl': float(k), 'finished': f}
             for q, t, k, f in zip(questions, texts, kl, finished)]
  return {'kl': float(np.mean(kl)), 'num_samples': len(prompts)}, records


def evaluate(config, workdir: str, stages) -> dict:
  ec = config.eval
  cache = Cache(workdir)
  models = [(m, s) for s, m in (('pretrain', 'base'), ('sft', 'sft'), ('ppo', 'rlhf'), ('dpo', 'dpo'),
                                ('grpo', 'grpo')) if s in stages]
  runs = {m: tasks.load(os.path.join(workdir, s)) for m, s in models}
  judge = tasks.load(os.path.join(workdir, 'reward'), reward=True) if 'reward' in stages else None
  seed = config.seed
  world_seed = config.stages.pretrain.data.synthetic.world_seed
  arith = tasks.load_task('world_arithmetic', world_seed=world_seed, limit=3 * ec.per_step)
  facts = tasks.load_task('world_facts', world_seed=world_seed, limit=ec.facts)
  heldout = tasks.load_task('perplexity', world_seed=world_seed, limit=200)
  kw = dict(seed=seed, batch_size=ec.batch_size, max_new_tokens=96)

  stages_out, answers, records = {}, {}, {}
  fact_correct, degenerate, sampled_quality, sampled_outcomes = {}, {}, {}, {}
  for m, run in runs.items():
    a = cache.get(f'{m}__arithmetic_direct', lambda: tasks.run_task(arith, run, method='direct', **kw))
    f = cache.get(f'{m}__facts_direct', lambda: tasks.run_task(facts, run, method='direct', **kw))
    ppl = cache.get(f'{m}__heldout_loss', lambda: tasks.run_task(heldout, run, batch_size=ec.batch_size))
    recs = records[m] = a['records'] + f['records']
    fact_correct[m] = [bool(r['correct']) for r in f['records']]
    row = {'heldout_loss': ppl['summary']['loss'], 'labeler_quality': _quality(recs, run.chat),
           'answer_accuracy': float(np.mean([bool(r['correct']) for r in recs])),
           'arithmetic_accuracy': a['summary']['accuracy'], 'fact_accuracy': f['summary']['accuracy']}
    if run.chat:   # a base model's answers are document continuations cut at a stop string
      degenerate[m] = [_degenerate(r) for r in recs]
      row.update(degenerate_share=float(np.mean(degenerate[m])), degenerate_kinds=_kinds(recs))
    if judge is not None:
      scores = cache.get(f'{m}__rewards', lambda: ({}, tasks.reward_scores(
          judge, [r['question'] for r in recs], [r['output'] for r in recs], ec.batch_size).tolist()))
      answers[m] = (recs, np.asarray(scores['records']))
      row['reward_mean'] = float(np.mean(scores['records']))
      row['reward_by_outcome'] = _reward_by_outcome(recs, scores['records'], run.chat)
    stages_out[m] = row

  for m, prev in PREVIOUS.items():   # win rate vs the previous stage, on the same questions
    if m in records and prev in records:   # the exact-answer judge: only correctness counts
      stages_out[m]['exact_win_rate_vs_previous'] = float(np.mean(
          [0.5 if x['correct'] == y['correct'] else float(bool(x['correct']))
           for x, y in zip(records[m], records[prev])]))
    if m in answers and prev in answers:
      (ra, sa), (rb, sb) = answers[m], answers[prev]
      stages_out[m]['win_rate_vs_previous'] = float(np.mean(_win_outcomes(
          [x['output'] for x in ra], sa, [y['output'] for y in rb], sb)))
  sampled = {}   # the reward model's scores of each model's samples, question by question
  if 'sft' in runs:
    examples = (arith.examples + facts.examples)[:ec.sample_prompts]
    questions = [ex['question'] for ex in examples]
    for m in ('sft', 'rlhf', 'dpo', 'grpo'):
      if m in runs:
        k = cache.get(f'{m}__samples', lambda: samples_vs_reference(runs[m], runs['sft'], questions, 96, seed))
        stages_out[m]['kl_to_sft'] = k['summary']['kl']
        scored = [{**ex, 'output': x['output'], 'finished': x.get('finished', True),
                   'correct': matches(predict(x['output'], ex['target']), ex['target'])}
                  for ex, x in zip(examples, k['records'])]
        sampled_quality[m] = _qualities(scored)
        stages_out[m].update(
            sampled_accuracy=float(np.mean([bool(r['correct']) for r in scored])),
            sampled_padded_share=float(np.mean([world.padded(r['output']) for r in scored])),
            sampled_labeler_quality=float(np.mean(sampled_quality[m])),
            sampled_degenerate_share=float(np.mean([_degenerate(r) for r in scored])),
            sampled_degenerate_kinds=_kinds(scored))
        if judge is not None:   # what PPO maximizes: the reward of samples, not of greedy answers
          r = cache.get(f'{m}__samples_rewards', lambda: ({}, tasks.reward_scores(
              judge, questions, [x['output'] for x in k['records']], ec.batch_size).tolist()))
          stages_out[m]['sampled_reward_mean'] = float(np.mean(r['records']))
          sampled[m] = ([x['output'] for x in k['records']], r['records'])
  for m, prev in PREVIOUS.items():   # the same judge on samples: what RL changed in the policy
    if m in sampled and prev in sampled:
      sampled_outcomes[m] = _win_outcomes(*sampled[m], *sampled[prev])
      stages_out[m]['sampled_win_rate_vs_previous'] = float(np.mean(sampled_outcomes[m]))

  methods = ['direct', 'instruction', 'few_shot', 'cot'] + [f'self_consistency@{n}' for n in ec.sc_samples]
  by_steps, prompting_correct = {}, {}
  for m in ('base', 'sft'):
    if m not in runs:
      continue
    by_steps[m], prompting_correct[m] = {}, {}
    # Self-consistency samples the most paths once (first in this order); fewer paths are the
    # vote of its first n.
    most = max(ec.sc_samples)
    for method in sorted(methods, key=lambda x: -prompting.parse_method(x)[1]):
      n = prompting.parse_method(method)[1]
      if 1 < n < most:
        full = cache.get(f'{m}__prompting_self_consistency@{most}', None)
        fn = lambda: tasks.fewer_paths(full['summary'], full['records'], n)
      else:
        fn = lambda: tasks.run_task(arith, runs[m], method=method, shots=ec.shots,
                                    temperature=ec.sc_temperature, **kw)
      r = cache.get(f'{m}__prompting_{method}', fn)
      s = r['summary']
      by_steps[m][method] = {'all': s['accuracy'], **s.get('accuracy_by_num_steps', {})}
      prompting_correct[m][prompting.parse_method(method)[0] if n == 1 else method] = [
          bool(x['correct']) for x in r['records']]

  rm = None
  if judge is not None:
    rankings = tasks.load_task('reward_accuracy', world_seed=world_seed, limit=ec.rm_rankings)
    rm = cache.get('reward__heldout_accuracy',
                   lambda: tasks.run_task(rankings, judge, batch_size=ec.batch_size))['summary']
  examples = side_by_side(runs, arith, facts, ec.compare_prompts, cache)
  answer_correct = {m: [bool(r['correct']) for r in recs] for m, recs in records.items()}
  sc = f'self_consistency@{max(ec.sc_samples)}' if ec.sc_samples else None
  found = claims.evaluate(answer_correct, fact_correct, sampled_quality, sampled_outcomes,
                          degenerate, prompting_correct, sc)
  return {'stages': stages_out, 'prompting_by_steps': by_steps, 'prompting_methods': methods,
          'examples': examples, 'stage_notes': STAGE_NOTES, 'claims': found,
          'reward_model_accuracy': rm and rm['accuracy'], 'reward_model': rm}


def _win_outcomes(outputs_a, scores_a, outputs_b, scores_b) -> list[float]:
  """Per question: 1 if the judge scores A's answer above B's, 1/2 for the same answer or score."""
  return [0.5 if x == y or np.isclose(p, q) else float(p > q)
          for x, p, y, q in zip(outputs_a, scores_a, outputs_b, scores_b)]


def _qualities(records, chat: bool = True) -> list[float]:
  """Each answer's quality on the world labeler's own scale (4 = correct and concise, 0 =
  degenerate). A base model's continuation is judged as text only: whether it hit a stop token
  says nothing for a document completer."""
  return [world.labeler_quality(r['output'], bool(r['correct']), 'num_steps' in r, r['question'],
                                r.get('finished', True) or not chat) for r in records]


def _quality(records, chat: bool = True) -> float:
  return float(np.mean(_qualities(records, chat)))


def _degenerate(record) -> bool:
  return world.mechanically_degenerate(record['output'], record.get('finished', True))


def _kinds(records) -> dict:
  """How many answers are of each degenerate kind (the gold labeler's test, see world.py)."""
  kinds = [world.degenerate_kind(r['output'], r['question'], r.get('finished', True)) for r in records]
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
               else sampling.encode_prompt(run.tok, q) for q in questions]
    texts, _ = tasks.generate(run, prompts, batch_size=len(prompts), max_new_tokens=48)
    return {}, [t[0] for t in texts]

  outs = {m: cache.get(f'{m}__side_by_side', lambda: answer(m))['records'] for m in runs}
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

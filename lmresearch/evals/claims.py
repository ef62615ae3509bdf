"""The claims a pipeline run tests, each with its number, a 95% interval and a verdict.

The report opens with these: the classic story (a base model only completes documents, SFT makes it
answer, RLHF's answers are preferred by the reward model *and* by the gold labeler, keep SFT's
accuracy and are not degenerate, chain-of-thought beats direct answers, self-consistency beats
greedy CoT), each checked on this run's own per-example records. Differences are paired (the same
questions answered by both models or methods). The intervals and the verdict rule are
`evaluation.stats`'s, the same as every experiment's. `PIPELINE` declares them; the README's
tables render from it and a run's recorded values (`claim_values` in report.json).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from lmresearch.evals.stats import Interval, mean_ci, verdict, wilson

__all__ = ['PIPELINE', 'Claim', 'evaluate', 'judge', 'mean_ci', 'wilson']


class Claim(NamedTuple):
  id: str
  claim: str
  measure: str
  criterion: str


PIPELINE = (
    Claim('base_completes', 'The base model only completes documents',
          'base: share of fact questions answered', '< 0.5'),
    Claim('sft_answers', 'SFT makes it answer', 'answer accuracy, SFT − base', '> 0'),
    Claim('rlhf_rm_preferred', "RLHF's answers are preferred by the reward model",
          'RM win rate of RLHF samples vs SFT samples (ties 1/2)', '> 0.5'),
    Claim('rlhf_gold_preferred', "RLHF's answers are preferred by the gold labeler",
          'gold labeler quality of samples, RLHF − SFT', '> 0'),
    # Non-inferiority: the margin is the smallest loss the evaluation can resolve (docs/pipeline.md).
    Claim('rlhf_keeps_accuracy', "RLHF keeps SFT's greedy accuracy",
          'greedy answer accuracy, RLHF − SFT', '>= -0.05'),
    Claim('rlhf_not_degenerate', 'RLHF does not hack the reward model with degenerate answers',
          'share of RLHF greedy answers empty, unfinished or non-printable', '<= 0.01'),
    Claim('cot_beats_direct', 'Chain-of-thought beats direct answers',
          'base model accuracy, CoT − direct', '> 0'),
    Claim('sc_beats_cot', 'Self-consistency beats greedy chain-of-thought',
          'base model accuracy, self-consistency (vote of the most paths) − greedy CoT', '> 0'),
)
BY_ID = {c.id: c for c in PIPELINE}


def judge(claim_id: str, interval) -> dict:
  """A claim's row of the report: its number, interval, n, criterion and verdict."""
  c = BY_ID[claim_id]
  value, lo, hi, n = interval
  return {'id': c.id, 'claim': c.claim, 'measure': c.measure,
          'value': value, 'ci95': [lo, hi], 'n': n, 'criterion': c.criterion,
          'verdict': verdict(interval, c.criterion)}


def _diff(a, b):
  return [float(x) - float(y) for x, y in zip(a, b)]


def _share(xs) -> Interval:
  return wilson(sum(map(bool, xs)), len(xs))


def evaluate(answer_correct: dict, fact_correct: dict, sampled_quality: dict,
             sampled_rm_outcomes: dict, greedy_degenerate: dict, prompting_correct: dict,
             sc_method: Optional[str] = None) -> list[dict]:
  """Each argument maps a model name to its per-example list (same examples, same order, across
  models); prompting_correct maps model -> method -> list. Claims whose evidence is missing from
  this run (e.g. no RLHF stage) are left out."""
  found = {}
  if 'base' in fact_correct:
    found['base_completes'] = _share(fact_correct['base'])
  if 'base' in answer_correct and 'sft' in answer_correct:
    found['sft_answers'] = mean_ci(_diff(answer_correct['sft'], answer_correct['base']))
  if 'rlhf' in sampled_rm_outcomes:
    found['rlhf_rm_preferred'] = mean_ci(sampled_rm_outcomes['rlhf'])
  if 'rlhf' in sampled_quality and 'sft' in sampled_quality:
    found['rlhf_gold_preferred'] = mean_ci(_diff(sampled_quality['rlhf'], sampled_quality['sft']))
  if 'rlhf' in answer_correct and 'sft' in answer_correct:
    found['rlhf_keeps_accuracy'] = mean_ci(_diff(answer_correct['rlhf'], answer_correct['sft']))
  if 'rlhf' in greedy_degenerate:
    found['rlhf_not_degenerate'] = _share(greedy_degenerate['rlhf'])
  base = prompting_correct.get('base', {})
  if 'cot' in base and 'direct' in base:
    found['cot_beats_direct'] = mean_ci(_diff(base['cot'], base['direct']))
  if sc_method in base and 'cot' in base:
    found['sc_beats_cot'] = mean_ci(_diff(base[sc_method], base['cot']))
  return [judge(c.id, found[c.id]) for c in PIPELINE if c.id in found]


def values(found: list[dict]) -> dict:
  """id -> {value, lo, hi, n}: what report.json keeps so that a table renders the verdicts again."""
  return {c['id']: {'value': c['value'], 'lo': c['ci95'][0], 'hi': c['ci95'][1], 'n': c['n']}
          for c in found}

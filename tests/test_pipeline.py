"""The main job end to end on a tiny config: every stage, every report section, and resume."""
import json
import os

import pytest

from conftest import load_config
from lmresearch.pipeline import run_pipeline


@pytest.mark.slow
def test_smoke_pipeline_writes_a_report_with_every_section(smoke_pipeline):
  tmp_path, out = smoke_pipeline
  for stage in ('base', 'sft', 'rlhf', 'dpo', 'grpo'):
    assert stage in out['stages'], stage
  for key in ('answer_accuracy', 'reward_mean', 'win_rate_vs_previous', 'kl_to_sft',
              'sampled_win_rate_vs_previous', 'sampled_accuracy', 'sampled_padded_share',
              'degenerate_share', 'sampled_degenerate_share', 'reward_by_outcome'):
    assert key in out['stages']['rlhf'], key
  assert 0 <= out['stages']['rlhf']['degenerate_share'] <= 1
  assert 'degenerate_share' not in out['stages']['base']   # a document completer is not judged so
  # The reward model's held-out reward per kind of reply, the degenerate kinds included.
  by_kind = out['reward_model']['by_kind']
  assert {'concise', 'wrong', 'empty', 'cut_off', 'repeated', 'garbage', 'echo'} <= set(by_kind)
  claims = {c['claim']: c for c in out['claims']}
  assert len(claims) == 8
  for c in claims.values():
    assert c['verdict'] in ('holds', 'not significant', 'does not hold')
    assert c['ci95'][0] <= c['value'] <= c['ci95'][1]
  for model in ('base', 'sft'):
    assert set(out['prompting'][model]) >= {'direct', 'few_shot', 'cot', 'self_consistency@2',
                                            'self_consistency@3'}
    assert set(out['prompting_by_steps'][model]['cot']) >= {'all', '1', '2', '3'}
  assert out['wall_seconds'] > 0 and out['plots']
  md = open(tmp_path / 'report.md').read()
  for section in ('## Claims this run tests', '## Stages', '## The reward model, per kind',
                  '## Prompting', '## The same prompts', '## Curves'):
    assert section in md
  assert md.index('## Claims') < md.index('## Stages') and 'stages.png' in out['plots']
  html = open(tmp_path / 'report.html').read()
  assert 'data:image/png;base64' in html
  assert json.load(open(tmp_path / 'report.json'))['stages'] == out['stages']
  # A rerun redoes nothing: every stage is marked done and every evaluation is cached.
  mtimes = {p: os.path.getmtime(tmp_path / 'eval' / p) for p in os.listdir(tmp_path / 'eval')}
  again = run_pipeline(load_config('pipeline', 'size=smoke,all=1'), str(tmp_path))
  assert again['stages'] == out['stages']
  assert all(os.path.getmtime(tmp_path / 'eval' / p) == t for p, t in mtimes.items()
             if p != 'seconds.json')


@pytest.mark.slow
def test_a_pipeline_reuses_upstream_stages_and_trains_only_the_rest(smoke_pipeline, tmp_path):
  up = smoke_pipeline[0]
  c = load_config('pipeline', 'size=smoke')
  c.upstream, c.reuse = str(up), 'pretrain,sft,reward'
  c.eval.update(models='rlhf', prompting=False, rm_rankings=0, best_of=4)
  out = run_pipeline(c, str(tmp_path / 'down'))
  for name in ('pretrain', 'sft', 'reward'):
    assert os.path.islink(tmp_path / 'down' / name)
    assert os.path.realpath(tmp_path / 'down' / name) == os.path.realpath(up / name)
  assert not os.path.islink(tmp_path / 'down' / 'ppo')
  assert out['reused_stages'] == ['pretrain', 'sft', 'reward']   # their time is upstream's ...
  up_secs = {n: json.load(open(up / n / 'DONE.json'))['seconds'] for n in out['reused_stages']}
  assert {n: out['stage_seconds'][n] for n in up_secs} == up_secs
  assert out['wall_seconds'] < out['pipeline_seconds']   # ... counted by the pipeline's, not ours
  assert out['pipeline_seconds'] == pytest.approx(out['wall_seconds'] + sum(up_secs.values()))
  assert set(out['stages']) == {'sft', 'rlhf'} and out['prompting'] == {}
  assert list(out['best_of_n']) == ['1', '2', '4']
  c.upstream = str(tmp_path / 'nowhere')
  with pytest.raises(Exception, match='holds no finished pretrain stage'):
    run_pipeline(c, str(tmp_path / 'other'))


def test_a_stage_stopped_by_sigterm_is_not_marked_done_and_nothing_after_it_runs(tmp_path,
                                                                                 monkeypatch):
  from lmresearch import pipeline
  from lmresearch.stages import launch
  calls = []
  def stopped_early(config, workdir, devices=None):   # what the trainer returns after SIGTERM
    calls.append(config.stage)
    return {'step': config.train.steps - 1}
  monkeypatch.setattr(launch, 'run', stopped_early)
  c = load_config('pipeline', 'size=smoke')
  with pytest.raises(pipeline.StageInterrupted, match='pretrain stopped at step 3 of 4'):
    pipeline.run_stages(c, str(tmp_path))
  assert calls == ['pretrain'] and not os.path.exists(tmp_path / 'pretrain' / 'DONE.json')

"""LoRA in every post-training stage: step 0 is the base, only adapters train (and are saved),
merged equals unmerged, meshes agree, resume is exact, PPO's reference is the adapter-free base."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import stage_config
from lmresearch.stages import launch
from lmresearch.stages import runs
from lmresearch.models import lora
from lmresearch.models.transformer import ModelConfig, Transformer
from lmresearch.training.metrics import read_metrics

DEV = jax.devices()[:1]


def _lora(c, rank=4, targets='query,key,value,out,gate,up,down'):
  c.lora.update(rank=rank, alpha=8.0, targets=targets)
  return c


@pytest.mark.parametrize('style,tie,rows', [('llama', False, ()), ('llama', False, (3, 5, 60)),
                                            ('llama', True, (3, 5)), ('gpt2', False, (0, 7))])
def test_a_lora_model_at_step_0_is_its_base_and_merging_changes_nothing(style, tie, rows):
  base_cfg = ModelConfig(vocab_size=64, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64,
                         max_len=32, style=style, tie_embeddings=tie)
  lcfg = ModelConfig(**{**base_cfg.__dict__, 'lora_rank': 4, 'lora_alpha': 8.0,
                        'lora_targets': 'query,value,down', 'lora_tokens': rows})
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, 64)
  tokens = tokens.at[:, :4].set(jnp.asarray((rows + (1, 2, 3, 4))[:4]))   # the rows' tokens occur
  params = Transformer(lcfg).init(jax.random.PRNGKey(0), tokens)['params']
  params = jax.tree.map(lambda x: x.value if hasattr(x, 'value') else x, params,
                        is_leaf=lambda x: hasattr(x, 'value'))
  base = lora.base(params)
  ours = Transformer(lcfg).apply({'params': params}, tokens)
  np.testing.assert_array_equal(ours, Transformer(base_cfg).apply({'params': base}, tokens))
  # with trained (non-zero) B, the merged weights give the adapted model's logits
  # (and trained token rows, their rows of the embedding and head)
  trained = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.05 if str(p[-1]) == "['b']" else
      x + 0.3 * jax.random.normal(jax.random.PRNGKey(2), x.shape) if str(p[-1]) == "['rows']" else x,
      params)
  assert {p[0] for p in lora._flat(params) if 'rows' in p} == (
      set() if not rows else {'embed_lora'} if style == 'gpt2' or tie else {'embed_lora', 'head_lora'})
  adapted = Transformer(lcfg).apply({'params': trained}, tokens)
  merged = lora.fold(trained, 8.0 / 4, rows)
  np.testing.assert_allclose(Transformer(base_cfg).apply({'params': merged}, tokens), adapted,
                             atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(Transformer(base_cfg).apply({'params': lora.merged(trained, 2.0, rows)}, tokens),
                             adapted, atol=1e-5, rtol=1e-5)
  assert not np.allclose(adapted, ours)
  if rows:   # the chunked loss's unembedding sees the rows too
    from lmresearch.models.transformer import unembed
    hidden = Transformer(lcfg).apply({'params': trained}, tokens, return_hidden=True)
    np.testing.assert_allclose(unembed(lcfg, trained, hidden), adapted, atol=1e-5, rtol=1e-5)


def test_lora_sft_trains_and_saves_only_adapters(pipeline_dirs, tmp_path):
  from test_stages import _saved_params
  c = _lora(stage_config('sft', pipeline_dirs))
  launch.run(c, str(tmp_path / 'sft'), devices=DEV)
  saved = _saved_params(tmp_path / 'sft')
  leaves = lora._flat(saved)
  assert leaves and all(lora.is_adapter(p) for p in leaves)   # the base is not in the checkpoint
  rows = read_metrics(str(tmp_path / 'sft'))
  assert rows[0]['model/params_trained'] < 0.2 * rows[0]['model/params']
  # loading it folds the adapters into the base it trained on
  run, base = runs.load(str(tmp_path / 'sft')), runs.load(str(pipeline_dirs / 'base'))
  changed = [p for p, v in lora._flat(run.params).items()
             if not np.array_equal(v, lora._flat(base.params)[p])]
  assert changed and all(p[-1] == 'kernel' for p in changed)
  assert {p[-2] for p in changed} <= set(lora.TARGETS)


def test_lora_token_rows_train_only_their_rows_of_the_embedding_and_head(pipeline_dirs, tmp_path):
  from test_stages import _saved_params
  c = _lora(stage_config('sft', pipeline_dirs), targets='query,value')
  c.lora.tokens = '<|user|>,<|end|>'
  c.train.lr = 1e-2
  launch.run(c, str(tmp_path / 'sft'), devices=DEV)
  saved = lora._flat(_saved_params(tmp_path / 'sft'))
  assert {p[0] for p in saved if p[-1] == 'rows'} == {'embed_lora', 'head_lora'}
  run, base = runs.load(str(tmp_path / 'sft')), runs.load(str(pipeline_dirs / 'base'))
  ids = sorted({run.tok.special_id('<|user|>'), run.tok.end_id})
  for table, axis in ((('embed', 'embedding'), 0), (('head', 'kernel'), 1)):
    diff = np.abs(np.asarray(lora._flat(run.params)[table]) - np.asarray(lora._flat(base.params)[table]))
    changed = np.flatnonzero(diff.max(axis=1 - axis) > 0)
    assert changed.tolist() == ids, table   # those rows (head: columns) and no others


def test_lora_ppos_reference_is_the_adapter_free_base(pipeline_dirs, tmp_path):
  c = _lora(stage_config('ppo', pipeline_dirs))
  c.train.update(batch_size=4, eval_every=2)
  launch.run(c, str(tmp_path / 'ppo'), devices=DEV)
  rows = read_metrics(str(tmp_path / 'ppo'))
  first = next(r for r in rows if 'ppo/kl' in r)
  assert abs(first['ppo/kl']) < 1e-6          # step 0: the policy is its reference
  evals = [r for r in rows if 'eval/ppo/kl' in r]
  assert evals[0]['step'] == 0 and abs(evals[0]['eval/ppo/kl']) < 1e-6
  saved = lora._flat(__import__('test_stages')._saved_params(tmp_path / 'ppo'))
  assert all(lora.is_adapter(p) or 'score' in p for p in saved)


@pytest.mark.parametrize('stage', ['reward', 'dpo', 'grpo'])
def test_lora_runs_in_every_post_training_stage(pipeline_dirs, tmp_path, stage):
  c = _lora(stage_config(stage, pipeline_dirs))
  if stage == 'grpo':
    c.train.update(batch_size=2, eval_every=2)
  out = launch.run(c, str(tmp_path / stage), devices=DEV)
  assert np.isfinite(out['train/loss'])
  saved = lora._flat(__import__('test_stages')._saved_params(tmp_path / stage))
  assert saved and all(lora.is_adapter(p) or 'score' in p for p in saved)


def test_a_lora_stage_gives_the_same_losses_on_one_device_and_a_2x2x2_mesh(pipeline_dirs, tmp_path):
  from test_stage_mesh import _losses
  c = _lora(stage_config('sft', pipeline_dirs))
  c.train.lr = 1e-2
  launch.run(c, str(tmp_path / 'one'), devices=DEV)
  c8 = c.copy_and_resolve_references()
  c8.mesh.update(data=2, fsdp=2, tensor=2)
  launch.run(c8, str(tmp_path / 'eight'), devices=jax.devices()[:8])
  one, eight = _losses(tmp_path / 'one'), _losses(tmp_path / 'eight')
  assert sorted(one) == [1, 2] and one[2] != one[1]
  np.testing.assert_allclose([eight[s] for s in one], list(one.values()), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_kill_9_then_resume_a_lora_stage_is_exact(tmp_path, pipeline_dirs):
  from test_resume import kill_and_resume
  sft = ['--config.train.batch_size=8', '--config.train.log_every=1', '--config.train.eval_every=0',
         '--config.data.seq_len=96', '--config.data.synthetic.num_docs=100', '--config.mesh.data=1',
         f'--config.init_from={pipeline_dirs / "base"}', '--config.lora.rank=4',
         '--config.lora.targets=query,value,up', '--config.train.lr=0.01']
  kill_and_resume(tmp_path, 120, 5, config='sft', extra=sft)

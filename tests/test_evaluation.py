"""Evaluation: answer checking, the vote, exemplars and prompts, tasks end to end, the CLI."""
import dataclasses
import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, load_config, tiny
from lmresearch.text import tokenizers
from lmresearch.data import world
from lmresearch.evals import best_of_n, prompting, tasks
from lmresearch.text.answers import extract_answer, matches, predict
from lmresearch.models.transformer import ModelConfig, Transformer


def test_extract_answer_tricky_cases():
  assert extract_answer('so 1000 + 234.\n#### 1,234') == '1234'
  assert extract_answer('The answer is $5.') == '5'
  assert extract_answer('so the answer is -3') == '-3'
  assert extract_answer('The answer is 7. The answer is 8.') == '7'
  assert extract_answer('I do not know.') is None
  assert extract_answer('The answer is 2.50') == '2.5'
  assert extract_answer('The answer is 12345678901234567890.') == '12345678901234567890'
  assert extract_answer('3 + 4 = 7', fallback_last_number=True) == '7'


def test_predictions_for_numbers_and_facts():
  assert predict('5 + 3 = 8. The answer is 8.', '8') == '8' and matches('8', '8.0')
  first = predict('The zorf is Red. It eats plums.', 'red')
  assert first == 'the zorf is red' and matches(first, 'red')
  assert not matches(predict('It eats plums. The zorf is red.', 'red'), 'red')   # not the first
  assert not matches(predict('The zorf is reddish.', 'red'), 'red')              # a whole word
  assert not matches(None, '8')


def test_majority_vote_breaks_ties_by_first_appearance():
  assert prompting.majority_vote(['3', '5', '5', None, None, None]) == '5'
  assert prompting.majority_vote(['7', '2', '2', '7']) == '7'
  assert prompting.majority_vote(['2', '7', '7', '2']) == '2'
  assert prompting.majority_vote([None, '4']) == '4'
  assert prompting.majority_vote([None, None]) is None


def test_fewer_self_consistency_paths_vote_on_the_first_n():
  from lmresearch.evals import tasks
  recs = [{'question': 'q1', 'target': '5', 'num_steps': 1, 'finished': True,
           'samples': ['a', 'b', 'c', 'd', 'e'], 'votes': ['5', '3', '5', '3', '3']},
          {'question': 'q2', 'target': '4', 'num_steps': 2, 'finished': True,
           'samples': ['f', 'g', 'h', 'i', 'j'], 'votes': ['1', '4', '4', '1', '1']}]
  summary, out = tasks.fewer_paths({'method': 'self_consistency@5', 'accuracy': 0.0}, recs, 3)
  assert [r['prediction'] for r in out] == ['5', '4']            # @5 would vote 3 and 1
  assert [r['output'] for r in out] == ['a', 'g'] and len(out[0]['votes']) == 3
  assert summary['method'] == 'self_consistency@3' and summary['accuracy'] == 1.0
  assert summary['accuracy_by_num_steps'] == {'1': 1.0, '2': 1.0}


def test_parse_method():
  assert prompting.parse_method('few_shot') == ('few_shot', 1)
  assert prompting.parse_method('self_consistency@5') == ('cot', 5)
  for bad in ('self_consistency', 'self_consistency@0', 'zero_shot'):
    with pytest.raises(ValueError, match='prompting method'):
      prompting.parse_method(bad)


def test_exemplars_are_seeded_and_never_the_test_question():
  task = tasks.load_task('world_arithmetic', limit=6)
  question = task.pool[3].question
  pick = lambda seed: prompting.select_exemplars(task.pool, 4, seed, exclude=[question])
  assert pick(0) == pick(0) and pick(0) != pick(1)
  assert all(question not in {e.question for e in pick(s)} for s in range(50))
  exclude = {ex['question'] for ex in task.examples}
  assert all(e.question not in exclude
             for s in range(20) for e in prompting.select_exemplars(task.pool, 4, s, exclude))
  with pytest.raises(ValueError, match='lower --shots'):
    prompting.select_exemplars(task.pool[:2], 3, 0)


def test_cot_exemplars_are_the_published_eight():
  ex = prompting.GSM8K_COT_EXEMPLARS
  assert len(ex) == 8
  assert [extract_answer(e.solution) for e in ex] == ['6', '5', '39', '8', '9', '29', '33', '8']
  assert [e.short for e in ex][:2] == ['The answer is 6.', 'The answer is 5.']
  assert ex[0].question.startswith('There are 15 trees in the grove.')
  assert ex[7].question == ('Olivia has $23. She bought five bagels for $3 each. How much money '
                            'does she have left?')
  assert 'So there must have been 21 - 15 = 6.' in ex[0].solution
  # all 8, in the paper's order, whatever the seed
  assert prompting.select_exemplars(ex, 8, seed=123) == list(ex)


def test_prompts_for_base_and_chat_models():
  ex = prompting.GSM8K_COT_EXEMPLARS[:2]
  q = 'Tam has 2 figs. Tam finds 3 more. How many figs does Tam have now?'
  assert prompting.prompt_text(q, 'direct') == f'Question: {q}\nAnswer:'
  text = prompting.prompt_text(q, 'few_shot', ex)
  assert text == (f'Question: {ex[0].question}\nAnswer: The answer is 6.\n\n'
                  f'Question: {ex[1].question}\nAnswer: The answer is 5.\n\nQuestion: {q}\nAnswer:')
  assert prompting.prompt_text(q, 'cot', ex).count('21 - 15 = 6') == 1
  instructed = prompting.prompt_text(q, 'instruction')
  assert instructed == f'{prompting.ARITHMETIC_INSTRUCTION}\n\nQuestion: {q}\nAnswer:'
  msgs = prompting.prompt_messages(q, 'cot', ex)
  assert [m['role'] for m in msgs] == ['user', 'assistant', 'user', 'assistant', 'user']
  assert msgs[1]['content'] == ex[0].solution and msgs[-1]['content'] == q
  assert prompting.prompt_messages(q, 'instruction')[0]['role'] == 'system'
  tok = tokenizers.CharTokenizer.train([q + text + prompting.ARITHMETIC_INSTRUCTION])
  base = prompting.build_prompt(tok, q, 'few_shot', ex)
  assert base[0] == tok.bos_id and tok.decode(base[1:]) == text
  chat = prompting.build_prompt(tok, q, 'few_shot', ex, chat=True)
  assert chat[-1] == tok.special_id(tokenizers.ASSISTANT)
  assert tok.decode(chat).count(tokenizers.USER) == 3


# ---- tasks on a tiny random model ---------------------------------------------------------------

@pytest.fixture(scope='module')
def random_run():
  # The world's documents lack some characters of its questions ('W' of 'What') and instructions.
  questions = [ex['question'] for ex in tasks.load_task('world_facts').examples]
  instructions = [prompting.ARITHMETIC_INSTRUCTION, prompting.FACT_INSTRUCTION]
  tok = tokenizers.CharTokenizer.train(world.corpus(0, 300) + questions + instructions)
  cfg = ModelConfig(vocab_size=-(-tok.vocab_size // 8) * 8, num_layers=2, num_heads=2,
                    embed_dim=32, mlp_dim=64, max_len=512, style='llama')
  model = Transformer(cfg)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))['params'])
  return tasks.Run(model, params, tok)


@pytest.mark.parametrize('method', ['cot', 'self_consistency@3'])
def test_world_arithmetic_end_to_end(random_run, method):
  summary, records = tasks.run_task('world_arithmetic', random_run, limit=4, method=method,
                                    shots=2, max_new_tokens=12, seed=1)
  assert summary['num_examples'] == 4 and summary['shots'] == 2
  assert set(summary['accuracy_by_num_steps']) == {'1', '2', '3'}
  assert 0.0 <= summary['accuracy'] <= 1.0
  for r in records:
    assert {'prompt', 'output', 'prediction', 'target', 'correct', 'num_steps'} <= set(r)
    assert r['prompt'].count('Question: ') == 3 and r['prompt'].endswith('\nAnswer:')
    assert r['prompt'].count(r['question']) == 1   # never among its own exemplars
    assert r['correct'] == (r['prediction'] == r['target'])
  assert [r['num_steps'] for r in records] == [1, 2, 3, 1]
  if method.startswith('self_consistency'):
    assert all(len(r['samples']) == 3 and len(r['votes']) == 3 for r in records)
    assert all(r['prediction'] == prompting.majority_vote(r['votes']) for r in records)
    assert summary['temperature'] == 0.7
  _, again = tasks.run_task('world_arithmetic', random_run, limit=4, method=method, shots=2,
                            max_new_tokens=12, seed=1)
  assert [r['output'] for r in again] == [r['output'] for r in records]   # seeded


def test_world_facts_and_perplexity(random_run):
  summary, records = tasks.run_task('world_facts', random_run, limit=3, method='few_shot',
                                    shots=1, max_new_tokens=8)
  assert summary['num_examples'] == 3 and len({r['question'] for r in records}) == 3
  assert all(r['ideal'].endswith('.') and isinstance(r['correct'], bool) for r in records)
  texts = ['The banana is a yellow fruit.', 'Question: Bo has 2 figs.\nAnswer: The answer is 2.']
  task = tasks.Task('perplexity', [{'text': t} for t in texts])
  summary, records = tasks.perplexity(task, random_run, batch_size=8)
  # Each document alone, by a plain forward pass: the packed rows must give the same nats.
  tok, nats = random_run.tok, 0.0
  for t in texts:
    ids = jnp.asarray([[tok.bos_id] + tok.encode(t) + [tok.eos_id]])
    logp = jax.nn.log_softmax(random_run.model.apply({'params': random_run.params}, ids[:, :-1]))
    nats -= float(jnp.take_along_axis(logp, ids[:, 1:, None], -1).sum())
  assert summary['tokens'] == sum(len(t) + 1 for t in texts)
  np.testing.assert_allclose(summary['loss'] * summary['tokens'], nats, rtol=1e-4)
  size = sum(len(t.encode()) for t in texts)
  np.testing.assert_allclose(summary['bits_per_byte'], nats / (np.log(2) * size), rtol=1e-4)


# ---- the CLI on a tiny trained run --------------------------------------------------------------

@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  from lmresearch.stages import launch
  c = tiny(load_config('pretrain'))
  c.model.max_len = 256   # room for a one-shot world prompt in byte-level BPE tokens
  c.train.steps = 2
  c.checkpoint.every = 2
  workdir = str(tmp_path_factory.mktemp('eval_run'))
  launch.run(c, workdir, devices=jax.devices()[:1])
  return workdir


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'lmresearch.evaluate', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_cli_writes_results(trained_workdir, tmp_path):
  out = tmp_path / 'results.jsonl'
  r = _cli(f'--workdir={trained_workdir}', '--task=world_arithmetic', '--prompting=few_shot',
           '--shots=1', '--limit=3', '--max_new_tokens=8', f'--out={out}')
  assert r.returncode == 0, r.stderr
  summary = json.loads(r.stdout)
  assert summary['num_examples'] == 3 and summary['chat'] is False and summary['step'] == 2
  assert json.load(open(tmp_path / 'results.summary.json')) == summary
  records = [json.loads(line) for line in open(out)]
  assert len(records) == 3 and all({'prompt', 'output', 'prediction', 'target', 'correct',
                                    'num_steps'} <= set(x) for x in records)


def test_cli_gsm8k_and_a_malformed_line(trained_workdir, tmp_path):
  good = tmp_path / 'test.jsonl'
  good.write_text(json.dumps({'question': 'Bo has 2 figs and finds 3. How many now?',
                              'answer': 'He has 2 + 3 = <<2+3=5>>5.\n#### 5'}) + '\n')
  r = _cli(f'--workdir={trained_workdir}', '--task=gsm8k', f'--data={good}',
           '--max_new_tokens=4', '--chat')
  assert r.returncode == 0, r.stderr
  assert json.loads(r.stdout)['num_examples'] == 1 and json.loads(r.stdout)['chat'] is True
  bad = tmp_path / 'bad.jsonl'
  bad.write_text(good.read_text() + '{"question": "unterminated\n')
  r = _cli(f'--workdir={trained_workdir}', '--task=gsm8k', f'--data={bad}')
  assert r.returncode == 2
  assert f'{bad}:2:' in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---- reward model tasks on the shared tiny pipeline ---------------------------------------------

def test_reward_accuracy_and_win_rate(pipeline_dirs):
  sft = tasks.load(str(pipeline_dirs / 'sft'))
  rm = tasks.load(str(pipeline_dirs / 'reward'), reward=True, mesh=sft.mesh, rules=sft.rules)
  assert sft.chat and not tasks.load(str(pipeline_dirs / 'base')).chat
  task = tasks.load_task('reward_accuracy', limit=3)
  ties = sum(len(r.get('ties', [])) for r in task.examples)
  pairs = sum(len(r['responses']) * (len(r['responses']) - 1) // 2 for r in task.examples)
  summary, records = tasks.run_task(task, rm)
  assert summary['num_pairs'] == len(records) == pairs - ties   # every untied pair, once
  assert summary['accuracy'] == np.mean([r['chosen_reward'] > r['rejected_reward']
                                         for r in records])
  # Every candidate, all five degenerate replies among them, and each kind's share of the pairs.
  assert all(set(world.DEGENERATE) <= set(r['kinds']) for r in task.examples)
  by_kind = summary['by_kind']
  assert by_kind['empty']['count'] == 3 and by_kind['concise']['count'] == 3
  empty_pairs = [r for r in records if 'empty' in (r['chosen_kind'], r['rejected_kind'])]
  assert by_kind['empty']['pair_accuracy'] == np.mean([r['correct'] for r in empty_pairs])
  assert summary['num_real_pairs'] < summary['num_pairs']
  # A model against itself ties every prompt, by the reward model and by the exact answer.
  summary, records = tasks.run_task('win_rate', sft, limit=4, other=sft, judge=rm,
                                    max_new_tokens=8)
  assert summary['win_rate'] == 0.5 and summary['exact_win_rate'] == 0.5
  assert all({'output', 'other_output', 'reward', 'other_reward', 'win', 'exact_win'} <= set(r)
             for r in records)


def test_default_shots_shrink_to_fit_the_context_but_explicit_shots_do_not(pipeline_dirs, capsys):
  base = tasks.load(str(pipeline_dirs / 'base'))   # a tiny model: a 160-token context
  summary, records = tasks.run_task('world_arithmetic', base, method='few_shot', limit=2,
                                    max_new_tokens=4)
  assert summary['shots'] < 4 and 'exemplars per prompt' in capsys.readouterr().err
  assert all(len(base.tok.encode(r['prompt'])) <= base.model.cfg.max_len - 48 for r in records)
  with pytest.raises(ValueError, match='lower --shots'):
    tasks.run_task('world_arithmetic', base, method='few_shot', shots=8, limit=2, max_new_tokens=4)


def test_questions_that_overflow_the_context_alone_are_skipped_and_counted(pipeline_dirs, capsys):
  base = tasks.load(str(pipeline_dirs / 'base'))   # 160 tokens: room for a question, not a long one
  task = tasks.load_task('world_arithmetic', limit=3)
  long_q = dict(task.examples[0], question='How many apples? ' * 40)
  task = dataclasses.replace(task, examples=[long_q] + task.examples)
  summary, records = tasks.run_task(task, base, method='few_shot', max_new_tokens=4)
  assert summary['skipped_too_long'] == 1 and summary['num_examples'] == len(records) == 3
  assert '1 of 4 questions skipped' in capsys.readouterr().err


def test_best_of_n_keeps_the_reward_models_favourite(pipeline_dirs):
  sft = tasks.load(str(pipeline_dirs / 'sft'))
  rm = tasks.load(str(pipeline_dirs / 'reward'), reward=True, mesh=sft.mesh, rules=sft.rules)
  task = tasks.load_task('world_arithmetic', limit=3)
  summary, records = best_of_n.best_of_n(task, sft, rm, n=4, max_new_tokens=8)
  assert list(summary['by_n']) == ['1', '2', '4'] and summary['n'] == 4
  for r in records:
    assert len(r['samples']) == 4 and r['reward'] == max(r['rewards'])
    assert r['output'] == r['samples'][int(np.argmax(r['rewards']))]
  by_n = summary['by_n']
  assert by_n['1']['proxy_reward'] == pytest.approx(np.mean([r['rewards'][0] for r in records]))
  assert by_n['1']['proxy_reward'] <= by_n['2']['proxy_reward'] <= by_n['4']['proxy_reward']
  assert by_n['4']['kl_bon'] == pytest.approx(np.log(4) - 3 / 4) and by_n['1']['kl_bon'] == 0
  assert summary['gold_quality'] == pytest.approx(np.mean([r['gold'] for r in records]))
  assert best_of_n.powers_of_two(48) == [1, 2, 4, 8, 16, 32, 48]

"""config.data.source='hf': Hugging Face datasets (save_to_disk, parquet, JSON) in the schemas the
ecosystem ships, through the real loading path and one tiny stage each (local data only)."""
import json
import os
import sys

os.environ['HF_DATASETS_OFFLINE'] = '1'   # before `datasets` is imported: never reach the hub

import jax
import numpy as np
import pytest

from conftest import load_config, tiny
from lmresearch.stages import launch
from lmresearch.text import tokenizers
from lmresearch.training.config import inherit_model
from lmresearch.data import formats, hf, packing, sources
from lmresearch.core.errors import ConfigError



datasets = pytest.importorskip('datasets', reason="config.data.source='hf' needs the hf extra: "
                               'pip install -e .[hf]')
datasets.disable_progress_bars()

DEV = jax.devices()[:1]


def _chat(i):
  return [{'role': 'user', 'content': f'What is {i} plus 1?'},
          {'role': 'assistant', 'content': f'It is {i + 1}.'}]


CHATS = {'messages': [([{'role': 'system', 'content': 'Be brief.'}] if i % 3 == 0 else []) + _chat(i)
                      for i in range(20)]}
COMPLETIONS = {'prompt': [f'Name {i}.' for i in range(20)], 'completion': [f'{i}!' for i in range(20)]}
# HH-RLHF style: strings; UltraFeedback-binarized style: the user turn inside chosen/rejected
PAIRS_STR = {'prompt': [f'Is {i} even?' for i in range(20)],
             'chosen': ['yes' if i % 2 == 0 else 'no' for i in range(20)],
             'rejected': ['no' if i % 2 == 0 else 'yes' for i in range(20)]}
PAIRS_MSG = {'prompt': PAIRS_STR['prompt'],
             'chosen': [[{'role': 'user', 'content': p}, {'role': 'assistant', 'content': c}]
                        for p, c in zip(PAIRS_STR['prompt'], PAIRS_STR['chosen'])],
             'rejected': [[{'role': 'user', 'content': p}, {'role': 'assistant', 'content': r}]
                          for p, r in zip(PAIRS_STR['prompt'], PAIRS_STR['rejected'])],
             'score_chosen': [8.0] * 20, 'score_rejected': [3.0] * 20}
PROMPTS = {'prompt': [f'{i} + 2 = ?' for i in range(20)], 'answer': [str(i + 2) for i in range(20)]}
TEXTS = {'text': [f'The sky over hill {i} is blue and the grass is green.' for i in range(40)]}


def store(tmp_path, columns, how: str, name: str = 'ds') -> str:
  """A dataset built in memory, written the way researchers receive one; returns its hf_path."""
  ds = datasets.Dataset.from_dict(columns)
  out = str(tmp_path / name)
  if how == 'disk':
    ds.save_to_disk(out)
  elif how == 'parquet':
    out += '.parquet'
    ds.to_parquet(out)
  elif how == 'json':
    out += '.jsonl'
    ds.to_json(out)
  return out


def hf_data(config, path, **keys):
  config.data.update(source='hf', hf_path=path, **keys)
  return config


def expected(kind, columns):
  """The internal rows each schema must become (formats' conventions)."""
  n = len(next(iter(columns.values())))
  if kind == 'messages':
    return [{'messages': m} for m in columns['messages']]
  if kind == 'completion':
    return [{'messages': [{'role': 'user', 'content': p}, {'role': 'assistant', 'content': c}]}
            for p, c in zip(columns['prompt'], columns['completion'])]
  if kind == 'prompts':
    return [{'prompt': p, 'answer': a, 'num_steps': 0} for p, a in zip(columns['prompt'], columns['answer'])]
  return [{'prompt': PAIRS_STR['prompt'][i], 'responses': [PAIRS_STR['chosen'][i],
                                                             PAIRS_STR['rejected'][i]], 'ties': []}
          for i in range(n)]


SCHEMAS = {'messages': ('chat', CHATS), 'completion': ('chat', COMPLETIONS),
           'pairs_str': ('ranking', PAIRS_STR), 'pairs_msg': ('ranking', PAIRS_MSG),
           'prompts': ('prompts', PROMPTS)}


@pytest.mark.parametrize('how', ['disk', 'parquet', 'json'])
@pytest.mark.parametrize('schema', list(SCHEMAS))
def test_each_schema_loads_from_each_storage_as_the_internal_format(tmp_path, how, schema):
  kind, columns = SCHEMAS[schema]
  dc = hf_data(load_config('sft'), store(tmp_path, columns, how)).data
  want = expected(schema if schema in ('messages', 'completion', 'prompts') else 'pairs', columns)
  train, held = formats.load(kind, dc, 'train'), formats.load(kind, dc, 'validation')
  assert train + held == want and len(held) == 2   # val_fraction 0.1 of 20: the tail, as JSONL
  dc.update(hf_eval_split='train', max_docs=3)     # a named held-out split is read whole
  assert formats.load(kind, dc, 'validation') == want[:3]


def test_a_dataset_dict_gives_its_named_splits_and_streams_the_same_rows(tmp_path):
  dd = datasets.DatasetDict({'train': datasets.Dataset.from_dict(CHATS),
                             'test': datasets.Dataset.from_dict({'messages': CHATS['messages'][:4]})})
  dd.save_to_disk(str(tmp_path / 'dd'))
  dc = hf_data(load_config('sft'), str(tmp_path / 'dd'), hf_eval_split='test').data
  assert formats.load('chat', dc, 'train') == expected('messages', CHATS)
  assert formats.load('chat', dc, 'validation') == expected('messages', CHATS)[:4]
  dc.hf_streaming = True
  assert isinstance(hf.open_split(dc, 'train', streaming=True), datasets.IterableDataset)
  assert formats.load('chat', dc, 'validation') == expected('messages', CHATS)[:4]
  dc.hf_eval_split = 'dev'
  with pytest.raises(ConfigError, match=r"holds splits \['test', 'train'\], not 'dev'"):
    formats.load('chat', dc, 'validation')


def test_hh_rlhf_transcripts_without_a_prompt_column_split_at_the_last_assistant_turn(tmp_path):
  head = '\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Is 4 even?\n\nAssistant:'
  path = store(tmp_path, {'chosen': [head + ' Yes, it is.'] * 3, 'rejected': [head + ' No.'] * 3},
               'parquet')
  dc = hf_data(load_config('dpo'), path).data
  dc.hf_eval_split = 'train'
  rows = formats.load('ranking', dc, 'train')
  assert len(rows) == 3 and rows[0] == {'prompt': head[:-len('\n\nAssistant:')].strip(),
                                        'responses': ['Yes, it is.', 'No.'], 'ties': []}


def test_text_documents_hold_out_the_tail_or_read_the_named_split(tmp_path):
  dc = hf_data(load_config('pretrain'), store(tmp_path, TEXTS, 'json')).data
  train, held = sources.documents(dc, 'train'), sources.documents(dc, 'validation')
  assert train + held == TEXTS['text'] and len(held) == 4
  dc.update(hf_streaming=True, max_docs=5)   # streamed, the first max_docs only
  assert sources.documents(dc, 'train') == TEXTS['text'][:4]


@pytest.mark.parametrize('columns,kind,needle', [
    (TEXTS, 'chat', r"row 0, column 'messages' \(the row's columns: \['text'\]\): expected \{\"messages\""),
    ({'messages': ['hello'] * 3}, 'chat', r"row 0, column 'messages': expected a list of"),
    ({'messages': CHATS['messages'][:2] + [[{'role': 'robot', 'content': 'x'}]]}, 'chat',
     r"row 2, column 'messages': each message needs a role"),
    ({'messages': CHATS['messages'][:1] + [[{'role': 'user', 'content': 'x'}]]}, 'chat',
     r"row 1, column 'messages': a chat needs at least one assistant message"),
    ({'prompt': ['p'] * 3, 'chosen': [1, 2, 3], 'rejected': [4, 5, 6]}, 'ranking',
     r"row 0, column 'chosen': expected a string or a list of messages, got int"),
    ({'prompt': ['p'] * 3, 'chosen': ['a', None, 'c'], 'rejected': ['b'] * 3}, 'ranking',
     r"row 1, column 'chosen' \(the row's columns: \['prompt', 'rejected'\]\): missing"),
    ({'prompt': ['p'] * 3, 'chosen': ['a'] * 3}, 'ranking', r"row 0, column 'rejected' \(the row's columns: \['chosen', 'prompt'\]\): missing"),
    ({'chosen': ['a'] * 3, 'rejected': ['b'] * 3}, 'ranking', r"row 0, column 'prompt' \(the row's columns: \['chosen', 'rejected'\]\): expected a string"),
    ({'prompt': ['p'] * 3, 'chosen': PAIRS_MSG['chosen'][:3],
      'rejected': [[{'role': 'user', 'content': 'p'}, {'role': 'user', 'content': 'r'}]] * 3}, 'ranking',
     r"row 0, column 'rejected': the last message is the user's"),
    ({'prompt': ['p', 'q', 'r'], 'completion': ['a', 'b', None]}, 'chat',
     r"row 2, column 'completion' \(the row's columns: \['prompt'\]\): missing"),
])
def test_a_row_that_does_not_fit_names_dataset_row_and_column(tmp_path, columns, kind, needle):
  path = store(tmp_path, columns, 'parquet', 'bad')
  dc = hf_data(load_config('sft'), path).data
  with pytest.raises(ConfigError, match=r'bad\.parquet \[train\] ' + needle) as e:
    formats.load(kind, dc, 'train')
  assert '\n' not in str(e.value)


def test_text_of_another_type_or_a_missing_text_column_is_one_line(tmp_path):
  dc = hf_data(load_config('pretrain'), store(tmp_path, {'text': [1, 2]}, 'disk', 'ints')).data
  with pytest.raises(ConfigError, match=r"ints \[train\] row 0, column 'text': expected a string, "
                     r'got int; set config\.data\.text_key'):
    sources.documents(dc, 'train')
  dc.update(hf_path=store(tmp_path, {'content': ['a', 'b']}, 'parquet'), hf_streaming=True)
  with pytest.raises(ConfigError, match=r"row 0, column 'text' \(the row's columns: \['content'\]\): no such column; "):
    hf.TextStream(dc, 'train').first_texts(5)


def test_loading_problems_are_one_line_config_errors(tmp_path, monkeypatch):
  dc = load_config('sft').data
  dc.source = 'hf'
  with pytest.raises(ConfigError, match='config.data.hf_path is empty'):
    formats.load('chat', dc, 'train')
  dc.update(hf_path=store(tmp_path, CHATS, 'parquet'), hf_eval_split='test')
  with pytest.raises(ConfigError, match=r"could not be loaded: Unknown split \"test\""):
    formats.load('chat', dc, 'validation')
  dc.hf_path = str(tmp_path / 'nowhere' / 'dataset')
  with pytest.raises(ConfigError, match=r'nowhere/dataset.* could not be loaded') as e:
    formats.load('chat', dc, 'train')
  assert '\n' not in str(e.value)
  bad = tmp_path / 'broken.jsonl'
  bad.write_text('{"text": "fine"}\n{"text": oops}\n')
  dc.update(hf_path=str(bad), hf_eval_split='')
  for streaming in (False, True):   # read whole at load, or failing mid-stream
    dc.hf_streaming = streaming
    with pytest.raises(ConfigError, match=r"broken\.jsonl' \(split 'train'\) could not be loaded: "
                       r'JSON parse error') as e:
      formats.load('chat', dc, 'train')
    assert '\n' not in str(e.value)
  monkeypatch.setitem(sys.modules, 'datasets', None)   # as if not installed
  with pytest.raises(ConfigError, match=r'pip install -e \.\[hf\]'):
    formats.load('chat', dc, 'train')


# ---- the stages, on top of one tiny streamed pretraining run ---------------------------------
@pytest.fixture(scope='module')
def base(tmp_path_factory):
  """Pretraining on a streamed `text` column (held-out head, eval, checkpoint), resumed once."""
  root = tmp_path_factory.mktemp('hfbase')
  c = hf_data(tiny(load_config('pretrain')), store(root, TEXTS, 'disk', 'corpus'), hf_streaming=True)
  c.model.max_len = 64
  c.train.update(steps=2, eval_every=2, eval_batches=1)
  first = launch.run(c, str(root / 'base'), devices=DEV)
  c.train.steps = 4   # the same workdir: resumes from step 2, the stream from its checkpointed place
  again = launch.run(c, str(root / 'base'), devices=DEV)
  return root, c, first, again


def test_streamed_pretraining_sees_the_corpus_rows_in_order_and_resumes_them(base):
  from lmresearch.stages.pretrain import PretrainStage
  root, c, first, again = base
  assert first['step'] == 2 and again['step'] == 4 and np.isfinite(again['eval/loss'])
  stage = PretrainStage(c, str(root / 'base'))
  assert not hasattr(stage, 'train_ds')   # no corpus held: packed as it streams
  tok, skip = stage.tokenizer, stage.stream.skip
  assert skip > 0 and len(stage.eval_ds) >= c.train.batch_size   # the held-out head
  ids = tok.encode_batch(TEXTS['text'][skip:])
  epoch = sum(len(d) + 2 for d in ids)   # tokens in one pass over the corpus
  b, n = c.train.batch_size, 8
  passes = n * b * c.data.seq_len // epoch + 1
  assert passes > 1   # the stream wraps around the corpus
  want = packing.PackedDataset.from_token_lists(ids * passes, c.data.seq_len, tok.bos_id, tok.eos_id)
  it = stage.train_iterator()
  batches = [next(it) for _ in range(3)]
  state = json.loads(json.dumps(it.get_state()))   # as the checkpoint stores it
  batches += [next(it) for _ in range(n - 3)]       # past the end of the corpus, epoch after epoch
  for k, batch in enumerate(batches):
    for key, value in want.rows(np.arange(k * b, (k + 1) * b)).items():
      np.testing.assert_array_equal(batch[key], value, err_msg=f'batch {k} {key}')
  resumed = stage.train_iterator()
  resumed.set_state(state)
  for k in range(3, n):
    np.testing.assert_array_equal(next(resumed)['inputs'], batches[k]['inputs'])
  eval_ids = tok.encode_batch(TEXTS['text'][:skip])
  np.testing.assert_array_equal(
      stage.eval_ds.tokens,
      packing.PackedDataset.from_token_lists(eval_ids, c.data.seq_len, tok.bos_id, tok.eos_id).tokens)


def post_config(stage, base_root, path, **keys):
  c = hf_data(tiny(load_config(stage)), path, **keys)
  c.init_from = str(base_root / 'base')
  c.data.seq_len = 64
  c.train.update(steps=2, batch_size=4)
  inherit_model(c)
  return c


def test_sft_on_messages_trains_on_the_rendered_chats(base, tmp_path):
  from lmresearch.stages.sft import SFTStage
  root = base[0]
  dd = datasets.DatasetDict({'train': datasets.Dataset.from_dict(CHATS),
                             'test': datasets.Dataset.from_dict({'messages': CHATS['messages'][-4:]})})
  dd.save_to_disk(str(tmp_path / 'chats'))
  c = post_config('sft', root, str(tmp_path / 'chats'), hf_eval_split='test')
  stage = SFTStage(c, str(tmp_path / 'run'))
  ds, tok = stage.train_ds, stage.tokenizer
  seen = [(ds.tokens[r][ds.seg[r] == k].tolist(), ds.mask[r][ds.seg[r] == k].tolist())
          for r in range(len(ds)) for k in range(1, ds.seg[r].max() + 1)]
  assert seen == [tuple(map(list, tokenizers.render_chat(tok, m))) for m in CHATS['messages']]
  out = launch.run(c, str(tmp_path / 'run'), devices=DEV)
  assert out['step'] == 2 and np.isfinite(out['train/loss'])


@pytest.mark.parametrize('columns,how', [(PAIRS_STR, 'parquet'), (PAIRS_MSG, 'json')],
                         ids=['strings', 'messages'])
def test_dpo_on_preference_pairs_reads_prompt_chosen_rejected(base, tmp_path, columns, how):
  from lmresearch.stages.dpo import DPOStage
  c = post_config('dpo', base[0], store(tmp_path, columns, how, 'pairs'))
  stage = DPOStage(c, str(tmp_path / 'run'))
  tok, ds = stage.tokenizer, stage.train_ds
  assert len(ds) == 18   # 20 pairs less the held-out tail
  for i in range(len(ds)):
    for j, reply in enumerate((PAIRS_STR['chosen'][i], PAIRS_STR['rejected'][i])):
      ids, reply_mask = tokenizers.render_reply(tok, PAIRS_STR['prompt'][i], reply)
      assert ds.tokens[i, j, :len(ids)].tolist() == ids and ds.mask[i, j].sum() == len(ids)
      assert ds.response[i, j, :len(ids)].tolist() == reply_mask
  out = launch.run(c, str(tmp_path / 'run'), devices=DEV)
  assert out['step'] == 2 and 'dpo/margin' in out and np.isfinite(out['train/loss'])

"""Hugging Face checkpoints in and out, checked against `transformers` itself on tiny random models
built here (no download): logits on a padded batch whose longest row is 520 tokens (RoPE mistakes
hide in short ones), the tokenizer's ids, greedy generation to the model's EOS, export ->
from_pretrained, and one of our own trained runs exported.
"""
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='torch is a test extra: pip install -e .[test]')
transformers = pytest.importorskip('transformers', reason='transformers is a test extra')

from lmresearch import convert  # noqa: E402
from lmresearch.stages import runs
from lmresearch.generation import batched
from lmresearch.models.transformer import rope_frequencies, ModelConfig  # noqa: E402

TEXT = ('The banana is yellow. Köln liegt am Rhein; 東京は日本の首都です. '
        'Rosa starts with 3 apples and buys 4 more. 3 + 4 = 7. The answer is 7. ')
VOCAB = 301   # a multiple of nothing: padded to 320 for sharding, stripped again on export


# Qwen2's pre-tokenizer, as its tokenizer.json has it (transformers 5 rebuilds a qwen2 tokenizer
# with this split whatever the file says, so a test tokenizer must have it too).
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def tiny_tokenizer(path, specials, chat_template=None, bos=None, eos='<|endoftext|>', qwen=False):
  """A byte-level BPE tokenizer trained here, saved as save_pretrained writes one."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  if qwen:
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior='isolated'),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=VOCAB - 10, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator([TEXT * 3, 'hello world ' * 20], trainer)
  if bos:   # Llama's post-processor puts BOS in front of every text
    tok.post_processor = processors.TemplateProcessing(
        single=f'{bos} $A', special_tokens=[(bos, tok.token_to_id(bos))])
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                              pad_token=eos)
  if chat_template:
    fast.chat_template = chat_template
  fast.save_pretrained(path)
  return fast


QWEN_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
                 "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|im_start|>assistant\\n' }}{% endif %}")

FAMILIES = {
    'gpt2': lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                                            n_positions=600, resid_pdrop=0, embd_pdrop=0,
                                            attn_pdrop=0),
    'llama_gqa': lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=1024,
        rms_norm_eps=1e-5, rope_theta=500000.0),
    'llama3_rope_scaling': lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=2048,
        rope_scaling={'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
                      'high_freq_factor': 4.0, 'original_max_position_embeddings': 64}),
    'mistral': lambda: transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        sliding_window=64),
    'qwen2': lambda: transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, rope_theta=1e6),
    'qwen3': lambda: transformers.Qwen3Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=1024,
        tie_word_embeddings=True, rope_theta=1e6),
    # Three layers, the third global (Gemma 3's pattern is 6): a window of 64 that the 520-token
    # row crosses; the global layers' RoPE linearly scaled, the local ones' with their own base;
    # head_dim apart from hidden/heads and query_pre_attn_scalar apart from head_dim.
    'gemma3': lambda: transformers.Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        max_position_embeddings=1024, sliding_window=64,
        layer_types=['sliding_attention', 'sliding_attention', 'full_attention'],
        rope_parameters={'full_attention': {'rope_type': 'linear', 'factor': 8.0, 'rope_theta': 1e6},
                         'sliding_attention': {'rope_type': 'default', 'rope_theta': 1e4}}),
    'gemma2': lambda: transformers.Gemma2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        max_position_embeddings=1024, sliding_window=64, attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0),
}
SPECIALS = {'gpt2': ['<|endoftext|>'], 'llama_gqa': ['<|begin_of_text|>', '<|end_of_text|>'],
            'llama3_rope_scaling': ['<|begin_of_text|>', '<|end_of_text|>'],
            'mistral': ['<s>', '</s>'], 'qwen2': ['<|endoftext|>', '<|im_start|>', '<|im_end|>'],
            'qwen3': ['<|endoftext|>', '<|im_start|>', '<|im_end|>'],
            'gemma3': ['<bos>', '<eos>'], 'gemma2': ['<bos>', '<eos>']}


def build(name, root):
  torch.manual_seed(0)
  cfg = FAMILIES[name]()
  specials = SPECIALS[name]
  bos = specials[0] if name.startswith(('llama', 'mistral', 'gemma')) else None
  eos = specials[1] if bos else specials[0]
  qwen = name.startswith('qwen')
  tok = tiny_tokenizer(root, specials, QWEN_TEMPLATE if qwen else None, bos, eos, qwen=qwen)
  cfg.bos_token_id, cfg.eos_token_id = tok.bos_token_id, tok.eos_token_id
  model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
  with torch.no_grad():   # random, not tiny-at-init, weights: every parameter matters
    for p in model.parameters():
      p.normal_(0, 0.3 if p.dim() > 1 else 0.1)
    for n, p in model.named_parameters():
      if 'norm' in n or 'ln_' in n:
        p.add_(1.0)
  model.save_pretrained(root)
  return model, tok


@pytest.fixture(scope='module', params=sorted(FAMILIES))
def imported(request, tmp_path_factory):
  root = tmp_path_factory.mktemp(request.param)
  model, tok = build(request.param, str(root / 'hf'))
  convert.import_run(str(root / 'hf'), str(root / 'run'), devices=jax.devices()[:1])
  return request.param, model, tok, root


def _padded_batch(tok):
  lengths = (520, 300, 17)
  ids = tok(TEXT * 12)['input_ids']
  rows = [ids[:n] for n in lengths]
  tokens = np.zeros((3, 520), np.int32)
  mask = np.zeros((3, 520), np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)], mask[i, :len(r)] = r, 1
  return tokens, mask


def test_imported_logits_equal_transformers_on_a_long_padded_batch(imported):
  name, model, tok, root = imported
  run = runs.load(str(root / 'run'))
  tokens, mask = _padded_batch(tok)
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                attention_mask=torch.tensor(mask)).logits.numpy()
  with run.active():
    ours = np.asarray(jax.jit(lambda p, t, m: run.model.apply({'params': p}, t, None, m))(
        run.params, tokens, mask))
  real = mask.astype(bool)
  ours_v = ours[..., :VOCAB]
  np.testing.assert_allclose(ours_v[real], ref[real], atol=1e-4, rtol=1e-4)
  assert (ours[..., VOCAB:] < -1e8).all()   # the padding of the vocabulary is never sampled
  lp, lq = jax.nn.log_softmax(ref[real]), jax.nn.log_softmax(ours_v[real])
  kl = float(np.mean(np.sum(np.exp(lp) * (lp - lq), -1)))
  print(f'\n{name}: max |logit diff| {np.abs(ours_v[real] - ref[real]).max():.2e}, '
        f'mean per-token KL {kl:.2e} over {real.sum()} tokens')
  assert kl < 1e-6


def test_imported_tokenizer_gives_autotokenizers_ids_and_decodes_them_back(imported):
  name, _, tok, root = imported
  ours = runs.load(str(root / 'run')).tok
  auto = transformers.AutoTokenizer.from_pretrained(str(root / 'hf'))
  for text in (TEXT, 'hello world', '東京 Köln ünïcödé', ' leading space'):
    ids = auto(text)['input_ids']
    assert ours.prompt_ids(text) == ids, text
    assert ours.decode(ids, skip_special=True) == auto.decode(ids, skip_special_tokens=True)
  if name == 'qwen2':   # the imported chat template, rendered as transformers renders it
    chat = [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello world'}]
    ids, mask = ours.render_chat(chat)
    assert ids == auto.apply_chat_template(chat, tokenize=True, return_dict=True)['input_ids']
    marked = ours.decode([i for i, m in zip(ids, mask) if m])
    assert marked.startswith('hello world<|im_end|>') and 'hi' not in marked


def test_greedy_generation_equals_generate_token_for_token_to_the_eos(imported):
  name, model, tok, root = imported
  run = runs.load(str(root / 'run'), chat=False)
  prompt = run.tok.prompt_ids('The banana is')
  with run.active():
    free = batched.generate(run.model, run.params, [prompt], max_new_tokens=32, temperature=0.0,
                             stop_ids=())['completions'][0]
  # Make the model's 10th greedy token its EOS, so that both must stop exactly there.
  eos = free[9]
  with torch.no_grad():
    ref = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False,
                         eos_token_id=eos, pad_token_id=eos).numpy()[0, len(prompt):].tolist()
  with run.active():
    out = batched.generate(run.model, run.params, [prompt], max_new_tokens=32, temperature=0.0,
                            stop_ids=(eos,))
  assert out['completions'][0] + [eos] == ref[:free.index(eos) + 1]
  assert bool(out['finished'][0])


def test_export_reproduces_the_imported_weights_exactly(imported, tmp_path):
  name, model, _, root = imported
  convert.export_run(str(root / 'run'), str(tmp_path / 'out'))
  back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'out'))
  ref = model.state_dict()
  got = back.state_dict()
  for k, v in ref.items():
    if k.endswith(('attn.bias', 'attn.masked_bias')):
      continue
    np.testing.assert_array_equal(got[k].numpy(), v.numpy(), err_msg=k)


def test_llama3_rope_frequencies_equal_transformers():
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  cfg = FAMILIES['llama3_rope_scaling']()
  ref, _ = ROPE_INIT_FUNCTIONS['llama3'](cfg, 'cpu')
  ours = rope_frequencies(ModelConfig(vocab_size=8, embed_dim=32, num_heads=4, rope_scaling='llama3',
                                      rope_factor=8.0, rope_original_max_len=64), 4)
  np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)


@pytest.mark.parametrize('change,key', [
    ({'model_type': 'gemma'}, "model_type='gemma'"),
    ({'rope_scaling': {'rope_type': 'yarn', 'factor': 2.0}}, 'rope_type'),
    ({'attention_bias': True}, 'attention_bias=True'),
    ({'hidden_act': 'gelu'}, "hidden_act='gelu'"),
    ({'some_new_option': 3}, 'some_new_option'),
])
def test_an_option_we_do_not_implement_is_one_line_naming_the_key(tmp_path, change, key):
  from lmresearch.core.errors import ConfigError
  build('llama_gqa', str(tmp_path / 'hf'))
  cfg = json.load(open(tmp_path / 'hf' / 'config.json'))
  cfg.pop('rope_parameters', None)
  cfg.update(change)
  json.dump(cfg, open(tmp_path / 'hf' / 'config.json', 'w'))
  with pytest.raises(ConfigError, match=key.replace('(', r'\(').replace('[', r'\[')) as e:
    convert.import_run(str(tmp_path / 'hf'), str(tmp_path / 'run'), devices=jax.devices()[:1])
  assert '\n' not in str(e.value)


@pytest.fixture(scope='module')
def smoke_rlhf(smoke_pipeline):
  """The smoke pipeline's RLHF model: one of our own trained runs."""
  return smoke_pipeline[0] / 'ppo'


def test_our_trained_rlhf_model_exported_gives_our_logits_and_greedy_completions(smoke_rlhf, tmp_path):
  convert.export_run(str(smoke_rlhf), str(tmp_path / 'hf'))
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'hf')).eval()
  auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'hf'))
  run = runs.load(str(smoke_rlhf))
  chat = [{'role': 'user', 'content': 'What color is the banana?'}]
  ids = run.tok.render_chat(chat, add_generation_prompt=True)[0]
  assert ids == auto.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                         return_dict=True)['input_ids']
  with run.active():
    rows = np.tile(np.asarray([ids]), (run.batch_rows(1), 1))   # a batch the mesh splits
    ours = np.asarray(run.model.apply({'params': run.params}, rows))[0, :, :model.config.vocab_size]
    out = batched.generate(run.model, run.params, [ids], max_new_tokens=32, temperature=0.0,
                            stop_ids=run.tok.stop_ids)
  with torch.no_grad():
    ref = model(torch.tensor([ids])).logits.numpy()[0]
    gen = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                         eos_token_id=list(run.tok.stop_ids), pad_token_id=run.tok.pad_id)
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
  completion = gen.numpy()[0, len(ids):].tolist()
  expected = out['completions'][0] + ([completion[len(out['completions'][0])]]
                                      if bool(out['finished'][0]) else [])
  assert completion[:len(expected)] == expected


@pytest.mark.parametrize('tokens', ['', '<|begin_of_text|>,<|end_of_text|>,9'])
def test_lora_adapters_exported_as_peft_load_onto_the_exported_base(tmp_path, tokens):
  peft = pytest.importorskip('peft', reason='peft is a test extra')
  from conftest import load_config, tiny
  from lmresearch.stages import launch
  build('llama_gqa', str(tmp_path / 'hf'))
  convert.import_run(str(tmp_path / 'hf'), str(tmp_path / 'base'), devices=jax.devices()[:1])
  c = tiny(load_config('pretrain'))   # continued pretraining with adapters on the imported model
  c.init_from = str(tmp_path / 'base')
  c.data.update(tokenizer='hf', seq_len=64)
  c.lora.update(rank=4, alpha=8.0, targets='query,key,value,out,gate,up,down', tokens=tokens)
  c.train.update(steps=3, lr=1e-2)
  launch.run(c, str(tmp_path / 'lora'), devices=jax.devices()[:1])
  convert.export_run(str(tmp_path / 'base'), str(tmp_path / 'base_hf'))
  convert.export_adapters(str(tmp_path / 'lora'), str(tmp_path / 'adapters'))
  base = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'base_hf'))
  model = peft.PeftModel.from_pretrained(base, str(tmp_path / 'adapters')).eval()
  run = runs.load(str(tmp_path / 'lora'))   # adapters folded into the base
  tokens = np.asarray([run.tok.prompt_ids(TEXT)[:60]])
  with torch.no_grad():
    ref = model(torch.tensor(tokens)).logits.numpy()
  with run.active():
    rows = np.tile(tokens, (run.batch_rows(1), 1))
    ours = np.asarray(run.model.apply({'params': run.params}, rows))[:1, :, :VOCAB]
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
  plain = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'base_hf')).eval()
  with torch.no_grad():   # (PeftModel injected the adapters into `base` itself: load it again)
    plain = plain(torch.tensor(tokens)).logits.numpy()
  assert np.abs(plain - ref).max() > 1e-3   # the adapters did change the model


def test_import_on_an_fsdp_8_mesh_reads_and_places_only_each_devices_shard(tmp_path, monkeypatch):
  from lmresearch.models import hf
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=8,
                                 max_position_embeddings=256)
  tok = tiny_tokenizer(str(tmp_path / 'hf'), ['<s>', '</s>'], bos='<s>', eos='</s>')
  cfg.bos_token_id, cfg.eos_token_id = tok.bos_token_id, tok.eos_token_id
  transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(str(tmp_path / 'hf'))
  reads, real = [], hf.Reader.rows

  def recording(self, name, r0, r1, cols=None):
    block = real(self, name, r0, r1, cols)
    reads.append((name, block.size, self.shape(name)))
    return block

  monkeypatch.setattr(hf.Reader, 'rows', recording)
  c = convert.import_run(str(tmp_path / 'hf'), str(tmp_path / 'run'), 'data=1,fsdp=8,tensor=1',
                         devices=jax.devices()[:8])
  assert c['mesh']['fsdp'] == 8
  run = runs.load(str(tmp_path / 'run'), mesh=None)
  for path, leaf in jax.tree_util.tree_flatten_with_path(run.params)[0]:
    shard = leaf.addressable_shards[0].data.shape
    sharded = any(a is not None for a in leaf.sharding.spec)
    if sharded:   # every device holds 1/8 of the matrix, never the whole
      assert np.prod(shard) * 8 == leaf.size, (path, shard, leaf.shape)
  # and each read brought in at most one device's share of a tensor
  whole = [(n, size) for n, size, shape in reads if size == np.prod(shape) and len(shape) == 2]
  assert not whole, whole[:3]
  assert max(size / np.prod(shape) for _, size, shape in reads) <= 1 / 8 + 1e-9


@pytest.fixture(scope='module')
def imported_qwen(tmp_path_factory):
  root = tmp_path_factory.mktemp('qwen_stages')
  build('qwen2', str(root / 'hf'))
  convert.import_run(str(root / 'hf'), str(root / 'qwen'), devices=jax.devices()[:1])
  return root


def _on_imported(stage, root, init_from):
  from conftest import load_config, tiny
  c = tiny(load_config(stage))
  c.init_from = str(root / init_from)
  c.data.update(seq_len=200, tokenizer='hf')
  c.data.synthetic.num_docs = 40
  c.train.update(steps=2, batch_size=8)
  if stage == 'reward':
    c.reward.update(norm_samples=4, norm_max_new_tokens=8)
  if stage in ('ppo', 'grpo'):
    c.rl.update(max_prompt_len=200, max_new_tokens=16, eval_prompts=4)
    c.train.update(batch_size=4, eval_every=2)
  if stage == 'ppo':
    c.reward_from = str(root / 'reward')
  if stage == 'grpo':
    c.grpo.update(group_size=2)
  return c


def test_every_post_training_stage_starts_from_an_imported_run(imported_qwen):
  from lmresearch.stages import launch
  root = imported_qwen
  for stage, parent in (('sft', 'qwen'), ('reward', 'sft'), ('dpo', 'sft'), ('ppo', 'sft'),
                        ('grpo', 'sft')):
    out = launch.run(_on_imported(stage, root, parent), str(root / stage), devices=jax.devices()[:1])
    assert np.isfinite(out['train/loss']), stage
  # SFT trained on the imported template's assistant tokens, and the run keeps the template
  tok = runs.load(str(root / 'sft')).tok
  assert tok.chat_template and '<|im_start|>' in tok.chat_template
  ids, mask = tok.render_chat([{'role': 'user', 'content': 'hi'},
                               {'role': 'assistant', 'content': 'yes'}])
  assert tok.decode([i for i, m in zip(ids, mask) if m]) == 'yes<|im_end|>\n'


def test_a_template_that_cannot_mark_assistant_tokens_is_an_error(imported_qwen):
  tok = runs.load(str(imported_qwen / 'qwen')).tok
  tok.chat_template = ("{% for m in messages|reverse %}{{ m['role'] + ': ' + m['content'] + '\\n' }}"
                       "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
  with pytest.raises(ValueError, match='cannot be marked for the loss|cannot mark'):
    tok.render_chat([{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'yes'}])


def test_the_three_convert_commands_and_sample_run_as_the_readme_writes_them(imported_qwen, tmp_path):
  import subprocess
  import sys
  from conftest import ROOT
  env = {**os.environ, 'PYTHONPATH': ROOT, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
  cli = lambda *a: subprocess.run([sys.executable, '-m', *a], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=600)
  root = imported_qwen
  out = cli('lmresearch.convert', f'--from_hf={root / "hf"}', f'--workdir={tmp_path / "qwen"}')
  assert out.returncode == 0, out.stderr[-2000:]
  out = cli('lmresearch.convert', f'--to_hf={tmp_path / "back"}', f'--workdir={tmp_path / "qwen"}')
  assert out.returncode == 0 and (tmp_path / 'back' / 'model.safetensors').exists(), out.stderr[-2000:]
  out = cli('lmresearch.convert', f'--to_hf={tmp_path / "peft"}', f'--workdir={tmp_path / "qwen"}',
            '--adapters_only')   # not a LoRA run: a one-line error
  assert out.returncode == 2 and 'not a LoRA run' in out.stderr
  out = cli('lmresearch.sample', f'--workdir={tmp_path / "qwen"}', '--chat', '--prompt=hi',
            '--max_new_tokens=8')   # an imported instruct model, prompted by its own template
  assert out.returncode == 0 and out.stdout.strip(), out.stderr[-2000:]
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'config.json').write_text(json.dumps({'model_type': 'gemma'}))
  out = cli('lmresearch.convert', f'--from_hf={bad}', f'--workdir={tmp_path / "x"}')
  assert out.returncode == 2 and "model_type='gemma'" in out.stderr and 'Traceback' not in out.stderr


def test_the_streaming_writer_gives_a_safetensors_file_any_reader_loads(tmp_path):
  import ml_dtypes
  from safetensors import safe_open
  from lmresearch.models.hf.writer import StreamingWriter
  tensors = {'a': np.arange(12, dtype=np.float32).reshape(3, 4), 'b': np.arange(5, dtype=np.float16),
             'c': np.arange(6).astype(ml_dtypes.bfloat16).reshape(2, 3)}
  w = StreamingWriter(str(tmp_path / 'x.safetensors'), {'format': 'pt'})
  for k, v in tensors.items():
    w.add(k, v)
  w.close()
  assert sorted(os.listdir(tmp_path)) == ['x.safetensors']   # no side file left behind
  with safe_open(str(tmp_path / 'x.safetensors'), 'flax') as f:
    assert f.metadata() == {'format': 'pt'}
    for k, v in tensors.items():
      np.testing.assert_array_equal(np.asarray(f.get_tensor(k), np.float32), v.astype(np.float32))
  # A transposed view and a cast are written slab by slab (slabs smaller than a row, too), as a
  # scalar is: the bytes are those of the whole contiguous, cast array.
  from lmresearch.models.hf import writer as writer_lib
  big = np.random.default_rng(0).standard_normal((37, 11, 5)).astype(np.float32)
  w = StreamingWriter(str(tmp_path / 'z.safetensors'))
  old, writer_lib.SLAB_BYTES = writer_lib.SLAB_BYTES, 7 * 11 * 5 * 2
  try:
    w.add('t', big.transpose(2, 0, 1), ml_dtypes.bfloat16)
    w.add('r', big[:, 0, :].T)
    w.add('s', np.float32(3.5))
  finally:
    writer_lib.SLAB_BYTES = old
  w.close()
  with safe_open(str(tmp_path / 'z.safetensors'), 'numpy') as f:
    assert f.get_slice('t').get_dtype() == 'BF16'
  with safe_open(str(tmp_path / 'z.safetensors'), 'flax') as f:
    np.testing.assert_array_equal(np.asarray(f.get_tensor('t'), np.float32),
                                  big.transpose(2, 0, 1).astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(f.get_tensor('r')), big[:, 0, :].T)
    assert np.asarray(f.get_tensor('s')).shape == () and float(f.get_tensor('s')) == 3.5
  with pytest.raises(ValueError, match='tensor d has dtype bool'):
    StreamingWriter(str(tmp_path / 'y.safetensors')).add('d', np.zeros(2, bool))


def test_an_imported_chat_model_is_served_with_its_own_template(imported_qwen):
  """The OpenAI-compatible chat endpoint on an imported Qwen2 run: its prompt is the model's own
  chat template, and its greedy reply is transformers' on the same template."""
  from fastapi.testclient import TestClient

  from lmresearch.web.app import create_app
  msgs = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'The banana is'}]
  auto = transformers.AutoTokenizer.from_pretrained(str(imported_qwen / 'hf'))
  model = transformers.AutoModelForCausalLM.from_pretrained(str(imported_qwen / 'hf')).eval()
  ids = auto.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                 return_dict=True)['input_ids']
  stops = list(runs.load(str(imported_qwen / 'qwen')).tok.stop_ids)
  with torch.no_grad():
    ref = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                         eos_token_id=stops, pad_token_id=stops[0]).numpy()[0, len(ids):].tolist()
  want = auto.decode([t for t in ref if t not in stops], skip_special_tokens=True)
  with TestClient(create_app(str(imported_qwen), None, slots=2)) as client:
    assert 'qwen' in [m['id'] for m in client.get('/v1/models').json()['data']]
    r = client.post('/v1/chat/completions', json={'model': 'qwen', 'messages': msgs,
                                                  'max_tokens': 12, 'temperature': 0})
    assert r.status_code == 200, r.text
    body = r.json()
  assert body['usage']['prompt_tokens'] == len(ids)
  assert body['choices'][0]['message']['content'] == want


@pytest.fixture(scope='module')
def imported_gemma3(tmp_path_factory):
  root = tmp_path_factory.mktemp('gemma3_window')
  model, tok = build('gemma3', str(root / 'hf'))
  convert.import_run(str(root / 'hf'), str(root / 'run'), devices=jax.devices()[:1])
  return model, tok, root


def test_gemma3_decodes_past_its_window_in_the_sampler_and_the_engine_as_transformers(imported_gemma3):
  """A 90-token prompt and 24 greedy tokens: every decode step of a sliding layer (window 64) drops
  keys, in our KV-cache sampler and in the serving engine's per-row cache alike."""
  from test_serving import _collect
  from lmresearch.generation.engine import Engine
  model, tok, root = imported_gemma3
  run = runs.load(str(root / 'run'), chat=False)
  prompt = tok(TEXT * 3)['input_ids'][:90]
  with torch.no_grad():
    ref = model.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24,
                         do_sample=False).numpy()[0, len(prompt):].tolist()
  with run.active():
    ours = batched.generate(run.model, run.params, [prompt], max_new_tokens=24, temperature=0.0,
                             stop_ids=())['completions'][0]
  assert ours == ref
  engine = Engine(run, slots=2)
  try:
    got = _collect(engine, [prompt, prompt[:70]], temperature=0, max_tokens=24)
  finally:
    engine.close()
  assert got[0]['ids'] == ref


@pytest.mark.parametrize('remat', ['full'])
def test_gemma3_with_scanned_layers_gives_the_same_logits_and_gradients(imported_gemma3, remat):
  """Under scan_layers (and remat) the layer index is traced: each layer's window and RoPE base
  are chosen inside the program, and must equal the unrolled model's."""
  import dataclasses
  import jax.numpy as jnp
  from lmresearch.models.transformer import Transformer
  _, tok, root = imported_gemma3
  run = runs.load(str(root / 'run'), chat=False)
  cfg = dataclasses.replace(run.model.cfg, scan_layers=True, remat=remat)
  n = cfg.num_layers
  stacked = {k: v for k, v in run.params.items() if not k.startswith('layer_')}
  stacked['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                   *[run.params[f'layer_{i}'] for i in range(n)])
  tokens = jnp.asarray(np.tile([tok(TEXT * 3)['input_ids'][:150]], (run.batch_rows(1), 1)))

  def loss(model, params):
    logits = model.apply({'params': params}, tokens)
    return jax.nn.log_softmax(logits[0, :-1, :VOCAB]).max(-1).sum(), logits

  with run.active():
    (l0, ref), g0 = jax.value_and_grad(lambda p: loss(run.model, p), has_aux=True)(run.params)
    (l1, got), g1 = jax.value_and_grad(lambda p: loss(Transformer(cfg), p), has_aux=True)(stacked)
  np.testing.assert_allclose(np.asarray(got)[..., :VOCAB], np.asarray(ref)[..., :VOCAB],
                             atol=1e-4, rtol=1e-4)
  for i in range(n):
    for path, leaf in jax.tree_util.tree_flatten_with_path(g0[f'layer_{i}'])[0]:
      other = g1['layers']
      for k in path:
        other = other[k.key]
      np.testing.assert_allclose(np.asarray(other[i]), np.asarray(leaf), atol=2e-4, rtol=1e-3)

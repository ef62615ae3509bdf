"""Hugging Face checkpoints in and out:

  python -m lmresearch.convert --from_hf=HF_DIR --workdir=runs/qwen          # HF dir -> a run dir
  python -m lmresearch.convert --from_gguf=FILE.gguf --workdir=runs/gemma    # a llama.cpp GGUF
  python -m lmresearch.convert --to_hf=OUT_DIR --workdir=runs/rlhf           # a run dir -> HF dir
  python -m lmresearch.convert --to_hf=OUT_DIR --workdir=runs/sft_lora --adapters_only   # PEFT

HF_DIR is a local directory as `save_pretrained` writes it (config.json, *.safetensors, the
tokenizer files); to fetch one from the Hub, run transformers' own loader first. An imported run is
an ordinary run: config.json (our model config), the HF tokenizer (with its chat template) and an
Orbax checkpoint, so `--config.init_from=runs/qwen` starts SFT, reward, DPO, PPO or GRPO from it,
and sample / evaluate read it. Families, options and what is checked: docs/models.md, "Models from
Hugging Face".
"""
from __future__ import annotations

import gc
import os
import shutil

from absl import app, flags

from lmresearch.runtime import cli_errors, fail, parse_flags, setup_jax

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags, defined when it runs (the module's functions are imported by tests and
  other CLIs, whose flags would clash)."""
  flags.DEFINE_string('from_hf', None, 'Import: a Hugging Face model directory.')
  flags.DEFINE_string('from_gguf', None, 'Import: a llama.cpp .gguf file (F32/F16/BF16 or '
                      'quantized: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K), dequantized to float.')
  flags.DEFINE_string('to_hf', None, 'Export: the directory to write (config.json, safetensors, '
                      'tokenizer).')
  flags.DEFINE_string('workdir', None, 'The run directory (import: written; export: read).')
  flags.DEFINE_bool('adapters_only', False, 'Export: only the LoRA adapters, as PEFT writes them.')
  flags.DEFINE_string('mesh', 'data=1,fsdp=-1,tensor=1', 'Import: the mesh the params are placed '
                      'on (as config.mesh: data, fsdp, tensor; -1 = the rest).')
  flags.DEFINE_enum('param_dtype', 'float32', ['float32', 'bfloat16'], 'Import: the params\' dtype.')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16', 'float16'], 'Export: tensor dtype.')
  flags.DEFINE_string('chat_template', None, 'Import: a Jinja chat template file for a tokenizer '
                      'that has none (a base model to be fine-tuned as a chat model).')
  flags.DEFINE_integer('cpu_devices', -1, 'See lmresearch.main --cpu_devices.')

TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'generation_config.json',
                   'chat_template.jinja', 'special_tokens_map.json')


def mesh_config(spec: str) -> dict:
  out = {'data': 1, 'fsdp': 1, 'tensor': 1}
  for part in spec.split(','):
    if part.strip():
      k, _, v = part.partition('=')
      if k.strip() not in out:
        raise ValueError(f'--mesh={spec!r}: {k!r} is not a mesh axis (data, fsdp, tensor).')
      out[k.strip()] = int(v)
  return out


def import_run(hf_dir: str, workdir: str, mesh_spec: str = 'data=1,fsdp=-1,tensor=1',
               param_dtype: str = 'float32', chat_template=None, devices=None,
               gguf_file=None) -> dict:
  """HF_DIR -> a run directory; returns the run's config as a dict. With `gguf_file` (and
  hf_dir None) a llama.cpp GGUF instead: its metadata is the config.json, its vocabulary the
  tokenizer files, and each tensor is dequantized to float rows in HF layout (models/hf/
  gguf_file.py), so the run holds float weights like any other import."""
  import jax
  from lmresearch.training import config as lmc
  from lmresearch.core import fileio, parallel
  from lmresearch.text.hf_tokenizer import HFTokenizer
  from lmresearch.models import hf
  from lmresearch.stages.base import build_model, padded_vocab
  from lmresearch.training.checkpoint import Checkpointer, largest_bytes
  source = None
  if gguf_file:
    from lmresearch.models.hf.gguf_file import GGUFFile
    source = GGUFFile(gguf_file)
    hf_dir, hf_cfg = source.path, source.config
    fam, model, neutral = hf.model_config(hf_cfg, f'{gguf_file} (its metadata as config.json)')
  else:
    hf_cfg = hf.read_config(hf_dir)
    fam, model, neutral = hf.model_config(hf_cfg, os.path.join(hf_dir, 'config.json'))
  os.makedirs(workdir, exist_ok=True)
  if source is not None:
    source.write_tokenizer(workdir)
  else:
    copy_tokenizer(hf_dir, workdir)
  tok = HFTokenizer.load(workdir)
  if chat_template:
    tok.chat_template = open(chat_template).read()
    tok.save(workdir)
  c = lmc.base_config('pretrain')
  hf_vocab = int(hf_cfg['vocab_size'])
  c.model.update(model, param_dtype=param_dtype, vocab_used=hf_vocab, hf_model_type=fam.MODEL_TYPE)
  c.model.vocab_size = padded_vocab(max(hf_vocab, tok.vocab_size), c.model)
  c.data.update(tokenizer='hf', vocab_size=tok.vocab_size, seq_len=min(c.data.seq_len, c.model.max_len))
  c.mesh.update(mesh_config(mesh_spec))
  c.train.steps = 0
  # The keys accepted as changing nothing are named here; config.json itself is kept beside it.
  c.hf = {'source': os.path.abspath(hf_dir), 'model_type': fam.MODEL_TYPE,
          'chat': bool(tok.chat_template), 'accepted_keys': ','.join(sorted(neutral))}
  if source is not None:   # where the (dequantized) weights came from
    c.hf.gguf = source.record()
  fileio.write_json(fileio.join(workdir, 'hf_config.json'), hf_cfg)
  mesh = parallel.make_mesh(c.mesh, devices)
  rules = parallel.rules_from_config(c)
  lm = build_model(c, tok)
  with parallel.activate(mesh, rules):
    abstract, shardings = parallel.abstract_and_shardings(
        lambda: lm.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, 8), jax.numpy.int32))['params'],
        mesh, rules)
    params = hf.import_params(hf_dir, c.model.to_dict(), abstract, shardings, hf_vocab,
                              **({'reader': source} if source is not None else {}))
  ckpt = Checkpointer(fileio.join(workdir, 'checkpoints'), use_async=False,
                      save_concurrent_bytes=largest_bytes(abstract), save_chunk_bytes=4 << 20,
                      save_file_bytes=8 << 20)
  ckpt.save(0, params, {'step': jax.numpy.zeros((), jax.numpy.int32)}, {})
  ckpt.close()
  lmc.save(c, workdir)
  fileio.write_json(fileio.join(workdir, 'DONE.json'), {'seconds': 0.0, 'imported_from': hf_dir})
  return c.to_dict()


def copy_tokenizer(hf_dir: str, workdir: str) -> None:
  if not os.path.exists(os.path.join(hf_dir, 'tokenizer.json')):
    raise FileNotFoundError(f'{hf_dir}: no tokenizer.json (the fast tokenizer file save_pretrained '
                            'writes); save the tokenizer beside the model.')
  for name in TOKENIZER_FILES:
    if os.path.exists(os.path.join(hf_dir, name)):
      shutil.copyfile(os.path.join(hf_dir, name), os.path.join(workdir, name))


def hf_model_type(model: dict) -> str:
  if model.get('hf_model_type'):
    return model['hf_model_type']
  if model['style'] == 'gpt2':
    return 'gpt2'
  return 'qwen2' if model.get('qkv_bias') else 'mistral' if model.get('sliding_window') else 'llama'


def export_run(workdir: str, out_dir: str, dtype: str = 'float32') -> list[str]:
  """A run directory -> an HF directory transformers' from_pretrained reads."""
  import jax
  from lmresearch.core import fileio
  from lmresearch.stages import runs
  from lmresearch.text.hf_tokenizer import HFTokenizer
  from lmresearch.models import hf
  run = runs.load(workdir, chat=False, lean=True)
  # The restore's host buffers go when its transfers have finished: wait for them here, or the
  # first (largest) tensor's gather can come on top of them (124M: 0.14 GB higher peak).
  jax.block_until_ready(run.params)
  gc.collect()
  model = {**run.config.model.to_dict(), 'hf_model_type': hf_model_type(run.config.model)}
  tok = run.tok
  hf_vocab = model.get('vocab_used') or tok.vocab_size
  os.makedirs(out_dir, exist_ok=True)
  flat = {tuple(getattr(k, 'key', k) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(run.params)[0]}

  def fetch(path, layer):
    leaf = flat[path] if layer is None else flat[path][layer]
    with run.active():
      return host_copy(leaf)

  files = hf.export_params(fetch, model, hf_vocab, out_dir, dtype)
  ids = {'bos_token_id': tok.bos_id, 'eos_token_id': tok.eos_id, 'pad_token_id': tok.pad_id}
  cfg = hf.FAMILIES[model['hf_model_type']].hf_config(model, hf_vocab, ids)
  cfg['torch_dtype'] = cfg['dtype'] = dtype
  fileio.write_json(os.path.join(out_dir, 'config.json'), cfg, indent=2)
  stops = list(tok.stop_ids)
  fileio.write_json(os.path.join(out_dir, 'generation_config.json'),
                    {'bos_token_id': tok.bos_id, 'eos_token_id': stops if len(stops) > 1 else stops[0],
                     'pad_token_id': tok.pad_id}, indent=2)
  if isinstance(tok, HFTokenizer):
    tok.save(out_dir)
  elif tok.kind == 'bpe':
    export_our_tokenizer(tok, out_dir)
  else:
    raise ValueError(f'{workdir}: a {tok.kind} tokenizer has no Hugging Face form; only byte-level '
                     'BPE and imported tokenizers are exported.')
  return files


# Our chat template in Jinja, for transformers' apply_chat_template: <|bos|>, then per message
# <|role|> content <|end|>; the generation prompt is <|assistant|> (tokenizers.render_chat).
OUR_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] "
                "+ '<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}"
                "{% endif %}")


def export_our_tokenizer(tok, out_dir: str) -> None:
  from lmresearch.core import fileio
  from lmresearch.text import tokenizers
  tok.save(out_dir)
  added = {str(i): {'content': s, 'special': True, 'lstrip': False, 'rstrip': False,
                    'normalized': False, 'single_word': False}
           for i, s in enumerate(tokenizers.SPECIALS)}
  fileio.write_json(os.path.join(out_dir, 'tokenizer_config.json'), {
      'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': tokenizers.BOS,
      'eos_token': tokenizers.EOS, 'pad_token': tokenizers.PAD, 'add_bos_token': False,
      'model_max_length': 1 << 30, 'clean_up_tokenization_spaces': False,
      'added_tokens_decoder': added, 'chat_template': OUR_TEMPLATE}, indent=2)


# Our projections -> the module names PEFT targets in the Llama family.
PEFT_NAMES = {'query': 'self_attn.q_proj', 'key': 'self_attn.k_proj', 'value': 'self_attn.v_proj',
              'out': 'self_attn.o_proj', 'gate': 'mlp.gate_proj', 'up': 'mlp.up_proj',
              'down': 'mlp.down_proj'}


def export_adapters(workdir: str, out_dir: str, dtype: str = 'float32') -> list[str]:
  """A LoRA run's adapters as PEFT writes them (adapter_config.json + adapter_model.safetensors
  with PEFT's key names), to load with peft.PeftModel.from_pretrained onto its exported base."""
  import numpy as np
  from safetensors.numpy import save_file
  from lmresearch.core import fileio, parallel
  from lmresearch.models import lora
  from lmresearch.stages import parents
  mesh = parallel.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
  cfg, params = parents.trained(workdir, mesh)
  if cfg.stage == 'ppo':
    params = params['policy']
  if cfg.model.style != 'llama':
    raise ValueError(f'{workdir}: --adapters_only writes the Llama family\'s PEFT names; a '
                     f'{cfg.model.style} model\'s fused c_attn has no per-projection adapters '
                     'in PEFT. Export the merged model with --to_hf instead.')
  flat = lora._flat(jax_fetch(params))
  tensors, used = {}, set()
  for path, a in flat.items():
    if path[-1] != 'a':
      continue
    b = flat[path[:-1] + ('b',)]
    name = path[-2][:-len(lora.SUFFIX)]
    used.add(name)
    layers = [(int(path[0].split('_')[1]), a, b)] if path[0].startswith('layer_') else \
        [(i, a[i], b[i]) for i in range(a.shape[0])]   # scanned: one per layer
    for i, ai, bi in layers:
      r = ai.shape[-1]
      key = f'base_model.model.model.layers.{i}.{PEFT_NAMES[name]}'
      tensors[key + '.lora_A.weight'] = np.ascontiguousarray(ai.reshape(-1, r).T, np.float32)
      tensors[key + '.lora_B.weight'] = np.ascontiguousarray(bi.reshape(r, -1).T, np.float32)
  token_indices = None
  if any(p[-1] == 'rows' for p in flat):   # token rows: PEFT stores the rows' values, not deltas
    from lmresearch.stages import runs
    from lmresearch.text.tokenizers import load_tokenizer
    ids = lora.token_ids(cfg.lora.tokens, load_tokenizer(workdir))
    merged = lora._flat(jax_fetch(runs.load(workdir, mesh=mesh, rules=parallel.rules_from_config(cfg)).params))
    tensors['base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta'] = \
        np.ascontiguousarray(merged[('embed', 'embedding')][list(ids)], np.float32)
    token_indices = list(ids)
    if ('head', 'kernel') in merged:   # untied: the head's rows are their own
      tensors['base_model.model.lm_head.token_adapter.trainable_tokens_delta'] = \
          np.ascontiguousarray(merged[('head', 'kernel')][:, list(ids)].T, np.float32)
      token_indices = {'embed_tokens': list(ids), 'lm_head': list(ids)}
  os.makedirs(out_dir, exist_ok=True)
  save_file({k: v.astype({'float32': np.float32, 'float16': np.float16}.get(dtype, np.float32))
             for k, v in tensors.items()}, os.path.join(out_dir, 'adapter_model.safetensors'))
  lc = cfg.lora
  fileio.write_json(os.path.join(out_dir, 'adapter_config.json'), {
      'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'r': lc.rank, 'lora_alpha': lc.alpha,
      'lora_dropout': lc.dropout, 'bias': 'none', 'fan_in_fan_out': False,
      'target_modules': sorted(PEFT_NAMES[n].split('.')[-1] for n in used),
      'base_model_name_or_path': cfg.get('init_from', ''), 'inference_mode': True,
      'modules_to_save': None, 'trainable_token_indices': token_indices}, indent=2)
  return ['adapter_config.json', 'adapter_model.safetensors']


def jax_fetch(tree):
  """A nested dict of params on the host (`host_copy` of each)."""
  return {k: (jax_fetch(v) if isinstance(v, dict) else host_copy(v)) for k, v in tree.items()}


def host_copy(x):
  """One param whole on the host, assembled from its shards. Not `device_get`: a jax.Array keeps
  the host copy it was converted to, so exporting a sharded model that way held a second copy
  of the whole model by the end (0.5 GB more for 124M on two devices)."""
  import jax
  import numpy as np
  from lmresearch.core import parallel
  if jax.process_count() > 1 or not isinstance(x, jax.Array):
    return np.asarray(parallel.fetch(x))
  out = np.empty(x.shape, x.dtype)
  for s in x.addressable_shards:
    if s.replica_id == 0:
      out[s.index] = np.asarray(s.data)
  return out


def return_freed_buffers() -> bool:
  """Large host buffers are mmapped, so a tensor freed after its read or write leaves RSS at
  once. glibc's default threshold rises after the first large free (up to 32 MB), and every
  buffer under it comes from a heap that keeps freed pages: after restoring a 124M model the
  process held about a model's worth of freed buffers. The threshold is 32 KB, not 1 MB: the
  checkpoint writer's buffers (tensorstore's, on its own threads) are mostly under 1 MB, and
  with 1 MB the freed ones stayed in the threads' heaps (about 0.2 GB after saving 124M, and a
  peak that moved by 0.1 GB between runs). Returns whether it applied (glibc only)."""
  from lmresearch.core.fileio import mmap_threshold
  return mmap_threshold(32 << 10)


def main(argv):
  return_freed_buffers()
  if len(argv) > 1:
    fail(f'unexpected arguments {argv[1:]}.')
  if not FLAGS.workdir or sum(map(bool, (FLAGS.from_hf, FLAGS.from_gguf, FLAGS.to_hf))) != 1:
    fail('give --workdir and exactly one of --from_hf=HF_DIR or --from_gguf=FILE (import) or '
         '--to_hf=OUT_DIR (export).')
  setup_jax(cpu_devices=FLAGS.cpu_devices)
  with cli_errors(ValueError):
    if FLAGS.from_hf:
      c = import_run(FLAGS.from_hf, FLAGS.workdir, FLAGS.mesh, FLAGS.param_dtype, FLAGS.chat_template)
      print(f'[convert] {FLAGS.from_hf} ({c["hf"]["model_type"]}) -> {FLAGS.workdir}')
    elif FLAGS.from_gguf:
      c = import_run(None, FLAGS.workdir, FLAGS.mesh, FLAGS.param_dtype, FLAGS.chat_template,
                     gguf_file=FLAGS.from_gguf)
      types = ', '.join(f'{k} x{v}' for k, v in c['hf']['gguf']['tensor_types'].items())
      print(f'[convert] {FLAGS.from_gguf} ({c["hf"]["model_type"]}; {types}) -> {FLAGS.workdir}')
    elif FLAGS.adapters_only:
      files = export_adapters(FLAGS.workdir, FLAGS.to_hf, FLAGS.dtype)
      print(f'[convert] {FLAGS.workdir} adapters -> {FLAGS.to_hf}: {", ".join(files)}')
    else:
      files = export_run(FLAGS.workdir, FLAGS.to_hf, FLAGS.dtype)
      print(f'[convert] {FLAGS.workdir} -> {FLAGS.to_hf}: {", ".join(files)}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=parse_flags)

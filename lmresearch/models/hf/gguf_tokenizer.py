"""A GGUF's tokenizer as the files a Hugging Face tokenizer is saved as.

A GGUF has no tokenizer.json: llama.cpp keeps the vocabulary (tokenizer.ggml.tokens, in id
order), the token types, the merges (BPE) or scores (SentencePiece), the special ids, the
add-BOS/EOS flags and the chat template. This rebuilds the tokenizer with HF `tokenizers` the way
transformers' GGUF loader builds it (integrations/gguf/gguf_tokenizer_mapping.py), so that an
imported run tokenizes as `AutoTokenizer.from_pretrained(dir, gguf_file=...)` does:

  gpt2  (byte-level BPE: Llama 3, Qwen2/3, ...)  the merges as written; the text split with the
        regex of the pre-tokenizer the file names (tokenizer.ggml.pre), else GPT-2's
  llama (SentencePiece BPE: Llama 2, Mistral, Gemma)  merges rebuilt from the vocabulary, best
        score first (Gemma: file order, with its all-space tokens spelled with U+2581),
        byte fallback for unknown characters
CONTROL tokens become special tokens, USER_DEFINED ones plain added tokens (matched whole).
"""
from __future__ import annotations

import os
from typing import Optional

from lmresearch.core import fileio
from lmresearch.core.errors import ConfigError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
                r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> how the text is split before the merges (llama.cpp's names).
SPLITS = {**{k: _LLAMA3_SPLIT for k in ('llama3', 'llama-v3', 'llama-bpe', 'smaug-bpe', 'dbrx',
                                        'falcon3', 'pixtral')},
          **{k: _QWEN2_SPLIT for k in ('qwen2', 'deepseek-r1-qwen', 'megrez')},
          'tekken': _TEKKEN_SPLIT}
# Architectures whose SentencePiece vocabulary is Gemma's (see `_sentencepiece`).
GEMMA_ARCHS = ('gemma', 'gemma2', 'gemma3')


def bytes_to_unicode() -> dict:
  """GPT-2's byte -> printable character table (byte-level BPE spells every token with it)."""
  bs = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) +
        list(range(ord('®'), ord('ÿ') + 1)))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


def merges_from_vocab(vocab: dict, scores: dict) -> list:
  """SentencePiece BPE keeps no merges: every split of a token into two tokens is a merge, ranked
  by the token's score, best first (ties: shorter left piece first), as transformers' and
  tokenizers' SentencePiece converters rank them."""
  merges = []
  for merge, score in scores.items():
    local = [(merge[:i], merge[i:], score) for i in range(1, len(merge))
             if merge[:i] in vocab and merge[i:] in vocab]
    local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
    merges.extend(local)
  merges.sort(key=lambda v: (v[2], len(v[0]), len(v[1])), reverse=True)
  return [(a, b) for a, b, _ in merges]


def _byte_level(tokens: list, merges: list, pre: Optional[str]):
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
  spelling = bytes_to_unicode()
  alphabet = set(spelling.values())
  vocab = {t if set(t) <= alphabet else ''.join(spelling[b] for b in t.encode('utf-8')): i
           for i, t in enumerate(tokens)}
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(' ', 1)) for m in merges],
                             continuing_subword_prefix='', end_of_word_suffix='', fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  if pre in SPLITS:
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLITS[pre]), behavior='isolated'),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  return tok, alphabet


def _sentencepiece(tokens: list, scores: list, arch: str, add_space_prefix: bool):
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
  if arch in GEMMA_ARCHS:
    # Gemma's all-space tokens are stored as spaces but looked up as U+2581, and its scores do
    # not follow its merge order: the order of the tokens in the file does.
    tokens = ['\u2581' * len(t) if ' ' in t and not t.strip() else t for t in tokens]
    ranks = {t: -i for i, t in enumerate(tokens)}
  else:
    ranks = dict(zip(tokens, scores))
  vocab = {t: i for i, t in enumerate(tokens)}
  bpe = dict(vocab=vocab, merges=merges_from_vocab(vocab, ranks), fuse_unk=True, byte_fallback=True)
  if arch in GEMMA_ARCHS:
    tok = Tokenizer(models.BPE(unk_token='<unk>', **bpe))
    tok.normalizer = normalizers.Replace(' ', '\u2581')
    tok.pre_tokenizer = pre_tokenizers.Split(' ', behavior='merged_with_previous')
    tok.decoder = decoders.Sequence([decoders.Replace('\u2581', ' '), decoders.ByteFallback(),
                                     decoders.Fuse()])
    return tok, vocab
  tok = Tokenizer(models.BPE(**bpe))
  tok.pre_tokenizer = pre_tokenizers.Metaspace(
      replacement='\u2581', prepend_scheme='first' if add_space_prefix else 'never', split=False)
  steps = [decoders.Replace('\u2581', ' '), decoders.ByteFallback(), decoders.Fuse()]
  if add_space_prefix:
    steps.append(decoders.Strip(' ', 1, 0))
  tok.decoder = decoders.Sequence(steps)
  return tok, vocab


def build(meta) -> tuple:
  """(tokenizers.Tokenizer, tokenizer_config dict, generation_config dict) from a GGUF's metadata
  (`gguf_file.Meta`)."""
  from tokenizers import AddedToken, processors
  get = lambda key, default=None: meta.get(f'tokenizer.ggml.{key}', default)
  kind, tokens = get('model'), get('tokens')
  if not tokens:
    raise ConfigError(f'{meta.path}: no tokenizer.ggml.tokens: the GGUF carries no tokenizer.')
  types = get('token_type') or [NORMAL] * len(tokens)
  if kind == 'gpt2':
    tok, alphabet = _byte_level(tokens, get('merges') or [], get('pre'))
    vocab = None
  elif kind == 'llama':
    tok, vocab = _sentencepiece(tokens, get('scores') or [0.0] * len(tokens), meta.arch_name,
                                bool(get('add_space_prefix', True)))
    alphabet = None
  else:
    raise ConfigError(f'{meta.path}: tokenizer.ggml.model={kind!r}: lmresearch builds the '
                      "'gpt2' (byte-level BPE) and 'llama' (SentencePiece) tokenizers.")
  # A control token spelled outside the byte alphabet is a llama.cpp mislabel in a byte-level
  # vocabulary (adding it would grow the vocabulary past the model's): transformers skips it too.
  control = [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types)
             if k == CONTROL and (alphabet is None or set(t) <= alphabet)]
  if control:
    tok.add_special_tokens(control)
  have = vocab if vocab is not None else tok.get_vocab()
  user = [AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types)
          if k == USER_DEFINED and t in have]
  if user:
    tok.add_tokens(user)

  name = lambda key: tokens[get(key)] if get(key) is not None else None
  bos, eos = name('bos_token_id'), name('eos_token_id')
  # llama.cpp adds BOS to a SentencePiece vocabulary whose file does not say otherwise
  add_bos = bool(get('add_bos_token', kind == 'llama')) and bos is not None
  add_eos = bool(get('add_eos_token', False)) and eos is not None
  if add_bos or add_eos:
    single = ' '.join(([f'{bos}:0'] if add_bos else []) + ['$A:0'] +
                      ([f'{eos}:0'] if add_eos else []))
    pair = ' '.join([single] + ([f'{bos}:1'] if add_bos else []) + ['$B:1'] +
                    ([f'{eos}:1'] if add_eos else []))
    specials = sorted({(t, tok.token_to_id(t)) for t in (bos if add_bos else None,
                                                         eos if add_eos else None) if t})
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                       special_tokens=specials)
  added = {str(i): {'content': t.content, 'lstrip': False, 'normalized': False, 'rstrip': False,
                    'single_word': False, 'special': t.special}
           for i, t in sorted(tok.get_added_tokens_decoder().items())}
  config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': bos, 'eos_token': eos,
            'unk_token': name('unknown_token_id'), 'pad_token': name('padding_token_id'),
            'add_bos_token': add_bos, 'add_eos_token': add_eos,
            'clean_up_tokenization_spaces': False, 'model_max_length': 1 << 30,
            'added_tokens_decoder': added}
  template = meta.get('tokenizer.chat_template')
  if template:
    config['chat_template'] = template
  # Generation stops at EOS and at the end-of-turn / end-of-generation ids the file names.
  stops = [get(k) for k in ('eos_token_id', 'eot_token_id', 'eom_token_id')
           if get(k) is not None]
  stops = list(dict.fromkeys(int(s) for s in stops))
  generation = {'bos_token_id': get('bos_token_id'), 'pad_token_id': get('padding_token_id'),
                'eos_token_id': stops if len(stops) > 1 else (stops[0] if stops else None)}
  return tok, config, generation


def write(meta, out_dir: str, chat_template: Optional[str] = None) -> None:
  tok, config, generation = build(meta)
  if chat_template:
    config['chat_template'] = chat_template
  os.makedirs(out_dir, exist_ok=True)
  with fileio.replacing(fileio.join(out_dir, 'tokenizer.json')) as tmp:
    tok.save(tmp)
  fileio.write_json(os.path.join(out_dir, 'tokenizer_config.json'), config, indent=2)
  fileio.write_json(os.path.join(out_dir, 'generation_config.json'),
                    {k: v for k, v in generation.items() if v is not None}, indent=2)




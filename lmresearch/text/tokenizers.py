"""Tokenizers: character-level and byte-level BPE (HF `tokenizers`), plus the chat template.

Both reserve the same special tokens at ids 0..6 so that every later stage (SFT chats, RL
rollouts, evaluation) speaks one format. A tokenizer is trained once, saved in the workdir as
`tokenizer.json`, and reloaded from there by sampling and by the stages that start from it.
"""
from __future__ import annotations

import json
from typing import Iterable, Sequence

from lmresearch.core import fileio
from lmresearch.text.hf_tokenizer import FILENAME, HF_CONFIG, HFTokenizer  # noqa: F401

PAD, BOS, EOS, SYSTEM, USER, ASSISTANT, END = (
    '<|pad|>', '<|bos|>', '<|eos|>', '<|system|>', '<|user|>', '<|assistant|>', '<|end|>')
SPECIALS = (PAD, BOS, EOS, SYSTEM, USER, ASSISTANT, END)
ROLE_TOKENS = {'system': SYSTEM, 'user': USER, 'assistant': ASSISTANT}


class _Base:
  specials = {s: i for i, s in enumerate(SPECIALS)}
  pad_id, bos_id, eos_id = 0, 1, 2
  end_id = SPECIALS.index(END)
  special_ids = tuple(range(len(SPECIALS)))   # never content (a reply of only these is empty)

  @property
  def stop_ids(self) -> tuple:
    """A reply ends at any of these: the end of a document or of a turn."""
    return (self.eos_id, self.end_id)

  def special_id(self, token: str) -> int:
    return self.specials[token]

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def prompt_ids(self, text: str) -> list[int]:
    """A document prompt as the base model saw documents in pretraining: BOS, then the text."""
    return [self.bos_id] + self.encode(text)

  def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = False):
    return _render_ours(self, messages, add_generation_prompt)


class CharTokenizer(_Base):
  """One id per character seen in training (nanoGPT's shakespeare_char), after the specials."""
  kind = 'char'

  def __init__(self, chars: str):
    self.chars = chars
    self._stoi = {c: i + len(SPECIALS) for i, c in enumerate(chars)}
    self._itos = {i: c for c, i in self._stoi.items()}
    self.vocab_size = len(SPECIALS) + len(chars)

  @classmethod
  def train(cls, texts: Iterable[str]) -> 'CharTokenizer':
    seen = set()
    for t in texts:
      seen.update(t)
    return cls(''.join(sorted(seen)))

  def encode(self, text: str) -> list[int]:
    try:
      return [self._stoi[c] for c in text]
    except KeyError as e:
      raise ValueError(f'character {e.args[0]!r} is not in the char tokenizer\'s vocabulary '
                       '(it was trained on a corpus without it).') from None

  def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
    out = []
    for i in ids:
      i = int(i)
      if i < len(SPECIALS):
        if not skip_special:
          out.append(SPECIALS[i])
      else:
        out.append(self._itos.get(i, ''))
    return ''.join(out)

  def save(self, directory: str) -> None:
    fileio.write_json(fileio.join(directory, FILENAME), {'type': 'char', 'chars': self.chars})


class BPETokenizer(_Base):
  """Byte-level BPE (GPT-2's scheme) trained with HF `tokenizers`: fast, offline, any text."""
  kind = 'bpe'

  def __init__(self, hf_tokenizer):
    self.hf = hf_tokenizer
    self.vocab_size = hf_tokenizer.get_vocab_size()
    for s in SPECIALS:
      if hf_tokenizer.token_to_id(s) != self.specials[s]:
        raise ValueError(f'tokenizer does not reserve {s} at id {self.specials[s]}.')

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int) -> 'BPETokenizer':
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return cls(tok)

  @classmethod
  def from_json(cls, text: str) -> 'BPETokenizer':
    from tokenizers import Tokenizer
    return cls(Tokenizer.from_str(text))

  def encode(self, text: str) -> list[int]:
    return self.hf.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
    return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special)

  def save(self, directory: str) -> None:
    with fileio.replacing(fileio.join(directory, FILENAME)) as tmp:
      self.hf.save(tmp)


def train_tokenizer(kind: str, texts: Sequence[str], vocab_size: int = 0):
  if kind == 'char':
    return CharTokenizer.train(texts)
  if kind == 'bpe':
    return BPETokenizer.train(texts, vocab_size)
  raise ValueError(f"config.data.tokenizer={kind!r}: expected 'char' or 'bpe'.")


def load_tokenizer(directory_or_file: str):
  path = directory_or_file
  if fileio.isdir(path):
    path = fileio.join(path, FILENAME)
  if not fileio.exists(path):
    raise FileNotFoundError(f'no tokenizer at {path}: train one by running pretraining in that '
                            'workdir, or point config.data.tokenizer_path at a tokenizer.json.')
  directory = path.rsplit('/', 1)[0] if '/' in path else '.'
  if fileio.exists(fileio.join(directory, HF_CONFIG)):   # an imported Hugging Face tokenizer
    return HFTokenizer.load(directory)
  text = fileio.read_text(path)
  obj = json.loads(text)
  if obj.get('type') == 'char':
    return CharTokenizer(obj['chars'])
  return BPETokenizer.from_json(text)


def render_chat(tok, messages: Sequence[dict], add_generation_prompt: bool = False):
  """A conversation as (ids, assistant_mask): mask is 1 on the tokens an assistant wrote (its
  content and the end of its turn), which is what SFT trains on. With add_generation_prompt the
  ids end where the assistant's reply begins. Our template for the models we train; an imported
  model's own (`hf_tokenizer.HFTokenizer`, its tokenizer_config.json's Jinja chat_template)."""
  return tok.render_chat(messages, add_generation_prompt)


def _render_ours(tok, messages: Sequence[dict], add_generation_prompt: bool = False):
  """Our chat template: <|bos|>, then <|role|> content <|end|> per message; the generation
  prompt is <|assistant|>."""
  ids, mask = [tok.bos_id], [0]
  for m in messages:
    role = m['role']
    if role not in ROLE_TOKENS:
      raise ValueError(f'unknown chat role {role!r}: expected one of {sorted(ROLE_TOKENS)}.')
    body = tok.encode(m['content']) + [tok.end_id]
    ids += [tok.special_id(ROLE_TOKENS[role])] + body
    mask += [0] + [int(role == 'assistant')] * len(body)
  if add_generation_prompt:
    ids.append(tok.special_id(ASSISTANT))
    mask.append(0)
  return ids, mask


def generation_prompt(tok, conversation) -> list[int]:
  """A conversation as the ids a model continues with its reply: the chat template ending in
  <|assistant|>. `conversation` is a list of messages, or one user message as a string. (The one
  place a prompt for a chat model is rendered: RL prompts, reward normalization, sampling and
  evaluation prompts all come through here.)"""
  if isinstance(conversation, str):
    conversation = [{'role': 'user', 'content': conversation}]
  return render_chat(tok, conversation, add_generation_prompt=True)[0]


def render_reply(tok, prompt: str, reply: str):
  """One user turn and the assistant's reply -> (ids, assistant_mask), as a reward model or DPO
  reads a response."""
  return render_chat(tok, [{'role': 'user', 'content': prompt}, {'role': 'assistant', 'content': reply}])

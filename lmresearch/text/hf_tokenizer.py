"""An imported Hugging Face tokenizer behind our tokenizer interface, with its own chat template.

A converted run keeps the checkpoint's files as they are: tokenizer.json (read by HF
`tokenizers`, the library `transformers`' fast tokenizers are), tokenizer_config.json (special
tokens, the Jinja `chat_template`) and generation_config.json (the ids generation stops at). The
chat template is rendered with Jinja2 in a sandbox, as `transformers` renders it, so an imported
instruct model is prompted exactly as it was trained; SFT's assistant-only loss mask comes from
rendering the conversation turn by turn (the text each assistant message adds), and a template
that cannot be split that way is an error, never an all-zero mask.
"""
from __future__ import annotations

import datetime
import json
from typing import Optional, Sequence

from lmresearch.core import fileio

FILENAME = 'tokenizer.json'          # the names save_pretrained uses (tokenizers.py reads them)
HF_CONFIG = 'tokenizer_config.json'

GENERATION_CONFIG = 'generation_config.json'
CHAT_TEMPLATE_FILE = 'chat_template.jinja'   # transformers 5 keeps the template beside the config


def _content(token) -> Optional[str]:
  return token.get('content') if isinstance(token, dict) else token


class HFTokenizer:
  kind = 'hf'

  def __init__(self, hf, config: dict, generation: Optional[dict] = None,
               chat_template: Optional[str] = None):
    self.hf, self.config, self.generation = hf, config, generation or {}
    self.chat_template = chat_template or config.get('chat_template')
    if isinstance(self.chat_template, list):   # named templates: the default one
      self.chat_template = next((t['template'] for t in self.chat_template
                                 if t.get('name') == 'default'), None)
    self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
    tid = lambda key: None if not _content(config.get(key)) else hf.token_to_id(_content(config[key]))
    self.bos_id, self.eos_id = tid('bos_token'), tid('eos_token')
    eos = self.generation.get('eos_token_id', self.eos_id)
    eos = eos if isinstance(eos, list) else [eos]
    if self.eos_id is None and not any(e is not None for e in eos):
      raise ValueError('tokenizer_config.json names no eos_token and generation_config.json no '
                       'eos_token_id: generation would never stop.')
    self.eos_id = self.eos_id if self.eos_id is not None else eos[0]
    # Documents are separated by BOS in packing; a tokenizer without one (Qwen2) by its EOS,
    # as it was pretrained. Prompts get what the post-processor adds (`prompt_ids`).
    self.bos_id = self.bos_id if self.bos_id is not None else self.eos_id
    self._stop = tuple(sorted({int(e) for e in eos + [self.eos_id] if e is not None}))
    self.end_id = self._stop[-1]   # the end of a turn, where a chat template has one
    pad = tid('pad_token')
    self.pad_id = pad if pad is not None else self.eos_id   # padding is masked everywhere
    added = config.get('added_tokens_decoder', {})
    self.special_ids = tuple(sorted({int(i) for i, t in added.items() if t.get('special')}
                                    | set(self._stop) | {self.bos_id}))

  @property
  def stop_ids(self) -> tuple:
    return self._stop

  # ---- files -----------------------------------------------------------------------------
  @classmethod
  def load(cls, directory: str) -> 'HFTokenizer':
    from tokenizers import Tokenizer
    read = lambda name: fileio.read_text(fileio.join(directory, name))
    have = lambda name: fileio.exists(fileio.join(directory, name))
    config = json.loads(read(HF_CONFIG))
    generation = json.loads(read(GENERATION_CONFIG)) if have(GENERATION_CONFIG) else None
    template = read(CHAT_TEMPLATE_FILE) if have(CHAT_TEMPLATE_FILE) else None
    return cls(Tokenizer.from_str(read(FILENAME)), config, generation, template)

  def save(self, directory: str) -> None:
    with fileio.replacing(fileio.join(directory, FILENAME)) as tmp:
      self.hf.save(tmp)
    config = dict(self.config)
    if self.chat_template:
      config['chat_template'] = self.chat_template
    fileio.write_json(fileio.join(directory, HF_CONFIG), config, indent=2)
    if self.generation:
      fileio.write_json(fileio.join(directory, GENERATION_CONFIG), self.generation, indent=2)

  # ---- text ------------------------------------------------------------------------------
  def encode(self, text: str) -> list[int]:
    return self.hf.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

  def prompt_ids(self, text: str) -> list[int]:
    """A document prompt with the specials the tokenizer's post-processor adds (Llama's BOS;
    none for GPT-2 or Qwen2), as `AutoTokenizer(text)` gives it."""
    return self.hf.encode(text, add_special_tokens=True).ids

  def decode(self, ids, skip_special: bool = False) -> str:
    return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special)

  def special_id(self, token: str) -> int:
    i = self.hf.token_to_id(token)
    if i is None:
      raise KeyError(f'{token!r} is not a token of this tokenizer')
    return i

  # ---- chat --------------------------------------------------------------------------------
  def render_text(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
    if not self.chat_template:
      raise ValueError('this tokenizer has no chat_template (a base model): chat prompts, SFT '
                       'and reward models need one; give one with `convert --chat_template=FILE`.')
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
      raise ValueError(f'the chat template refused the conversation: {message}')

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=['jinja2.ext.loopcontrols'])
    env.filters['tojson'] = lambda x, indent=None, **kw: json.dumps(x, ensure_ascii=False,
                                                                    indent=indent)
    env.globals.update(raise_exception=raise_exception,
                       strftime_now=lambda fmt: datetime.datetime.now().strftime(fmt))
    specials = {k: _content(v) for k, v in self.config.items()
                if k.endswith('_token') and _content(v) is not None}
    return env.from_string(self.chat_template).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt, **specials)

  def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = False):
    """(ids, assistant_mask) by the model's own template. The mask marks each assistant
    message's text as the template renders it (content and end of turn): the text that
    rendering the conversation up to and including the message adds to the rendering up to
    its generation prompt."""
    messages = list(messages)
    full = self.render_text(messages, add_generation_prompt)
    spans = []
    for k, m in enumerate(messages):
      if m['role'] != 'assistant':
        continue
      before = self.render_text(messages[:k], True)
      upto = self.render_text(messages[:k + 1], False)
      if not (upto.startswith(before) and full.startswith(upto)):
        raise ValueError('the chat template does not render a conversation as a prefix of its '
                         'continuation, so assistant tokens cannot be marked for the loss; SFT '
                         'needs a template that renders turn by turn.')
      spans.append((len(before), len(upto)))
    enc = self.hf.encode(full, add_special_tokens=False)
    mask = [int(any(a <= s and e <= b and e > s for a, b in spans)) for s, e in enc.offsets]
    if spans and not any(mask):
      raise ValueError('the chat template marked no assistant token; check its template.')
    return enc.ids, mask

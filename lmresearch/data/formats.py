"""Post-training data formats, each with the embedded world as its default.

  chat      {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
            {"prompt": ..., "completion": ...}           (strings or message lists, as TRL ships)
  ranking   {"prompt": ..., "responses": [best, ..., worst], "ties": [[i, j], ...]?}   K = 2..9
            {"prompt": ..., "chosen": ..., "rejected": ...}                          (K = 2)
                chosen/rejected as strings (HH-RLHF; without "prompt", the shared transcript up to
                the last "Assistant:" is the prompt) or as message lists ending in the assistant's
                reply (UltraFeedback-binarized: the user turn inside them, or in "prompt")
  prompts   {"prompt": ..., "answer": ...}                                           (verifiable)

GSM8K lines ({"question", "answer": "... #### N"}) are read as chats (SFT) and as prompts (GRPO)
by the same readers. One row is converted by `chat_row` / `ranking_row` / `prompt_row` whether it
comes from a JSONL line or a Hugging Face dataset (data/hf.py); a malformed one is an error naming
the file and line (or the dataset, row and column).
"""
from __future__ import annotations

import re

from lmresearch.data import world as world_lib
from lmresearch.data.sources import read_jsonl
from lmresearch.core.errors import ConfigError

ROLES = ('system', 'user', 'assistant')
_CALC = re.compile(r'<<[^>]*>>')


def gsm8k_final_answer(answer: str) -> str:
  return answer.rsplit('####', 1)[-1].strip().replace(',', '')


def gsm8k_solution(answer: str) -> str:
  """GSM8K's worked answer in our convention: calculator notes dropped, '#### N' -> 'The answer is N.'"""
  body, _, final = answer.rpartition('####')
  body = ' '.join(_CALC.sub('', body).split())
  return f'{body} The answer is {final.strip()}.'.strip()


class RowError(ValueError):
  """What is wrong with one row, and the column (key) it is in; the reader adds where the row is."""

  def __init__(self, column: str, message: str):
    super().__init__(message)
    self.column, self.message = column, message


def _bad(path, n, msg):
  return ConfigError(f'{path}:{n}: {msg}')


def _type(value) -> str:
  return 'nothing' if value is None else type(value).__name__


def messages_of(value, column: str) -> list[dict]:
  """A list of {role, content} messages (extra keys kept), else RowError naming the column."""
  if not isinstance(value, list) or not value:
    raise RowError(column, f'expected a list of {{"role", "content"}} messages, got {_type(value)}.')
  for m in value:
    if not isinstance(m, dict) or m.get('role') not in ROLES or not isinstance(m.get('content'), str):
      raise RowError(column, f'each message needs a role in {ROLES} and a string content.')
  return value


def _turns(value, column: str, role: str) -> list[dict]:
  """A string as one message of `role`, or a message list as it is."""
  return [{'role': role, 'content': value}] if isinstance(value, str) else messages_of(value, column)


def chat_row(obj: dict) -> dict:
  """One row -> {"messages": [...]}: "messages", or "prompt"/"completion", or GSM8K."""
  if 'messages' not in obj and 'question' in obj and 'answer' in obj:   # GSM8K
    obj = {'messages': [{'role': 'user', 'content': obj['question']},
                        {'role': 'assistant', 'content': gsm8k_solution(obj['answer'])}]}
  elif 'messages' not in obj and ('prompt' in obj or 'completion' in obj):
    for col in ('prompt', 'completion'):
      if col not in obj:
        raise RowError(col, 'missing: a prompt/completion chat needs both "prompt" and '
                       '"completion".')
      if not isinstance(obj[col], (str, list)):
        raise RowError(col, f'expected a string or a list of messages, got {_type(obj[col])}.')
    obj = {'messages': _turns(obj['prompt'], 'prompt', 'user') +
                       _turns(obj['completion'], 'completion', 'assistant')}
  if 'messages' not in obj:
    raise RowError('messages', 'expected {"messages": [{"role": ..., "content": ...}, ...]} '
                   '(or "prompt"/"completion", or GSM8K\'s "question"/"answer").')
  msgs = messages_of(obj['messages'], 'messages')
  if not any(m['role'] == 'assistant' for m in msgs):
    raise RowError('messages', 'a chat needs at least one assistant message to train on.')
  return {'messages': msgs}


def read_chats(path: str) -> list[dict]:
  return _read(path, chat_row)


MAX_K = 16   # InstructGPT ranked K = 4..9; the embedded world's rankings hold up to 14
HH_ASSISTANT = '\n\nAssistant:'   # Anthropic HH-RLHF transcripts: "\n\nHuman: ...\n\nAssistant: ..."


def hh_split(chosen: str, rejected: str):
  """An HH-RLHF pair without a "prompt": the transcript both share up to the last "Assistant:"
  marker is the prompt, the rest of each the reply. None when they share no such marker."""
  n = 0
  while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
    n += 1
  cut = chosen.rfind(HH_ASSISTANT, 0, n)
  if cut < 0 or cut + len(HH_ASSISTANT) > n:
    return None
  end = cut + len(HH_ASSISTANT)
  return chosen[:cut].strip(), [chosen[end:].strip(), rejected[end:].strip()]


def _reply_and_prompt(value, column: str) -> tuple[list[dict], str]:
  """A message-list response (UltraFeedback-binarized): its earlier turns and the last reply."""
  msgs = messages_of(value, column)
  if msgs[-1]['role'] != 'assistant':
    raise RowError(column, f'the last message is the {msgs[-1]["role"]}\'s; a response ends with '
                   'the assistant\'s reply.')
  return msgs[:-1], msgs[-1]['content']


def _one_user_turn(turns: list[dict], column: str) -> str:
  """The prompt of a ranking is one user turn (render_reply's shape)."""
  if len(turns) != 1 or turns[0]['role'] != 'user':
    raise RowError(column, f'a ranking\'s prompt is one user message; this one has {len(turns)} '
                   f'turns ({", ".join(m["role"] for m in turns) or "none"}).')
  return turns[0]['content']


def _pair(obj: dict) -> tuple[str, list[str]]:
  """"chosen"/"rejected" (strings or message lists, "prompt" a string, messages or absent) ->
  (prompt, [chosen, rejected])."""
  for col in ('chosen', 'rejected'):
    if col not in obj:
      raise RowError(col, 'missing: a preference pair needs both "chosen" and "rejected".')
  chosen, rejected, prompt = obj['chosen'], obj['rejected'], obj.get('prompt')
  if isinstance(chosen, str):
    if not isinstance(rejected, str):
      raise RowError('rejected', f'expected a string (as "chosen" is), got {_type(rejected)}.')
    if isinstance(prompt, str):
      return prompt, [chosen, rejected]
    if prompt is None:
      split = hh_split(chosen, rejected)
      if split is not None:
        return split
    raise RowError('prompt', f'expected a string, got {_type(prompt)} (string "chosen"/"rejected" '
                   'without a prompt must be HH-RLHF transcripts sharing a "\\n\\nAssistant:" turn).')
  if not isinstance(chosen, list):
    raise RowError('chosen', f'expected a string or a list of messages, got {_type(chosen)}.')
  if not isinstance(rejected, list):
    raise RowError('rejected', f'expected a list of messages (as "chosen" is), got {_type(rejected)}.')
  (c_turns, c_reply), (r_turns, r_reply) = (_reply_and_prompt(chosen, 'chosen'),
                                            _reply_and_prompt(rejected, 'rejected'))
  if c_turns and r_turns and c_turns != r_turns:
    raise RowError('rejected', 'its turns before the reply differ from "chosen"\'s: a pair answers '
                   'one conversation.')
  if isinstance(prompt, str):
    return prompt, [c_reply, r_reply]
  if prompt is not None and not isinstance(prompt, list):
    raise RowError('prompt', f'expected a string or a list of messages, got {_type(prompt)}.')
  if prompt is not None:
    return _one_user_turn(messages_of(prompt, 'prompt'), 'prompt'), [c_reply, r_reply]
  return _one_user_turn(c_turns, 'chosen'), [c_reply, r_reply]


def ranking_row(obj: dict) -> dict:
  """One row -> {"prompt", "responses": [best, ..., worst], "ties"}."""
  if 'chosen' in obj or 'rejected' in obj:
    prompt, resp = _pair(obj)
    obj = {'prompt': prompt, 'responses': resp}
  prompt, resp = obj.get('prompt'), obj.get('responses')
  if not isinstance(prompt, str):
    raise RowError('prompt', 'expected {"prompt": str, "responses": [best, ..., worst]} or '
                   '{"prompt", "chosen", "rejected"}.')
  if not isinstance(resp, list) or not all(isinstance(r, str) for r in resp):
    raise RowError('responses', 'expected {"prompt": str, "responses": [best, ..., worst]} or '
                   '{"prompt", "chosen", "rejected"}.')
  if not 2 <= len(resp) <= MAX_K:
    raise RowError('responses', f'{len(resp)} responses; a ranking has 2..{MAX_K}.')
  ties = obj.get('ties') or []
  if not isinstance(ties, list) or not all(
      isinstance(t, list) and len(t) == 2 and all(isinstance(i, int) and 0 <= i < len(resp) for i in t)
      for t in ties):
    raise RowError('ties', '"ties" must be a list of [i, j] response index pairs.')
  return {'prompt': prompt, 'responses': resp, 'ties': ties}


def read_rankings(path: str) -> list[dict]:
  return check_rankings(_read(path, ranking_row), path)


def check_rankings(out: list[dict], where: str) -> list[dict]:
  if out and all(_all_tied(r) for r in out):
    raise ConfigError(f'{where}: every ranking ties all its responses, so there is no pair for a '
                      'reward model to learn from; rank at least one response above another.')
  return out


def _all_tied(ranking: dict) -> bool:
  k = len(ranking['responses'])
  tied = {tuple(sorted(t)) for t in ranking['ties']}
  return all((i, j) in tied for i in range(k) for j in range(i + 1, k))


def prompt_row(obj: dict) -> dict:
  """One row -> {"prompt", "answer", "num_steps"}; a one-user-message list is its prompt too."""
  if 'question' in obj and 'answer' in obj:   # GSM8K
    obj = {'prompt': obj['question'], 'answer': gsm8k_final_answer(obj['answer'])}
  prompt = obj.get('prompt')
  if isinstance(prompt, list):
    prompt = _one_user_turn(messages_of(prompt, 'prompt'), 'prompt')
  if not isinstance(prompt, str):
    raise RowError('prompt', 'expected {"prompt": str, "answer": ...} ("answer" optional for PPO).')
  return {'prompt': prompt, 'answer': str(obj.get('answer', '')).strip(),
          'num_steps': obj.get('num_steps', 0)}


def read_prompts(path: str) -> list[dict]:
  return _read(path, prompt_row)


def _read(path: str, convert) -> list[dict]:
  out = []
  for n, obj in read_jsonl(path):
    try:
      out.append(convert(obj))
    except RowError as e:
      raise _bad(path, n, e.message) from None
  return out


# ---- the embedded defaults -------------------------------------------------------------------
def synthetic(kind: str, data_cfg, split: str) -> list[dict]:
  s = data_cfg.synthetic
  w = world_lib.World(s.world_seed)
  n = s.num_docs if split == 'train' else max(1, int(s.num_docs * data_cfg.val_fraction))
  rng = world_lib.split_rng(s.world_seed, split,
                            salt={'chat': 1, 'ranking': 2, 'prompts': 3, 'questions': 4}[kind])
  if kind == 'chat':
    return [w.chat(rng) for _ in range(n)]
  if kind == 'ranking':
    noise = s.label_noise if split == 'train' else 0.0   # held-out rankings are noise-free
    return [w.ranking(rng, rng.randint(s.min_k, s.max_k), noise) for _ in range(n)]
  if kind == 'prompts':     # verifiable arithmetic (GRPO)
    return [w.prompt(rng) for _ in range(n)]
  if kind == 'questions':   # the reward model's question mix (PPO)
    return [dict(zip(('prompt', 'ideal', 'answer'), w.question(rng, s.question_arithmetic_share)))
            for _ in range(n)]
  raise ValueError(kind)


READERS = {'chat': read_chats, 'ranking': read_rankings, 'prompts': read_prompts,
           'questions': read_prompts}
ROWS = {'chat': chat_row, 'ranking': ranking_row, 'prompts': prompt_row, 'questions': prompt_row}


def hold_out(out: list, split: str, val_fraction: float) -> list:
  """One file (or dataset split) for both: the tail is held out, the rest trains."""
  cut = len(out) - max(1, int(len(out) * val_fraction))
  return out[:cut] if split == 'train' else out[cut:]


def load(kind: str, data_cfg, split: str) -> list[dict]:
  """Examples of one format from config.data: source 'synthetic', 'jsonl' (path[, eval_path]) or
  'hf' (a Hugging Face dataset: hf_path[, hf_eval_split], data/hf.py)."""
  if data_cfg.source == 'synthetic':
    out = synthetic(kind, data_cfg, split)
  elif data_cfg.source == 'jsonl':
    path = data_cfg.path if split == 'train' else (data_cfg.eval_path or data_cfg.path)
    if not path:
      raise ConfigError('config.data.path is empty: name the JSONL file to read.')
    out = READERS[kind](path)
    if not data_cfg.eval_path:   # hold out the tail of the one file
      out = hold_out(out, split, data_cfg.val_fraction)
  elif data_cfg.source == 'hf':
    from lmresearch.data import hf   # imports `datasets` only for this source
    out = []
    for i, row in hf.examples(data_cfg, split):
      try:
        out.append(ROWS[kind](row))
      except RowError as e:
        raise hf.row_error(data_cfg, split, i, e.column, e.message, row) from None
    if kind == 'ranking':
      check_rankings(out, hf.describe(data_cfg, split))
    if not data_cfg.hf_eval_split:
      out = hold_out(out, split, data_cfg.val_fraction)
  else:
    raise ConfigError(f"config.data.source={data_cfg.source!r}: {kind} data comes from "
                      "'synthetic', 'jsonl' or 'hf'.")
  if data_cfg.max_docs:
    out = out[:data_cfg.max_docs]
  if not out:
    raise ConfigError(f'config.data yielded no {kind} examples for the {split} split.')
  return out

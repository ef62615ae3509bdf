"""Post-training data formats (JSONL), each with the embedded world as its default.

  chat      {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
  ranking   {"prompt": ..., "responses": [best, ..., worst], "ties": [[i, j], ...]?}   K = 2..9
            {"prompt": ..., "chosen": ..., "rejected": ...}                          (K = 2)
  prompts   {"prompt": ..., "answer": ...}                                           (verifiable)

GSM8K lines ({"question", "answer": "... #### N"}) are read as chats (SFT) and as prompts (GRPO)
by the same readers. A malformed line is an error naming the file and line.
"""
from __future__ import annotations

import re

from lmresearch.data import world as world_lib
from lmresearch.data.sources import read_jsonl
from lmresearch.errors import ConfigError

ROLES = ('system', 'user', 'assistant')
_CALC = re.compile(r'<<[^>]*>>')


def gsm8k_final_answer(answer: str) -> str:
  return answer.rsplit('####', 1)[-1].strip().replace(',', '')


def gsm8k_solution(answer: str) -> str:
  """GSM8K's worked answer in our convention: calculator notes dropped, '#### N' -> 'The answer is N.'"""
  body, _, final = answer.rpartition('####')
  body = ' '.join(_CALC.sub('', body).split())
  return f'{body} The answer is {final.strip()}.'.strip()


def _bad(path, n, msg):
  return ConfigError(f'{path}:{n}: {msg}')


def read_chats(path: str) -> list[dict]:
  out = []
  for n, obj in read_jsonl(path):
    if 'question' in obj and 'answer' in obj and 'messages' not in obj:   # GSM8K
      obj = {'messages': [{'role': 'user', 'content': obj['question']},
                          {'role': 'assistant', 'content': gsm8k_solution(obj['answer'])}]}
    msgs = obj.get('messages')
    if not isinstance(msgs, list) or not msgs:
      raise _bad(path, n, 'expected {"messages": [{"role": ..., "content": ...}, ...]}.')
    for m in msgs:
      if not isinstance(m, dict) or m.get('role') not in ROLES or not isinstance(m.get('content'), str):
        raise _bad(path, n, f'each message needs a role in {ROLES} and a string content.')
    if not any(m['role'] == 'assistant' for m in msgs):
      raise _bad(path, n, 'a chat needs at least one assistant message to train on.')
    out.append({'messages': msgs})
  return out


MAX_K = 16   # InstructGPT ranked K = 4..9; the embedded world's rankings hold up to 14


def read_rankings(path: str) -> list[dict]:
  out = []
  for n, obj in read_jsonl(path):
    if 'chosen' in obj and 'rejected' in obj:
      obj = {'prompt': obj.get('prompt'), 'responses': [obj['chosen'], obj['rejected']]}
    prompt, resp = obj.get('prompt'), obj.get('responses')
    if not isinstance(prompt, str) or not isinstance(resp, list) or not all(isinstance(r, str) for r in resp):
      raise _bad(path, n, 'expected {"prompt": str, "responses": [best, ..., worst]} or '
                 '{"prompt", "chosen", "rejected"}.')
    if not 2 <= len(resp) <= MAX_K:
      raise _bad(path, n, f'{len(resp)} responses; a ranking has 2..{MAX_K}.')
    ties = obj.get('ties', [])
    if not all(isinstance(t, list) and len(t) == 2 and all(isinstance(i, int) and 0 <= i < len(resp) for i in t)
               for t in ties):
      raise _bad(path, n, '"ties" must be a list of [i, j] response index pairs.')
    out.append({'prompt': prompt, 'responses': resp, 'ties': ties})
  if out and all(_all_tied(r) for r in out):
    raise ConfigError(f'{path}: every ranking ties all its responses, so there is no pair for a '
                      'reward model to learn from; rank at least one response above another.')
  return out


def _all_tied(ranking: dict) -> bool:
  k = len(ranking['responses'])
  tied = {tuple(sorted(t)) for t in ranking['ties']}
  return all((i, j) in tied for i in range(k) for j in range(i + 1, k))


def read_prompts(path: str) -> list[dict]:
  out = []
  for n, obj in read_jsonl(path):
    if 'question' in obj and 'answer' in obj:   # GSM8K
      obj = {'prompt': obj['question'], 'answer': gsm8k_final_answer(obj['answer'])}
    if not isinstance(obj.get('prompt'), str):
      raise _bad(path, n, 'expected {"prompt": str, "answer": ...} ("answer" optional for PPO).')
    out.append({'prompt': obj['prompt'], 'answer': str(obj.get('answer', '')).strip(),
                'num_steps': obj.get('num_steps', 0)})
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


def load(kind: str, data_cfg, split: str) -> list[dict]:
  """Examples of one format from config.data: source 'synthetic' or 'jsonl' (path[, eval_path])."""
  if data_cfg.source == 'synthetic':
    out = synthetic(kind, data_cfg, split)
  elif data_cfg.source == 'jsonl':
    path = data_cfg.path if split == 'train' else (data_cfg.eval_path or data_cfg.path)
    if not path:
      raise ConfigError('config.data.path is empty: name the JSONL file to read.')
    out = READERS[kind](path)
    if split != 'train' and not data_cfg.eval_path:   # hold out the tail of the one file
      cut = len(out) - max(1, int(len(out) * data_cfg.val_fraction))
      out = out[cut:]
    elif split == 'train' and not data_cfg.eval_path:
      out = out[:len(out) - max(1, int(len(out) * data_cfg.val_fraction))]
  else:
    raise ConfigError(f"config.data.source={data_cfg.source!r}: {kind} data comes from "
                      "'synthetic' or 'jsonl'.")
  if data_cfg.max_docs:
    out = out[:data_cfg.max_docs]
  if not out:
    raise ConfigError(f'config.data yielded no {kind} examples for the {split} split.')
  return out

"""Final-answer extraction and checking for arithmetic tasks (world problems, GSM8K)."""
from __future__ import annotations

import re
from typing import Optional

_NUM = r'-?\$?\d[\d,]*(?:\.\d+)?'
_PATTERNS = (re.compile(r'####\s*(' + _NUM + ')'),
             re.compile(r'[Tt]he (?:final )?answer is[:\s]*(' + _NUM + ')'))
_ANY_NUM = re.compile(_NUM)


def normalize_number(text: str) -> Optional[str]:
  t = text.replace(',', '').replace('$', '').strip().rstrip('.')
  try:
    v = float(t)
  except ValueError:
    return None
  return str(int(v)) if v == int(v) else str(v)


def extract_answer(text: str, fallback_last_number: bool = False) -> Optional[str]:
  """The final number of a solution: '#### N' (GSM8K) or 'The answer is N'; commas and $ are
  stripped; the first such statement wins. Optionally the last number in the text."""
  for pat in _PATTERNS:
    m = pat.search(text)
    if m:
      return normalize_number(m.group(1))
  if fallback_last_number:
    nums = _ANY_NUM.findall(text)
    if nums:
      return normalize_number(nums[-1])
  return None


def is_correct(text: str, target: str) -> bool:
  pred = extract_answer(text)
  return pred is not None and pred == normalize_number(str(target))

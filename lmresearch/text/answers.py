"""Final-answer extraction and checking: numbers (world arithmetic, GSM8K) and key words (facts)."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Optional

_NUM = r'-?\$?\d[\d,]*(?:\.\d+)?'
_PATTERNS = (re.compile(r'####\s*(' + _NUM + ')'),
             re.compile(r'[Tt]he (?:final )?answer is[:\s]*(' + _NUM + ')'))
_ANY_NUM = re.compile(_NUM)
_SENTENCE_END = re.compile(r'(?<=[.!?])\s|\n')


def normalize_number(text: str) -> Optional[str]:
  """'$1,234.50' -> '1234.5'; None if not a number. Decimal, so big integers stay exact."""
  t = text.replace(',', '').replace('$', '').strip().rstrip('.')
  try:
    v = Decimal(t)
  except InvalidOperation:
    return None
  if not v.is_finite():
    return None
  return str(int(v)) if v == v.to_integral_value() else format(v.normalize(), 'f')


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


def first_sentence(text: str) -> str:
  return _SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip()


def predict(text: str, target: str) -> Optional[str]:
  """What an output is judged by: its final number when the target is a number, else its first
  sentence (lowercased, so that votes over sampled answers agree on case)."""
  if normalize_number(target) is not None:
    return extract_answer(text)
  return first_sentence(text).lower().rstrip('.') or None


def matches(prediction: Optional[str], target: str) -> bool:
  """A number equals the target number; a sentence mentions the target (key) word."""
  if prediction is None:
    return False
  number = normalize_number(target)
  if number is not None:
    return prediction == number
  return re.search(r'\b' + re.escape(target.lower()) + r'\b', prediction.lower()) is not None

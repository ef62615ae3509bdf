"""docs/serving.md's screenshots of the label, chat and arena pages, made from a real trained pipeline.

  python scripts/screenshots.py --workdir=runs/exp/pipeline_seeds_ptx0/seed=1 --out=docs/serving

--workdir is a pipeline run (sub-runs pretrain/, sft/, ppo/, ...). In a temporary directory:
a label store of --items held-out world questions answered by the SFT run
(`python -m lmresearch.label create --from_world=N`), one labeler (`add-labeler alice`), and
`python -m lmresearch.serve` over the workdir on a free port (stopped at the end, whatever
happens). Headless Chromium (Selenium 4; Debian: apt-get install chromium chromium-driver) then
  label.png  ranks the first item with the keyboard (best first by the item's gold quality),
             ties two equally good responses, flags the worst, types a note; shot before submitting;
  chat.png   two turns with the `ppo` model (max tokens 64, temperature 0.7, seed --seed);
  arena.png  one battle on --arena_prompt (a world question), a vote (--vote), the names revealed
             and the ratings.
Each page is laid out 900 px wide and captured whole (at most 2000 px tall), then written as a
palette PNG under --out, fewer colours until it is under 150 KB.

tests/test_browser.py drives the same pages (with tiny untrained models); the browser options and
the screenshot step here are copied from it.
"""
import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT = 30             # seconds any one thing on a page may take to appear
GENERATE_WAIT = 300   # seconds a model reply may take (CPU, busy machine)
WIDTH = 900           # CSS px the pages are laid out at, and the width of the PNGs
MAX_HEIGHT = 2000
MAX_BYTES = 150_000

CHAT_MODEL = 'ppo'
CHAT_TURNS = ('Tom has 3 apples and buys 4 more. How many apples does he have?',
              'What color is the banana?')
ARENA_PROMPT = 'What does the quogub eat?'   # a creature of the embedded world (seed 0)
STAGE_ORDER = ('ppo', 'dpo', 'sft', 'pretrain')   # auto vote: the later stage is better


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


# ---- processes ----------------------------------------------------------------------------------

def run_cli(args: list, what: str) -> str:
  """`python -m ...` with the repo importable; its stdout, or exit with its output on failure."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-m'] + args, cwd=ROOT, env=env, capture_output=True,
                        text=True)
  if proc.returncode != 0:
    sys.exit(f'{what} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}')
  return proc.stdout


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_server(workdir: str, db: str, log_path: str, timeout: float = 300):
  """`python -m lmresearch.serve` on a free port; (process, base URL) once /v1/models answers."""
  port = free_port()
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  with open(log_path, 'w') as out:
    proc = subprocess.Popen([sys.executable, '-m', 'lmresearch.serve', f'--workdir={workdir}',
                             f'--db={db}', f'--port={port}'], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT)
  url = f'http://127.0.0.1:{port}'
  deadline = time.time() + timeout
  while True:
    try:
      with urllib.request.urlopen(url + '/v1/models', timeout=2) as r:
        names = [m['id'] for m in json.load(r)['data']]
        return proc, url, names
    except (urllib.error.URLError, OSError, ValueError):
      pass
    if proc.poll() is not None or time.time() > deadline:
      stop_server(proc)
      with open(log_path) as f:
        sys.exit(f'the server did not start:\n{f.read()[-3000:]}')
    time.sleep(0.5)


def stop_server(proc) -> None:
  if proc.poll() is None:
    proc.terminate()
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


# ---- the browser (as tests/test_browser.py) -----------------------------------------------------

def make_driver(chromium: str, chromedriver: str):
  from selenium import webdriver
  from selenium.webdriver.chrome.options import Options
  from selenium.webdriver.chrome.service import Service
  options = Options()
  options.binary_location = chromium
  for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
              '--window-size=1200,900', '--force-device-scale-factor=1', '--lang=en-US'):
    options.add_argument(arg)
  options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
  driver = webdriver.Chrome(options=options, service=Service(chromedriver))
  driver.set_script_timeout(WAIT)
  return driver


def wait_for(driver, condition, what: str, timeout: float = WAIT):
  """condition(driver) once it is truthy; exits saying `what` did not happen."""
  from selenium.webdriver.support.ui import WebDriverWait
  try:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
  except Exception as e:  # TimeoutException, or what the condition raised last
    shown = driver.execute_script(
        "return [...document.querySelectorAll('[role=alert], [role=status]')]"
        ".filter(n => !n.closest('[hidden]')).map(n => n.id + ': ' + n.textContent)"
        ".filter(t => !t.endsWith(': '))")
    raise RuntimeError(f'timed out waiting for {what} ({type(e).__name__}); the page says '
                       f'{shown}') from None


def by_id(driver, id_):
  return driver.find_element('id', id_)


def text_of(driver, id_) -> str:
  return driver.execute_script('return document.getElementById(arguments[0]).textContent', id_)


def js_errors(driver) -> list:
  return [e['message'] for e in driver.get_log('browser')
          if 'Uncaught' in e['message'] or 'Content Security Policy' in e['message']]


def press(driver, *keys):
  from selenium.webdriver.common.action_chains import ActionChains
  ActionChains(driver).send_keys(*keys).perform()


def set_field(driver, id_, value) -> None:
  field = by_id(driver, id_)
  field.clear()
  field.send_keys(str(value))


def sign_in(driver, url, token) -> None:
  driver.get(f'{url}?token={token}')
  wait_for(driver, lambda d: by_id(d, 'app').is_displayed(), 'the page to sign in')


def screenshot(driver, out_dir: str, name: str) -> str:
  """The whole page laid out WIDTH px wide, as a small palette PNG `name`.png in `out_dir`."""
  from PIL import Image
  driver.execute_cdp_cmd('Emulation.setDeviceMetricsOverride',
                         {'width': WIDTH, 'height': 400, 'deviceScaleFactor': 1, 'mobile': False})
  height = driver.execute_script('window.scrollTo(0, 0); '
                                 'return document.documentElement.scrollHeight')
  driver.execute_cdp_cmd('Emulation.setDeviceMetricsOverride', {
      'width': WIDTH, 'height': min(height, MAX_HEIGHT), 'deviceScaleFactor': 1, 'mobile': False})
  # Two animation frames and a moment for the resized page to be painted whole (captured at once,
  # its bottom was sometimes a stale frame: the label page without its Submit button).
  driver.execute_async_script('const done = arguments[0]; requestAnimationFrame(() => '
                              'requestAnimationFrame(() => setTimeout(done, 300)))')
  raw = os.path.join(out_dir, f'.{name}.raw.png')
  try:
    driver.save_screenshot(raw)
  finally:
    driver.execute_cdp_cmd('Emulation.clearDeviceMetricsOverride', {})
  img = Image.open(raw).convert('RGB')
  os.remove(raw)
  if img.width != WIDTH:
    img = img.resize((WIDTH, round(img.height * WIDTH / img.width)), Image.LANCZOS)
  path = os.path.join(out_dir, f'{name}.png')
  for colors in (256, 128, 64, 32, 16):
    img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT,
                 dither=Image.Dither.NONE).save(path, optimize=True)
    if os.path.getsize(path) < MAX_BYTES:
      break
  else:
    raise RuntimeError(f'{path}: {os.path.getsize(path)} bytes even with 16 colours')
  log(f'  wrote {path} ({img.width}x{img.height}, {colors} colours, '
      f'{os.path.getsize(path) // 1024} KB)')
  return path


# ---- the pages ----------------------------------------------------------------------------------

def gold_of(db: str, prompt: str) -> dict:
  """Response text -> gold quality for the item with `prompt` ({} when it has none)."""
  with sqlite3.connect(db) as conn:
    row = conn.execute('SELECT responses, gold FROM items WHERE prompt = ?', (prompt,)).fetchone()
  if not row or not row[1]:
    return {}
  return dict(zip(json.loads(row[0]), json.loads(row[1])))


def label_page(driver, url: str, token: str, db: str, out: str) -> None:
  from selenium.webdriver.common.keys import Keys
  sign_in(driver, f'{url}/label', token)
  wait_for(driver, lambda d: by_id(d, 'task').is_displayed(), 'the first item')
  prompt = text_of(driver, 'prompt')
  cards = driver.find_elements('css selector', '#responses .card')
  texts = {int(c.get_attribute('data-pos')): c.find_element('css selector', '.text').text
           for c in cards}
  gold = gold_of(db, prompt)
  # The ranking to make: best gold first (ties keep the display order); without gold, the
  # last response moved to the top.
  if gold:
    target = sorted(texts, key=lambda pos: (-gold.get(texts[pos], 0), pos))
  else:
    target = [len(texts) - 1] + list(range(len(texts) - 1))

  def ranks():
    return driver.execute_script("return [...document.querySelectorAll('#responses .card')]"
                                 ".map(c => Number(c.dataset.pos))")

  # Keyboard: focus each card in turn and press its rank number.
  for rank, pos in enumerate(target):
    if ranks()[rank] != pos:
      driver.execute_script('arguments[0].focus()', by_id(driver, f'card-{pos}'))
      press(driver, str(rank + 1))
  if ranks() != target:
    raise RuntimeError(f'the keyboard made the order {ranks()}, not {target}')

  letter = lambda pos: 'ABCDEFGHIJKLMNOP'[pos]   # noqa: E731 (as the page names them)
  notes = []
  # Tie the first two neighbours of equal gold (or, without gold, the 2nd with the 1st): `t`.
  tie = next((i for i in range(1, len(target))
              if gold and gold.get(texts[target[i]]) == gold.get(texts[target[i - 1]])),
             None if gold else 1)
  if tie is not None:
    driver.execute_script('arguments[0].focus()', by_id(driver, f'card-{target[tie]}'))
    press(driver, 't')
    wait_for(driver, lambda d: by_id(d, f'card-{target[tie]}')
             .find_element('css selector', '.tie').is_selected(), 'the tie')
    a, b = letter(target[tie - 1]), letter(target[tie])
    notes.append(f'{a} and {b} are equally good.')
  # Flag the last one as wrong (Space on its checkbox), unless the gold says it is as good as
  # the best.
  worst = target[-1]
  if not gold or gold.get(texts[worst], 0) < gold.get(texts[target[0]], 0):
    box = by_id(driver, f'card-{worst}').find_element('css selector', '.flag[value="wrong"]')
    box.send_keys(Keys.SPACE)
    if not box.is_selected():
      raise RuntimeError('the flag was not ticked')
    notes.append(f'{letter(worst)} gets the answer wrong.')
  by_id(driver, 'note').send_keys(' '.join(notes) or 'All about as good.')
  time.sleep(2.5)   # a few seconds on the item's timer
  errors = js_errors(driver)
  if errors:
    log(f'  label page: JavaScript errors {errors}')
  screenshot(driver, out, 'label')


def chat_page(driver, url: str, out: str, seed: int) -> None:
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import Select
  driver.get(f'{url}/chat')
  wait_for(driver, lambda d: CHAT_MODEL in [o.text for o in Select(by_id(d, 'model')).options],
           f'the model {CHAT_MODEL} in the list')
  Select(by_id(driver, 'model')).select_by_visible_text(CHAT_MODEL)
  set_field(driver, 'max_tokens', 64)
  set_field(driver, 'temperature', 0.7)
  set_field(driver, 'seed', seed)
  for n, message in enumerate(CHAT_TURNS, 1):
    by_id(driver, 'message').send_keys(message, Keys.ENTER)
    wait_for(driver, lambda d: len(d.find_elements('css selector', '#conversation .msg')) == 2 * n
             and by_id(d, 'send').is_enabled(), f'reply {n}', timeout=GENERATE_WAIT)
    if by_id(driver, 'error').is_displayed():
      raise RuntimeError(f'the chat page says: {text_of(driver, "error")}')
    reply = driver.find_elements('css selector', '#conversation .msg.assistant .text')[-1].text
    log(f'  {CHAT_MODEL}: {reply!r}')
  by_id(driver, 'message').click()   # the focus back in the composer, as after typing
  errors = js_errors(driver)
  if errors:
    log(f'  chat page: JavaScript errors {errors}')
  screenshot(driver, out, 'chat')


def auto_vote(db: str) -> str:
  """The vote for the later pipeline stage of the last battle (STAGE_ORDER), else a tie."""
  with sqlite3.connect(db) as conn:
    row = conn.execute('SELECT model_a, model_b FROM battles ORDER BY id DESC LIMIT 1').fetchone()
  rank = lambda name: STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER)  # noqa
  if row is None or rank(row[0]) == rank(row[1]):
    return 'tie'
  return 'a' if rank(row[0]) < rank(row[1]) else 'b'


def arena_page(driver, url: str, token: str, db: str, out: str, vote: str,
               prompt: str = ARENA_PROMPT) -> None:
  sign_in(driver, f'{url}/arena', token)
  wait_for(driver, lambda d: 'No votes yet.' in by_id(d, 'models-table').text,
           'the empty ratings')
  set_field(driver, 'temperature', 0.7)
  set_field(driver, 'max_tokens', 64)
  by_id(driver, 'prompt').send_keys(prompt)
  by_id(driver, 'battle').click()
  wait_for(driver, lambda d: by_id(d, 'result').is_displayed(), 'the battle',
           timeout=GENERATE_WAIT)
  log(f"  A: {by_id(driver, 'a-text').text!r}\n  B: {by_id(driver, 'b-text').text!r}")
  if vote == 'auto':
    vote = auto_vote(db)
  driver.find_element('css selector', f'[data-vote="{vote}"]').click()
  wait_for(driver, lambda d: by_id(d, 'after-vote').is_displayed(), 'the names')
  wait_for(driver, lambda d: len(d.find_elements('css selector', '#models-table tbody th')) == 2,
           'the ratings of both models')
  log(f"  vote {vote}: {text_of(driver, 'voted')}")
  errors = js_errors(driver)
  if errors:
    log(f'  arena page: JavaScript errors {errors}')
  screenshot(driver, out, 'arena')


# ---- main ---------------------------------------------------------------------------------------

def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='a pipeline run: pretrain/, sft/, ppo/, ...')
  parser.add_argument('--out', default=os.path.join(ROOT, 'docs', 'serving'))
  parser.add_argument('--items', type=int, default=6, help='label items (--from_world)')
  parser.add_argument('--seed', type=int, default=0, help='the chat sampling seed')
  parser.add_argument('--vote', default='auto', choices=('auto', 'a', 'b', 'tie', 'both_bad'),
                      help='the arena vote; auto: for the later pipeline stage')
  parser.add_argument('--arena_prompt', default=ARENA_PROMPT,
                      help='the battle prompt')
  parser.add_argument('--pages', default='label,chat,arena', help='which screenshots to make')
  parser.add_argument('--chromium', default=shutil.which('chromium') or '/usr/bin/chromium')
  parser.add_argument('--chromedriver',
                      default=shutil.which('chromedriver') or '/usr/bin/chromedriver')
  args = parser.parse_args()
  workdir = os.path.abspath(args.workdir)
  pages = [p for p in args.pages.split(',') if p]
  if set(pages) - {'label', 'chat', 'arena'}:
    parser.error(f'--pages: label, chat and/or arena, not {args.pages}')
  sft = os.path.join(workdir, 'sft')
  if not os.path.isdir(sft):
    parser.error(f'--workdir={args.workdir}: no sft/ run in it (a pipeline workdir is needed)')
  for path in (args.chromium, args.chromedriver):
    if not os.path.exists(path):
      sys.exit(f'{path}: not found (Debian: apt-get install chromium chromium-driver)')
  os.makedirs(args.out, exist_ok=True)
  times = {}
  start = time.time()

  with tempfile.TemporaryDirectory(prefix='lmr-screenshots-') as tmp:
    db = os.path.join(tmp, 'labels.sqlite')
    t = time.time()
    log(f'label store: {args.items} world questions x 4 responses from {sft}')
    run_cli(['lmresearch.label', 'create', f'--from_world={args.items}', f'--workdir={sft}',
             '--k=4', f'--db={db}'], 'label create')
    token = run_cli(['lmresearch.label', 'add-labeler', 'alice', f'--db={db}'],
                    'add-labeler').strip().splitlines()[-1].strip()
    times['label store'] = time.time() - t

    t = time.time()
    server_log = os.path.join(tmp, 'server.log')
    proc, url, names = start_server(workdir, db, server_log)
    times['server start'] = time.time() - t
    log(f'server {url} (pid {proc.pid}): models {names}')
    driver = None
    try:
      if 'chat' in pages and CHAT_MODEL not in names:
        raise RuntimeError(f'the server has no model {CHAT_MODEL!r} (it has {names})')
      driver = make_driver(args.chromium, args.chromedriver)
      for page in pages:
        t = time.time()
        log(f'{page}:')
        if page == 'label':
          label_page(driver, url, token, db, args.out)
        elif page == 'chat':
          chat_page(driver, url, args.out, args.seed)
        else:
          arena_page(driver, url, token, db, args.out, args.vote, args.arena_prompt)
        times[page] = time.time() - t
    except Exception:
      with open(server_log) as f:
        tail = f.read()[-2000:]
      if tail.strip():
        log(f'server log (last lines):\n{tail}')
      raise
    finally:
      if driver is not None:
        driver.quit()
      stop_server(proc)
  times['total'] = time.time() - start
  log('seconds: ' + ', '.join(f'{k} {v:.1f}' for k, v in times.items()))


if __name__ == '__main__':
  main()

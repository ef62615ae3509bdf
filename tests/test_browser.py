"""The label, chat and arena pages in a real headless Chromium (Selenium 4) against a real server.

The server is the app of `lmresearch.serve` (create_app) under uvicorn on a thread of this process:
one per test for the label pages (a fresh store each), one per module for the pages that need
models (the tiny base and SFT runs of `pipeline_dirs`). Without Chromium and its driver (Debian:
`apt-get install chromium chromium-driver`; scripts/test.sh installs them as root) every test
here is skipped and says why (pytest -rs).

LMR_SCREENSHOTS=1 also writes small copies of the pages' screenshots to docs/serving/ (the
screenshots themselves always go to the test's temporary directory).
"""
import contextlib
import os
import shutil
import socket
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, 'docs', 'serving')
WAIT = 20   # seconds any one thing may take to appear

HOSTILE = ['<img src=x onerror=alert(1)>', '<script>window.__pwned=1</script>']


# ---- the browser ------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def driver():
  """Headless Chromium, or a skip saying why there is none."""
  try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
  except ImportError as e:
    pytest.skip(f'selenium is not installed ({e})')
  binary = next((p for p in ('/usr/bin/chromium', shutil.which('chromium'),
                             shutil.which('chromium-browser')) if p and os.path.exists(p)), None)
  chromedriver = next((p for p in ('/usr/bin/chromedriver', shutil.which('chromedriver'))
                       if p and os.path.exists(p)), None)
  if binary is None or chromedriver is None:
    pytest.skip('no Chromium and chromedriver (Debian: apt-get install chromium chromium-driver; '
                'scripts/test.sh installs them when run as root)')
  options = Options()
  options.binary_location = binary
  for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
              '--window-size=1200,900', '--force-device-scale-factor=1', '--lang=en-US'):
    options.add_argument(arg)
  options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
  try:
    browser = webdriver.Chrome(options=options, service=Service(chromedriver))
  except (WebDriverException, OSError) as e:
    why = (getattr(e, 'msg', None) or str(e) or type(e).__name__).splitlines()[0]
    pytest.skip(f'headless Chromium did not start: {why}')
  browser.set_script_timeout(WAIT)
  yield browser
  browser.quit()


def wait_for(driver, condition, what: str, timeout: float = WAIT):
  """condition(driver) once it is truthy; fails saying `what` did not happen."""
  from selenium.webdriver.support.ui import WebDriverWait
  try:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
  except Exception as e:  # TimeoutException, or what the condition raised last
    shown = driver.execute_script(
        "return [...document.querySelectorAll('[role=alert], [role=status]')]"
        ".filter(n => !n.closest('[hidden]')).map(n => n.id + ': ' + n.textContent)"
        ".filter(t => !t.endsWith(': '))")
    raise AssertionError(f'timed out waiting for {what} ({type(e).__name__}); the page says '
                         f'{shown}') from None


def by_id(driver, id_):
  return driver.find_element('id', id_)


def text_of(driver, id_) -> str:
  """An element's text as the DOM holds it (textContent: also right for hidden elements)."""
  return driver.execute_script('return document.getElementById(arguments[0]).textContent', id_)


def js_errors(driver) -> list:
  """Uncaught exceptions and Content-Security-Policy violations logged since the last call."""
  return [e['message'] for e in driver.get_log('browser')
          if 'Uncaught' in e['message'] or 'Content Security Policy' in e['message']]


def assert_not_pwned(driver):
  from selenium.common.exceptions import NoAlertPresentException
  with pytest.raises(NoAlertPresentException):
    driver.switch_to.alert.text
  assert driver.execute_script('return typeof window.__pwned') == 'undefined'
  assert driver.execute_script("return document.querySelectorAll("
                               "'main img, main script').length") == 0


def screenshot(driver, directory, name: str):
  """Saves the whole page as `name`.png under `directory`; with LMR_SCREENSHOTS=1 also a copy
  900 px wide and small (palette PNG) in docs/serving/."""
  # The page laid out 900 px wide and as tall as its content, captured whole.
  driver.execute_cdp_cmd('Emulation.setDeviceMetricsOverride',
                         {'width': 900, 'height': 400, 'deviceScaleFactor': 1, 'mobile': False})
  height = driver.execute_script('window.scrollTo(0, 0); '
                                 'return document.documentElement.scrollHeight')
  driver.execute_cdp_cmd('Emulation.setDeviceMetricsOverride', {
      'width': 900, 'height': min(height, 2000), 'deviceScaleFactor': 1, 'mobile': False})
  path = os.path.join(str(directory), f'{name}.png')
  try:
    driver.save_screenshot(path)
  finally:
    driver.execute_cdp_cmd('Emulation.clearDeviceMetricsOverride', {})
  if os.environ.get('LMR_SCREENSHOTS') == '1':
    from PIL import Image
    os.makedirs(DOCS, exist_ok=True)
    img = Image.open(path).convert('RGB')
    if img.width > 900:
      img = img.resize((900, round(img.height * 900 / img.width)), Image.LANCZOS)
    out = os.path.join(DOCS, f'{name}.png')
    for colors in (256, 128, 64, 32):
      img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT,
                   dither=Image.Dither.NONE).save(out, optimize=True)
      if os.path.getsize(out) < 150_000:
        break
  return path


# ---- servers ------------------------------------------------------------------------------------

def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def serving(app):
  """`app` under uvicorn on a thread; yields its base URL (no trailing slash)."""
  import uvicorn
  server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=free_port(),
                                         log_level='warning', lifespan='on'))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  deadline = time.time() + 60
  while not server.started:
    assert thread.is_alive() and time.time() < deadline, 'the server did not start'
    time.sleep(0.02)
  try:
    yield f'http://127.0.0.1:{server.config.port}'
  finally:
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def label_server(tmp_path):
  """(base URL, Store) of a server with a fresh label store and no models."""
  from lmresearch.web.app import create_app
  from lmresearch.web.store import Store
  db = str(tmp_path / 'labels.sqlite')
  store = Store(db)
  with serving(create_app(None, db)) as url:
    yield url, store


@pytest.fixture(scope='module')
def model_server(pipeline_dirs, tmp_path_factory):
  """(base URL, Store, labeler token) of a server for the tiny base and SFT runs."""
  from lmresearch.web.app import create_app
  from lmresearch.web.store import Store
  db = str(tmp_path_factory.mktemp('arena') / 'labels.sqlite')
  store = Store(db)
  token = store.add_labeler('ari')
  with serving(create_app(str(pipeline_dirs), db, slots=4)) as url:
    yield url, store, token


def sign_in(driver, url, token):
  """Opens `url` (a page) with ?token= and waits for the app to show."""
  driver.get(f'{url}?token={token}')
  wait_for(driver, lambda d: by_id(d, 'app').is_displayed(), 'the page to sign in')


# ---- the label page ---------------------------------------------------------------------------

ITEMS = [
    {'prompt': 'Explain why the sky is blue, in two sentences.',
     'responses': ['Sunlight scatters off air molecules, and blue light scatters the most\n'
                   'because of its short wavelength.',
                   'The sky reflects the ocean.',
                   'Rayleigh scattering: shorter wavelengths scatter more strongly, so the sky '
                   'looks blue from every direction.'],
     'gold': None, 'meta': {}},
    {'prompt': 'Write a haiku about autumn.',
     'responses': ['Leaves drift on cold wind\nthe maple lets go of red\nthe year exhales slow',
                   'Autumn is a season.',
                   'Crisp air, amber light\nsquirrels bury their treasure\nthe long nights return'],
     'gold': None, 'meta': {}},
]


def ranks(driver) -> list:
  """The display positions of the cards, top to bottom."""
  return driver.execute_script(
      "return [...document.querySelectorAll('#responses .card')].map(c => Number(c.dataset.pos))")


def active_id(driver) -> str:
  return driver.execute_script('return document.activeElement.id')


def press(driver, *keys):
  from selenium.webdriver.common.action_chains import ActionChains
  ActionChains(driver).send_keys(*keys).perform()


def chord(driver, modifier, key):
  """`key` pressed while `modifier` is held (ActionChains.send_keys releases each key at once)."""
  from selenium.webdriver.common.action_chains import ActionChains
  ActionChains(driver).key_down(modifier).send_keys(key).key_up(modifier).perform()


def tab_to(driver, id_, backwards=False, most=20):
  """Presses Tab (Shift+Tab) until the element `id_` has the focus."""
  from selenium.webdriver.common.keys import Keys
  for _ in range(most):
    if active_id(driver) == id_:
      return
    if backwards:
      chord(driver, Keys.SHIFT, Keys.TAB)
    else:
      press(driver, Keys.TAB)
  raise AssertionError(f'Tab never reached #{id_} (stuck at #{active_id(driver)})')


def announced(driver, text):
  wait_for(driver, lambda d: text_of(d, 'announce') == text, f'the announcement {text!r}')


# Selenium's ActionChains drag_and_drop moves the mouse with WebDriver input events, which Chrome
# does not turn into HTML5 drag-and-drop events (dragstart/dragover/drop): the page's DnD is
# driven here by dispatching those events, with a real DataTransfer, at the points a drag would
# hit (the drop lands in the upper half of the target card: before it).
DRAG = """
const [source, target] = arguments;
const box = target.getBoundingClientRect();
const at = {clientX: box.left + box.width / 2, clientY: box.top + 4};
const dataTransfer = new DataTransfer();
const fire = (node, type, where) => node.dispatchEvent(new DragEvent(type,
    {bubbles: true, cancelable: true, dataTransfer, ...where}));
fire(source, 'dragstart', {});
fire(target, 'dragenter', at);
fire(target, 'dragover', at);
fire(target, 'drop', at);
fire(source, 'dragend', at);
"""


def test_label_keyboard_then_drag_and_drop(driver, label_server, tmp_path):
  from selenium.webdriver.common.keys import Keys
  url, store = label_server
  token = store.add_labeler('ada')
  item_ids = store.add_items(ITEMS)
  driver.get(f'{url}/label')

  # No token: the login form. A wrong one: the server's 401 message, still the form.
  wait_for(driver, lambda d: by_id(d, 'login').is_displayed(), 'the login form')
  assert active_id(driver) == 'login-token'
  by_id(driver, 'login-token').send_keys('not-a-token', Keys.ENTER)
  wait_for(driver, lambda d: 'labeler token is required' in text_of(d, 'login-message'),
           'the 401 message')
  assert by_id(driver, 'login').is_displayed() and not by_id(driver, 'app').is_displayed()
  by_id(driver, 'login-token').send_keys(token, Keys.ENTER)
  wait_for(driver, lambda d: text_of(d, 'progress-text') == '0 done, 2 left', 'the progress')
  assert text_of(driver, 'who') == 'Signed in as ada'
  assert text_of(driver, 'prompt') == ITEMS[0]['prompt']
  shown = [c.text for c in driver.find_elements('css selector', '#responses .card .text')]
  original = [ITEMS[0]['responses'].index(t) for t in shown]   # display position -> original
  assert sorted(original) == [0, 1, 2]
  # Line breaks are kept (white-space: pre-wrap): the rendered text has them.
  assert ITEMS[0]['responses'][0] in shown

  # Keyboard only: Tab reaches the first card; the keys move the focused card, which keeps the
  # focus; every move is announced.
  driver.execute_script('document.activeElement.blur()')
  tab_to(driver, 'card-0')
  assert ranks(driver) == [0, 1, 2]
  press(driver, Keys.ARROW_DOWN)
  assert ranks(driver) == [1, 0, 2] and active_id(driver) == 'card-0'
  announced(driver, 'Response A moved to rank 2 of 3.')
  press(driver, 'j')
  assert ranks(driver) == [1, 2, 0]
  press(driver, 'k')
  assert ranks(driver) == [1, 0, 2]
  press(driver, Keys.END)
  assert ranks(driver) == [1, 2, 0] and active_id(driver) == 'card-0'
  tab_to(driver, 'card-2', backwards=True)
  press(driver, Keys.HOME)
  assert ranks(driver) == [2, 1, 0] and active_id(driver) == 'card-2'
  press(driver, '3')
  assert ranks(driver) == [1, 0, 2]
  press(driver, '1')
  assert ranks(driver) == [2, 1, 0]
  announced(driver, 'Response C moved to rank 1 of 3.')
  # The rank numbers follow the order.
  assert [driver.execute_script(f"return document.querySelector('#card-{p} .num').textContent")
          for p in (2, 1, 0)] == ['1', '2', '3']

  # Tie B (rank 2) with C above it: `t` on the focused card.
  tab_to(driver, 'card-1')
  press(driver, 't')
  announced(driver, 'Response B tied with Response C.')
  assert by_id(driver, 'card-1').find_element('css selector', '.tie').is_selected()
  assert by_id(driver, 'card-1').find_element('css selector', '.tie-mark').is_displayed()
  # `t` on the first card has nothing to tie with.
  tab_to(driver, 'card-2', backwards=True)
  press(driver, 't')
  announced(driver, 'Response C is first: nothing above to tie with.')

  # Flag A as unsafe (Space on its checkbox) and write a note; Ctrl+Enter submits.
  unsafe = by_id(driver, 'card-0').find_element('css selector', '.flag[value="unsafe"]')
  unsafe.send_keys(Keys.SPACE)
  assert unsafe.is_selected()
  note = 'B and C are about as good.\n<b>not bold</b>'
  by_id(driver, 'note').send_keys(note)   # Enter in the note is a new line, not a submit
  assert driver.execute_script("return document.getElementById('note').value") == note
  assert js_errors(driver) == []
  screenshot(driver, tmp_path, 'label')
  time.sleep(0.3)   # some time on the item
  chord(driver, Keys.CONTROL, Keys.ENTER)
  wait_for(driver, lambda d: text_of(d, 'progress-text') == '1 done, 1 left', 'the next item')
  assert text_of(driver, 'prompt') == ITEMS[1]['prompt']
  assert by_id(driver, 'note').get_attribute('value') == ''
  assert active_id(driver) == 'card-0'   # ready for the keys again

  [sub] = list(store.submissions())
  assert sub['item_id'] == item_ids[0] and sub['labeler'] == 'ada'
  assert sub['display_order'] == original
  assert sub['ranking'] == [original[p] for p in (2, 1, 0)]
  assert sub['ties'] == [sorted([original[2], original[1]])]   # a tie is an unordered pair
  assert sub['flags'] == {str(original[0]): ['unsafe']}
  assert sub['note'] == note
  assert 0.3 <= sub['seconds'] < 60
  labeler_id = sub['labeler_id']
  mine = store.get_submission(labeler_id, sub['submission_id'])   # in display positions
  assert mine['ranking'] == [2, 1, 0] and mine['ties'] == [[1, 2]]

  # A server error is shown, and the item stays to fix: a note over the limit (the textarea's
  # maxlength stops typing one; the server must still say no).
  driver.execute_script("const n = document.getElementById('note'); n.removeAttribute('maxlength');"
                        "n.value = 'x'.repeat(4001)")
  by_id(driver, 'submit').click()
  wait_for(driver, lambda d: 'note' in text_of(d, 'error'), 'the server error')
  assert by_id(driver, 'error').is_displayed()
  assert text_of(driver, 'progress-text') == '1 done, 1 left'
  assert len(list(store.submissions())) == 1

  # Drag and drop: the last card to the top, then Submit (mouse).
  by_id(driver, 'note').clear()
  cards = driver.find_elements('css selector', '#responses .card')
  driver.execute_script(DRAG, cards[2], cards[0])
  assert ranks(driver) == [2, 0, 1]
  announced(driver, 'Response C moved to rank 1 of 3.')
  by_id(driver, 'submit').click()
  wait_for(driver, lambda d: by_id(d, 'nothing-left').is_displayed(), 'the nothing-left state')
  assert text_of(driver, 'progress-text') == '2 done, 0 left'
  assert active_id(driver) == 'nothing-left-title'
  assert not by_id(driver, 'task').is_displayed()
  assert not by_id(driver, 'error').is_displayed()
  subs = list(store.submissions())
  assert len(subs) == 2
  mine = store.get_submission(labeler_id, subs[1]['submission_id'])
  assert mine['item_id'] == item_ids[1]
  assert mine['ranking'] == [2, 0, 1] and mine['ties'] == [] and mine['flags'] == {}
  assert mine['note'] == ''

  # The token came in through the form, so it was never in the URL; reloading keeps the session.
  driver.refresh()
  wait_for(driver, lambda d: by_id(d, 'nothing-left').is_displayed(), 'the page after a reload')
  by_id(driver, 'signout').click()
  wait_for(driver, lambda d: by_id(d, 'login').is_displayed(), 'the login form after sign-out')
  assert driver.execute_script('return sessionStorage.length') == 0
  assert js_errors(driver) == []


def test_label_page_shows_markup_as_text(driver, label_server):
  url, store = label_server
  token = store.add_labeler('eve')
  prompt = f'Repeat after me: {HOSTILE[0]} {HOSTILE[1]}'
  store.add_items([{'prompt': prompt, 'responses': HOSTILE + ['<b>bold?</b>\n&amp; done'],
                    'gold': None, 'meta': {}}])
  sign_in(driver, f'{url}/label', token)
  # The token left the address bar (and this history entry) at once.
  assert 'token' not in driver.current_url and driver.current_url.endswith('/label')
  wait_for(driver, lambda d: text_of(d, 'prompt') == prompt, 'the prompt')
  shown = [c.text for c in driver.find_elements('css selector', '#responses .card .text')]
  assert sorted(shown) == sorted(HOSTILE + ['<b>bold?</b>\n&amp; done'])
  assert driver.execute_script(
      "return document.querySelectorAll('#responses b, #prompt *').length") == 0
  time.sleep(0.3)   # an onerror handler, had an <img> been made, would have fired by now
  assert_not_pwned(driver)
  assert js_errors(driver) == []


def test_label_nothing_to_do(driver, label_server):
  url, store = label_server
  sign_in(driver, f'{url}/label', store.add_labeler('idle'))
  wait_for(driver, lambda d: by_id(d, 'nothing-left').is_displayed(), 'the nothing-left state')
  assert text_of(driver, 'progress-text') == '0 done, 0 left'
  assert 'You have labeled 0 items' in text_of(driver, 'nothing-left-text')


# ---- chat and arena with stand-in replies (no model needed) -------------------------------------

# Replaces window.fetch for /v1/* and /api/arena/*: hostile text as model output and names, and a
# stream split mid-line that then stays open until the request is aborted (the Stop button).
FAKE_FETCH = r"""
const hostile = arguments[0];
const realFetch = window.fetch;
const json = (body) => new Response(JSON.stringify(body), {headers: {'Content-Type': 'application/json'}});
window.__requests = [];
window.fetch = (path, init = {}) => {
  const url = String(path);
  if (init.body) window.__requests.push({url, body: JSON.parse(init.body)});
  if (url.endsWith('v1/models')) return Promise.resolve(json({object: 'list', data: [
      {id: hostile[0], object: 'model'}, {id: 'plain', object: 'model'}]}));
  if (url.endsWith('v1/chat/completions')) {
    const enc = new TextEncoder();
    const chunk = (content, finish) => 'data: ' + JSON.stringify({id: 'x', object: 'chat.completion.chunk',
        choices: [{index: 0, delta: content === null ? {} : {content}, finish_reason: finish}]}) + '\n\n';
    if (JSON.parse(init.body).max_tokens === 999) {
      // One piece, then nothing until the request is aborted.
      return Promise.resolve(new Response(new ReadableStream({start(controller) {
        controller.enqueue(enc.encode(chunk('partial', null)));
        init.signal.addEventListener('abort', () =>
            controller.error(new DOMException('The user aborted a request.', 'AbortError')));
      }}), {headers: {'Content-Type': 'text/event-stream'}}));
    }
    // The reply in two writes, the first ending inside a data: line.
    const text = chunk(hostile[0], null) + chunk('\n' + hostile[1], null) + chunk(null, 'length') +
        'data: [DONE]\n\n';
    return Promise.resolve(new Response(new ReadableStream({start(controller) {
      controller.enqueue(enc.encode(text.slice(0, 17)));
      setTimeout(() => { controller.enqueue(enc.encode(text.slice(17))); controller.close(); }, 50);
    }}), {headers: {'Content-Type': 'text/event-stream'}}));
  }
  if (url.endsWith('api/arena/battle')) return Promise.resolve(json({battle_id: 7, a: hostile[0], b: hostile[1]}));
  if (url.endsWith('api/arena/vote')) return Promise.resolve(json({model_a: hostile[1], model_b: hostile[0]}));
  if (url.endsWith('api/arena/ratings')) return Promise.resolve(json({
      models: [{model: hostile[0], rating: 1012.5, lo: 990, hi: 1030, battles: 1}],
      pairs: [{a: hostile[0], b: hostile[1], n: 1, a_win_rate: 1, lo: 0.2, hi: 1}]}));
  return realFetch(path, init);
};
"""


def test_chat_stream_stop_and_markup_as_text(driver, label_server):
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import Select
  url, _ = label_server
  driver.get(f'{url}/chat')
  wait_for(driver, lambda d: 'No models served' in text_of(d, 'model'), 'the empty model list')
  driver.execute_script(FAKE_FETCH, HOSTILE)
  driver.execute_script("document.getElementById('api_key').dispatchEvent(new Event('change'))")
  wait_for(driver, lambda d: len(Select(by_id(d, 'model')).options) == 2, 'the models')
  assert Select(by_id(driver, 'model')).options[0].text == HOSTILE[0]

  by_id(driver, 'system').send_keys('Be brief.')
  by_id(driver, 'seed').send_keys('3')
  by_id(driver, 'message').send_keys('say <i>hi</i>', Keys.ENTER)
  reply = HOSTILE[0] + '\n' + HOSTILE[1]
  wait_for(driver, lambda d: len(d.find_elements('css selector', '.msg.assistant .note')) == 1,
           'the end of the reply')
  msgs = driver.find_elements('css selector', '#conversation .msg')
  assert [m.find_element('css selector', '.role').text for m in msgs] == ['You', HOSTILE[0]]
  assert [m.find_element('css selector', '.text').text for m in msgs] == ['say <i>hi</i>', reply]
  assert msgs[1].find_element('css selector', '.note').text == '(cut off at max tokens)'
  [sent] = driver.execute_script('return window.__requests')
  assert sent['body']['messages'] == [{'role': 'system', 'content': 'Be brief.'},
                                      {'role': 'user', 'content': 'say <i>hi</i>'}]
  assert sent['body']['stream'] is True and sent['body']['seed'] == 3
  assert sent['body']['model'] == HOSTILE[0]

  # Stop: the stream stays open after a first piece until the Stop button aborts it.
  max_tokens = by_id(driver, 'max_tokens')
  max_tokens.clear()
  max_tokens.send_keys('999')
  by_id(driver, 'message').send_keys('more', Keys.ENTER)
  wait_for(driver, lambda d: d.find_elements('css selector', '.msg.assistant .text')[-1].text
           == 'partial', 'the first piece')
  assert not by_id(driver, 'stop').get_attribute('disabled')
  by_id(driver, 'stop').click()
  wait_for(driver, lambda d: d.find_elements('css selector', '.msg.assistant .note')[-1].text
           == '(stopped)', 'the stopped reply')
  assert by_id(driver, 'stop').get_attribute('disabled') is not None
  sent = driver.execute_script('return window.__requests')[-1]
  assert [m['role'] for m in sent['body']['messages']] == ['system', 'user', 'assistant', 'user']
  assert sent['body']['messages'][2]['content'] == reply
  assert_not_pwned(driver)

  by_id(driver, 'clear').click()
  assert driver.find_elements('css selector', '#conversation .msg') == []
  assert js_errors(driver) == []


def test_arena_markup_as_text(driver, label_server):
  url, store = label_server
  sign_in(driver, f'{url}/arena', store.add_labeler('mal'))
  driver.execute_script(FAKE_FETCH, HOSTILE)
  by_id(driver, 'prompt').send_keys('fight')
  by_id(driver, 'battle').click()
  wait_for(driver, lambda d: by_id(d, 'result').is_displayed(), 'the battle')
  assert by_id(driver, 'a-text').text == HOSTILE[0] and by_id(driver, 'b-text').text == HOSTILE[1]
  driver.find_element('css selector', '[data-vote="tie"]').click()
  wait_for(driver, lambda d: by_id(d, 'after-vote').is_displayed(), 'the names')
  assert by_id(driver, 'a-name').text == f'({HOSTILE[1]})'
  assert by_id(driver, 'b-name').text == f'({HOSTILE[0]})'
  wait_for(driver, lambda d: d.find_element('css selector', '#models-table tbody th').text
           == HOSTILE[0], 'the ratings')
  assert driver.find_element('css selector', '#pairs-table tbody tr').text.split('\n')[0] \
      .startswith(HOSTILE[0])
  assert_not_pwned(driver)
  assert js_errors(driver) == []


# ---- chat and arena against the tiny trained runs -----------------------------------------------

def test_chat_with_a_model(driver, model_server, tmp_path):
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import Select
  url, _, _ = model_server
  driver.get(f'{url}/chat')
  wait_for(driver, lambda d: {o.text for o in Select(by_id(d, 'model')).options}
           == {'base', 'sft'}, 'the model list')
  Select(by_id(driver, 'model')).select_by_visible_text('sft')
  for field, value in (('max_tokens', '12'), ('temperature', '1'), ('seed', '0')):
    by_id(driver, field).clear()
    by_id(driver, field).send_keys(value)
  # Counts the pieces of text added to the reply while it streams.
  driver.execute_script("""
    window.__pieces = 0;
    new MutationObserver((changes) => { window.__pieces += changes.length; })
      .observe(document.getElementById('conversation'), {characterData: true, subtree: true});""")
  by_id(driver, 'message').send_keys('Hello there!', Keys.ENTER)
  wait_for(driver, lambda d: by_id(d, 'send').is_enabled(), 'the reply to finish', timeout=120)
  assert by_id(driver, 'error').is_displayed() is False, text_of(driver, 'error')
  msgs = driver.find_elements('css selector', '#conversation .msg')
  assert [m.get_attribute('class') for m in msgs] == ['msg user', 'msg assistant']
  assert msgs[0].find_element('css selector', '.text').text == 'Hello there!'
  assert msgs[1].find_element('css selector', '.role').text == 'sft'
  first = driver.execute_script(
      "return document.querySelectorAll('#conversation .msg .text')[1].textContent")
  assert first, 'the model returned nothing'
  assert driver.execute_script('return window.__pieces') >= 2   # one per streamed chunk

  # A second turn: the conversation holds both.
  by_id(driver, 'message').send_keys('And then?', Keys.ENTER)
  wait_for(driver, lambda d: len(d.find_elements('css selector', '#conversation .msg')) == 4
           and by_id(d, 'send').is_enabled(), 'the second reply', timeout=120)
  assert by_id(driver, 'error').is_displayed() is False, text_of(driver, 'error')
  screenshot(driver, tmp_path, 'chat')
  assert js_errors(driver) == []


def test_arena_with_models(driver, model_server, tmp_path):
  url, store, token = model_server
  sign_in(driver, f'{url}/arena', token)
  wait_for(driver, lambda d: 'No votes yet.' in d.find_element('id', 'models-table').text,
           'the empty ratings')
  by_id(driver, 'max_tokens').clear()
  by_id(driver, 'max_tokens').send_keys('12')
  by_id(driver, 'prompt').send_keys('Tell me a story.')
  by_id(driver, 'battle').click()
  wait_for(driver, lambda d: by_id(d, 'result').is_displayed(), 'the battle', timeout=120)
  assert by_id(driver, 'a-name').text == '' and by_id(driver, 'b-name').text == ''
  driver.find_element('css selector', '[data-vote="a"]').click()
  wait_for(driver, lambda d: by_id(d, 'after-vote').is_displayed(), 'the names')
  names = {by_id(driver, 'a-name').text, by_id(driver, 'b-name').text}
  assert names == {'(base)', '(sft)'}
  assert driver.find_element('css selector', '[data-vote="a"]').get_attribute('aria-pressed') \
      == 'true'
  wait_for(driver, lambda d: len(d.find_elements('css selector', '#models-table tbody th')) == 2,
           'the ratings of both models')
  rows = driver.find_elements('css selector', '#models-table tbody tr')
  assert {r.find_element('css selector', 'th').text for r in rows} == {'base', 'sft'}
  assert all(r.find_elements('css selector', 'td')[-1].text == '1' for r in rows)   # battles
  pairs = driver.find_elements('css selector', '#pairs-table tbody tr')
  assert len(pairs) == 1 and pairs[0].find_elements('css selector', 'td')[2].text == '1'
  assert store.votes() and store.votes()[0][2] == 'a'
  screenshot(driver, tmp_path, 'arena')
  # A new battle can start.
  by_id(driver, 'new-battle').click()
  assert not by_id(driver, 'result').is_displayed()
  assert active_id(driver) == 'prompt'
  assert js_errors(driver) == []

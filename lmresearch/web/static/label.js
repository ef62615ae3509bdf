// The label page: rank one prompt's responses best to worst (drag and drop, or the keyboard
// alone), mark ties and flags, add a note, submit, get the next item.
//
// Positions are *display positions*: the index of a response in the list the server sent (it is
// already in this labeler's shuffled order). The ranking sent back is those positions, best first.
'use strict';

(() => {
  const {el, setChildren, api, showError} = LMR;
  const FLAGS = [['wrong', 'Wrong'], ['unsafe', 'Unsafe'], ['off_topic', 'Off-topic']];

  const $ = (id) => document.getElementById(id);
  const list = $('responses');
  const form = $('task');
  const submitButton = $('submit');
  const note = $('note');

  let item = null;          // the item on screen: {item_id, prompt, responses, done, left}
  let order = [];           // display positions, best first
  let cards = [];           // display position -> its <li>
  let ties = new Set();     // "upper,lower" display positions tied with each other, adjacent in `order`
  let busy = false;
  let dragged = null;

  const letter = (pos) => (pos < 26 ? String.fromCharCode(65 + pos) : `#${pos + 1}`);
  const nameOf = (pos) => `Response ${letter(pos)}`;

  function announce(text) {
    // Cleared first so that the same sentence twice is still announced twice.
    const region = $('announce');
    region.textContent = '';
    window.setTimeout(() => { region.textContent = text; }, 30);
  }

  // ---- time on the item: counted only while the page is visible ----------------------------

  const clock = {spent: 0, since: null};
  function startClock() {
    clock.spent = 0;
    clock.since = document.hidden ? null : performance.now();
  }
  function seconds() {
    const running = clock.since === null ? 0 : performance.now() - clock.since;
    return (clock.spent + running) / 1000;
  }
  document.addEventListener('visibilitychange', () => {
    if (document.hidden && clock.since !== null) {
      clock.spent += performance.now() - clock.since;
      clock.since = null;
    } else if (!document.hidden && clock.since === null && item) {
      clock.since = performance.now();
    }
  });
  window.setInterval(() => {
    if (!item) return;
    const s = Math.floor(seconds());
    $('timer').textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  }, 1000);

  // ---- progress -----------------------------------------------------------------------------

  function showProgress(done, left) {
    $('progress-text').textContent = `${done} done, ${left} left`;
    const bar = $('progress-bar');
    bar.max = Math.max(done + left, 1);
    bar.value = done;
  }

  // ---- the cards ----------------------------------------------------------------------------

  function makeCard(pos, text) {
    const id = `card-${pos}`;
    const tie = el('input', {type: 'checkbox', class: 'tie'});
    tie.addEventListener('change', () => setTie(pos, tie.checked));
    const flagBoxes = FLAGS.map(([value, label]) =>
      el('label', {}, el('input', {type: 'checkbox', class: 'flag', value}), label));
    const card = el('li', {
      id, class: 'card', tabindex: 0, draggable: 'true', 'data-pos': pos,
      'aria-labelledby': `${id}-rank ${id}-name`, 'aria-describedby': `${id}-text`,
    },
    el('div', {class: 'rank'},
      el('span', {class: 'num', id: `${id}-rank`}),
      el('span', {class: 'tie-mark', hidden: true}, '= tie'),
      // Pointer shortcuts for the keys; out of the Tab order (the focused card takes the keys).
      el('button', {type: 'button', tabindex: -1, 'aria-label': `Move ${nameOf(pos)} up`,
                    onclick: () => move(pos, order.indexOf(pos) - 1)}, '▲'),
      el('button', {type: 'button', tabindex: -1, 'aria-label': `Move ${nameOf(pos)} down`,
                    onclick: () => move(pos, order.indexOf(pos) + 1)}, '▼')),
    el('div', {class: 'card-body'},
      el('div', {class: 'card-head'}, el('span', {class: 'name', id: `${id}-name`}, nameOf(pos))),
      el('p', {class: 'text', id: `${id}-text`}, text),
      el('div', {class: 'card-controls'},
        el('label', {}, tie, 'Tied with the one above'),
        el('span', {class: 'flags', role: 'group', 'aria-label': `Flags for ${nameOf(pos)}`},
          flagBoxes))));
    return card;
  }

  /** Puts the cards in `order` and refreshes ranks and tie marks (focus stays where it was). */
  function layout() {
    const focused = document.activeElement;
    order.forEach((pos) => list.appendChild(cards[pos]));
    if (focused && list.contains(focused)) focused.focus();
    order.forEach((pos, rank) => {
      const card = cards[pos];
      const isTied = rank > 0 && ties.has(`${order[rank - 1]},${pos}`);
      card.querySelector('.num').textContent = String(rank + 1);
      card.querySelector('.tie-mark').hidden = !isTied;
      card.classList.toggle('tied', isTied);
      const box = card.querySelector('.tie');
      box.checked = isTied;
      box.disabled = rank === 0;
    });
  }

  /** Moves the response at display position `pos` to rank index `to` (clamped). */
  function move(pos, to) {
    const from = order.indexOf(pos);
    to = Math.max(0, Math.min(order.length - 1, to));
    if (from < 0 || to === from) return;
    order.splice(from, 1);
    order.splice(to, 0, pos);
    // A tie survives a move only between responses still next to each other.
    const kept = new Set();
    for (let r = 1; r < order.length; r++) {
      const [a, b] = [order[r - 1], order[r]];
      if (ties.has(`${a},${b}`) || ties.has(`${b},${a}`)) kept.add(`${a},${b}`);
    }
    ties = kept;
    layout();
    announce(`${nameOf(pos)} moved to rank ${to + 1} of ${order.length}.`);
  }

  function setTie(pos, on) {
    const rank = order.indexOf(pos);
    if (rank <= 0) { layout(); return; }
    const key = `${order[rank - 1]},${pos}`;
    if (on) ties.add(key); else ties.delete(key);
    layout();
    announce(on ? `${nameOf(pos)} tied with ${nameOf(order[rank - 1])}.`
                : `${nameOf(pos)} no longer tied.`);
  }

  // Keys on a focused card (not on the checkboxes inside it).
  list.addEventListener('keydown', (event) => {
    const card = event.target;
    if (!card.classList || !card.classList.contains('card')) return;
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const pos = Number(card.dataset.pos);
    const rank = order.indexOf(pos);
    const key = event.key;
    if (key === 'ArrowUp' || key === 'k') move(pos, rank - 1);
    else if (key === 'ArrowDown' || key === 'j') move(pos, rank + 1);
    else if (key === 'Home') move(pos, 0);
    else if (key === 'End') move(pos, order.length - 1);
    else if (/^[1-9]$/.test(key) && Number(key) <= order.length) move(pos, Number(key) - 1);
    else if (key === 't' || key === '=') {
      if (rank === 0) announce(`${nameOf(pos)} is first: nothing above to tie with.`);
      else setTie(pos, !ties.has(`${order[rank - 1]},${pos}`));
    } else return;
    event.preventDefault();
  });

  // ---- drag and drop (HTML5) ----------------------------------------------------------------

  function clearDropMarks() {
    for (const card of cards) card.classList.remove('drop-before', 'drop-after');
  }

  /** Where a drop at height `y` lands: the rank index among the other cards. */
  function dropIndex(y) {
    const others = order.filter((pos) => cards[pos] !== dragged);
    for (let i = 0; i < others.length; i++) {
      const box = cards[others[i]].getBoundingClientRect();
      if (y < box.top + box.height / 2) return i;
    }
    return others.length;
  }

  list.addEventListener('dragstart', (event) => {
    const card = event.target.closest && event.target.closest('.card');
    if (!card) return;
    dragged = card;
    card.classList.add('dragging');
    if (event.dataTransfer) {
      event.dataTransfer.effectAllowed = 'move';
      event.dataTransfer.setData('text/plain', nameOf(Number(card.dataset.pos)));
    }
  });
  list.addEventListener('dragover', (event) => {
    if (!dragged) return;
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = 'move';
    clearDropMarks();
    const others = order.filter((pos) => cards[pos] !== dragged);
    const at = dropIndex(event.clientY);
    if (at < others.length) cards[others[at]].classList.add('drop-before');
    else if (others.length) cards[others[others.length - 1]].classList.add('drop-after');
  });
  list.addEventListener('drop', (event) => {
    if (!dragged) return;
    event.preventDefault();
    const pos = Number(dragged.dataset.pos);
    move(pos, dropIndex(event.clientY));
    dragged.focus();
  });
  list.addEventListener('dragend', () => {
    if (dragged) dragged.classList.remove('dragging');
    dragged = null;
    clearDropMarks();
  });

  // ---- loading and submitting ---------------------------------------------------------------

  function fail(error) {
    if (error.status === 401) showLogin(error.message);
    else showError($('error'), error);
  }

  function show(next) {
    showProgress(next.done, next.left);
    if (next.item_id === null || next.item_id === undefined) {
      item = null;
      form.hidden = true;
      $('nothing-left').hidden = false;
      $('nothing-left-text').textContent =
        `You have labeled ${next.done} item${next.done === 1 ? '' : 's'}. Thank you!`;
      announce('Nothing left to label.');
      return;
    }
    item = next;
    order = next.responses.map((_, pos) => pos);
    ties = new Set();
    cards = next.responses.map((text, pos) => makeCard(pos, text));
    setChildren(list);
    layout();
    $('prompt').textContent = next.prompt;
    note.value = '';
    $('timer').textContent = '0:00';
    $('nothing-left').hidden = true;
    form.hidden = false;
    startClock();
  }

  async function loadNext() {
    const next = await api('api/label/next');
    showError($('error'), null);
    show(next);
  }

  async function start() {
    showError($('error'), null);
    try {
      const me = await api('api/label/me');
      $('who').textContent = `Signed in as ${me.name}`;
      showProgress(me.done, me.left);
      await loadNext();
    } catch (error) {
      fail(error);
    }
  }

  async function submit() {
    if (!item || busy) return;
    busy = true;
    submitButton.disabled = true;
    $('saved').textContent = '';
    const flags = {};
    cards.forEach((card, pos) => {
      const on = [...card.querySelectorAll('.flag:checked')].map((box) => box.value);
      if (on.length) flags[String(pos)] = on;
    });
    const body = {
      item_id: item.item_id,
      ranking: order.slice(),
      ties: order.slice(1).map((pos, r) => [order[r], pos])
        .filter(([upper, lower]) => ties.has(`${upper},${lower}`)),
      flags,
      note: note.value,
      seconds: Math.round(seconds() * 10) / 10,
    };
    try {
      const saved = await api('api/label/submit', {method: 'POST', body});
      $('saved').textContent = `Saved (${saved.done} done, ${saved.left} left).`;
      announce(`Saved. ${saved.done} done, ${saved.left} left.`);
      await loadNext();
      if (item) cards[order[0]].focus();
      else $('nothing-left-title').focus();
    } catch (error) {
      fail(error);
    } finally {
      busy = false;
      submitButton.disabled = false;
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey) && !form.hidden) {
      event.preventDefault();
      submit();
    }
  });

  const showLogin = LMR.setupLogin(start);
  LMR.takeTokenFromUrl();
  if (LMR.token()) {
    $('app').hidden = false;
    $('signout').hidden = false;
    start();
  } else {
    showLogin('');
  }
})();

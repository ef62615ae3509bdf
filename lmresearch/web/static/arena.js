// The arena page: two anonymous models answer one prompt side by side; the labeler votes, the
// names are revealed, and the Bradley-Terry ratings (with bootstrap intervals) are refreshed.
'use strict';

(() => {
  const {el, setChildren, api, showError} = LMR;
  const $ = (id) => document.getElementById(id);
  const errorBox = $('error');
  const voteButtons = [...document.querySelectorAll('[data-vote]')];

  let battleId = null;      // the battle on screen, until it is voted on

  function fail(error) {
    if (error.status === 401) showLogin(error.message);
    else showError(errorBox, error);
  }

  function number(id) {
    const raw = $(id).value.trim();
    const value = Number(raw);
    return raw === '' || !Number.isFinite(value) ? undefined : value;
  }

  // ---- battles and votes --------------------------------------------------------------------

  async function battle() {
    const prompt = $('prompt').value;
    if (!prompt.trim()) {
      $('prompt').focus();
      return;
    }
    showError(errorBox, null);
    $('battle').disabled = true;
    $('state').textContent = 'Both models are answering…';
    try {
      const result = await api('api/arena/battle', {method: 'POST', body: {
        prompt, temperature: number('temperature'), max_tokens: number('max_tokens')}});
      battleId = result.battle_id;
      $('a-text').textContent = result.a;
      $('b-text').textContent = result.b;
      $('a-name').textContent = '';
      $('b-name').textContent = '';
      for (const button of voteButtons) {
        button.disabled = false;
        button.setAttribute('aria-pressed', 'false');
      }
      $('after-vote').hidden = true;
      $('result').hidden = false;
      $('state').textContent = 'Which answer is better?';
      voteButtons[0].focus();
    } catch (error) {
      $('state').textContent = '';
      fail(error);
    } finally {
      $('battle').disabled = false;
    }
  }

  async function vote(choice, button) {
    if (battleId === null) return;
    for (const b of voteButtons) b.disabled = true;
    showError(errorBox, null);
    try {
      const result = await api('api/arena/vote', {method: 'POST',
                                                   body: {battle_id: battleId, vote: choice}});
      battleId = null;
      button.setAttribute('aria-pressed', 'true');
      $('a-name').textContent = `(${result.model_a})`;
      $('b-name').textContent = `(${result.model_b})`;
      $('voted').textContent = `Thanks! Model A was ${result.model_a}, Model B was ${result.model_b}.`;
      $('after-vote').hidden = false;
      $('state').textContent = '';
      $('new-battle').focus();
      await loadRatings();
    } catch (error) {
      for (const b of voteButtons) b.disabled = false;
      fail(error);
    }
  }

  function newBattle() {
    $('result').hidden = true;
    $('prompt').focus();
    $('prompt').select();
  }

  // ---- ratings ------------------------------------------------------------------------------

  const fixed = (x) => (typeof x !== 'number' || !Number.isFinite(x) ? '–'
    : Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(2));
  const percent = (x) => (typeof x !== 'number' || !Number.isFinite(x) ? '–'
    : `${Math.round(x * 100)}%`);
  const cell = (text, numeric) => el('td', {class: numeric ? 'num' : null}, text);

  function fill(table, rows, columns) {
    const body = table.querySelector('tbody');
    if (!rows.length) {
      setChildren(body, el('tr', {}, el('td', {colspan: columns, class: 'empty-row'}, 'No votes yet.')));
    } else {
      setChildren(body, rows);
    }
  }

  async function loadRatings() {
    try {
      const ratings = await api('api/arena/ratings');
      fill($('models-table'), (ratings.models || []).map((m) => el('tr', {},
        el('th', {scope: 'row'}, m.model),
        cell(fixed(m.rating), true),
        cell(m.lo == null ? '–' : `[${fixed(m.lo)}, ${fixed(m.hi)}]`, true),
        cell(String(m.battles), true))), 4);
      fill($('pairs-table'), (ratings.pairs || []).map((p) => el('tr', {},
        cell(p.a), cell(p.b),
        cell(String(p.n), true),
        cell(percent(p.a_win_rate), true),
        cell(`[${percent(p.lo)}, ${percent(p.hi)}]`, true))), 5);
    } catch (error) {
      fail(error);
    }
  }

  async function start() {
    showError(errorBox, null);
    try {
      const me = await api('api/label/me');
      $('who').textContent = `Signed in as ${me.name}`;
      await loadRatings();
    } catch (error) {
      fail(error);
    }
  }

  $('battle-form').addEventListener('submit', (event) => {
    event.preventDefault();
    battle();
  });
  $('prompt').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      battle();
    }
  });
  for (const button of voteButtons) {
    button.addEventListener('click', () => vote(button.dataset.vote, button));
  }
  $('new-battle').addEventListener('click', newBattle);

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

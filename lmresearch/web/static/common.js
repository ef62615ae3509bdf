// Shared by the label, chat and arena pages: building elements, the labeler's token, JSON calls
// with the server's {"error": {"message", "type"}} errors, and reading server-sent events.
//
// Everything that comes from the server or a person (prompts, model output, notes, error
// messages, model names) is only ever put on the page as text (text nodes / textContent), never
// parsed as markup: no innerHTML anywhere in these pages.
'use strict';

const LMR = (() => {
  const TOKEN_KEY = 'lmr.labeler_token';

  /** el('p', {class: 'x', onclick: f}, 'some text', child) -> a new element.
   *  Attributes are set with setAttribute (true -> present, false/null -> absent), `on*` keys add
   *  listeners, and every string child becomes a text node. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') {
        node.addEventListener(key.slice(2), value);
      } else {
        node.setAttribute(key, value === true ? '' : String(value));
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Replaces the children of `node` (strings become text nodes). */
  function setChildren(node, ...children) {
    node.replaceChildren();
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  // ---- the labeler's token ------------------------------------------------------------------
  // A link like /label?token=... hands the page its token: it is kept in this tab's
  // sessionStorage and taken out of the address bar (and the history entry) at once.

  function takeTokenFromUrl() {
    const url = new URL(window.location.href);
    if (!url.searchParams.has('token')) return;
    const token = url.searchParams.get('token').trim();
    url.searchParams.delete('token');
    window.history.replaceState(window.history.state, '', url.pathname + url.search + url.hash);
    if (token) setToken(token);
  }

  function token() { return window.sessionStorage.getItem(TOKEN_KEY) || ''; }
  function setToken(value) { window.sessionStorage.setItem(TOKEN_KEY, value); }
  function clearToken() { window.sessionStorage.removeItem(TOKEN_KEY); }

  // ---- JSON calls ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, type, message) {
      super(message);
      this.name = 'ApiError';
      this.status = status;   // 0: the server could not be reached
      this.type = type;
    }
  }

  async function errorFrom(response) {
    let message = `${response.status} ${response.statusText}`.trim();
    let type = 'http_error';
    try {
      const body = await response.json();
      if (body && body.error) {
        message = body.error.message || message;
        type = body.error.type || type;
      } else if (body && body.detail) {
        message = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
      }
    } catch (e) { /* not JSON: keep the status line */ }
    return new ApiError(response.status, type, message);
  }

  /** fetch() that sends `body` as JSON and `auth` as a bearer token, and throws an ApiError for
   *  a response that is not 2xx (an AbortError passes through untouched). Paths are relative to
   *  the page, so the app also works mounted under a prefix. */
  async function request(path, {method = 'GET', body, auth, signal} = {}) {
    const headers = {Accept: 'application/json, text/event-stream'};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth) headers.Authorization = `Bearer ${auth}`;
    let response;
    try {
      response = await fetch(path, {
        method, headers, signal,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network_error', `Could not reach the server (${e.message}).`);
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  /** A JSON call to /api/* with the labeler's token. */
  async function api(path, options = {}) {
    const response = await request(path, {...options, auth: token()});
    return response.json();
  }

  // ---- server-sent events -------------------------------------------------------------------

  /** Yields the `data` of each event of a text/event-stream response as it arrives (an event's
   *  data lines joined by newlines; comments and other fields ignored). Stopping the loop early,
   *  or aborting the fetch, cancels the stream. */
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let data = [];
    try {
      for (;;) {
        const {value, done} = await reader.read();
        buffer += decoder.decode(value || new Uint8Array(), {stream: !done});
        const lines = buffer.split('\n');
        buffer = done ? '' : lines.pop();   // the last piece may be half a line
        for (let line of lines) {
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') {
            if (data.length) yield data.join('\n');
            data = [];
          } else if (line.startsWith('data:')) {
            data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
          }
        }
        if (done) {
          if (data.length) yield data.join('\n');
          return;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // ---- the login form (label and arena pages) -----------------------------------------------

  /** Wires the page's #login form. `onLogin` runs after a token is entered; the returned
   *  function shows the form (hiding #app) with a message, e.g. the server's 401 message. */
  function setupLogin(onLogin) {
    const section = document.getElementById('login');
    const form = document.getElementById('login-form');
    const input = document.getElementById('login-token');
    const message = document.getElementById('login-message');
    const app = document.getElementById('app');
    const signout = document.getElementById('signout');

    function show(text) {
      clearToken();
      app.hidden = true;
      signout.hidden = true;
      document.getElementById('who').textContent = '';
      section.hidden = false;
      message.textContent = text || '';
      message.hidden = !text;
      input.focus();
    }

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) {
        message.textContent = 'Enter your labeler token.';
        message.hidden = false;
        input.focus();
        return;
      }
      setToken(value);
      input.value = '';
      section.hidden = true;
      app.hidden = false;
      signout.hidden = false;
      onLogin();
    });
    signout.addEventListener('click', () => show('Signed out.'));
    return show;
  }

  /** Shows `error` in the element (an alert region), or hides it when `error` is empty. */
  function showError(node, error) {
    const text = error ? (error.message || String(error)) : '';
    node.textContent = text;
    node.hidden = !text;
  }

  return {el, setChildren, takeTokenFromUrl, token, setToken, clearToken, ApiError, request, api,
          events, setupLogin, showError};
})();

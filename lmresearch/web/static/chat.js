// The chat page: a conversation with one of the served models through the OpenAI-compatible API
// (/v1/models, /v1/chat/completions with stream: true), the reply streamed in as it is generated.
'use strict';

(() => {
  const {el, setChildren, request, events, showError, ApiError} = LMR;
  const KEY = 'lmr.api_key';
  const $ = (id) => document.getElementById(id);
  const conversation = $('conversation');
  const input = $('message');
  const errorBox = $('error');

  let messages = [];        // the conversation so far: [{role, content}], without the system prompt
  let controller = null;    // the AbortController of the reply being streamed
  let generation = 0;       // bumped by Clear, so a reply still finishing is not added afterwards

  // ---- settings -----------------------------------------------------------------------------

  const apiKey = () => $('api_key').value.trim();
  $('api_key').value = window.sessionStorage.getItem(KEY) || '';
  $('api_key').addEventListener('change', () => {
    window.sessionStorage.setItem(KEY, apiKey());
    loadModels();
  });

  /** The number in input `id`, or undefined when it is empty or not a number. */
  function number(id) {
    const raw = $(id).value.trim();
    if (raw === '') return undefined;
    const value = Number(raw);
    return Number.isFinite(value) ? value : undefined;
  }

  async function loadModels() {
    const select = $('model');
    const previous = select.value;
    try {
      const response = await request('v1/models', {auth: apiKey()});
      const ids = (await response.json()).data.map((model) => model.id);
      if (ids.length) {
        setChildren(select, ids.map((id) => el('option', {value: id}, id)));
        if (ids.includes(previous)) select.value = previous;
      } else {
        setChildren(select, el('option', {value: ''}, 'No models served'));
      }
      showError(errorBox, null);
    } catch (error) {
      setChildren(select, el('option', {value: ''}, 'Unavailable'));
      showError(errorBox, error.status === 401
        ? `${error.message} (enter the server's API key in the settings)` : error);
    }
  }

  // ---- the conversation ---------------------------------------------------------------------

  function nearBottom() {
    return conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 40;
  }

  /** Adds a message to the view: {node, body} (body: the <p> holding its text). */
  function bubble(role, who, text) {
    const empty = conversation.querySelector('.empty');
    if (empty) empty.remove();
    const body = el('p', {class: 'text'}, text);
    const node = el('div', {class: `msg ${role}`}, el('span', {class: 'role'}, who), body);
    conversation.appendChild(node);
    conversation.scrollTop = conversation.scrollHeight;
    return {node, body};
  }

  function clear() {
    if (controller) controller.abort();
    generation += 1;
    messages = [];
    setChildren(conversation, el('p', {class: 'empty'}, 'Pick a model and say something.'));
    showError(errorBox, null);
    $('state').textContent = 'Conversation cleared.';
    input.focus();
  }

  function setStreaming(on) {
    $('send').disabled = on;
    $('stop').disabled = !on;
    $('state').textContent = on ? 'Generating…' : '';
  }

  async function send() {
    const text = input.value;
    const model = $('model').value;
    if (!text.trim() || controller) return;
    if (!model) {
      showError(errorBox, 'No model to chat with.');
      return;
    }
    showError(errorBox, null);
    input.value = '';
    const mine = generation;
    messages.push({role: 'user', content: text});
    const question = bubble('user', 'You', text);
    const answer = bubble('assistant', model, '');
    const streamed = document.createTextNode('');
    answer.body.appendChild(streamed);
    answer.node.setAttribute('aria-busy', 'true');   // announced once, when complete

    const system = $('system').value.trim();
    const body = {
      model,
      messages: (system ? [{role: 'system', content: system}] : []).concat(messages),
      stream: true,
      max_tokens: number('max_tokens'),
      temperature: number('temperature'),
      top_p: number('top_p'),
    };
    const seed = number('seed');
    if (seed !== undefined) body.seed = Math.trunc(seed);

    controller = new AbortController();
    setStreaming(true);
    let content = '';
    let finish = null;
    let stopped = false;
    let failure = null;
    try {
      const response = await request('v1/chat/completions',
                                     {method: 'POST', body, auth: apiKey(), signal: controller.signal});
      for await (const data of events(response)) {
        if (data === '[DONE]') break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(0, chunk.error.type, chunk.error.message);
        const choice = (chunk.choices || [])[0];
        if (!choice) continue;
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          const follow = nearBottom();
          content += piece;
          streamed.appendData(piece);
          if (follow) conversation.scrollTop = conversation.scrollHeight;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    } catch (error) {
      if (error.name === 'AbortError') stopped = true;
      else failure = error;
    } finally {
      controller = null;
      setStreaming(false);
      answer.node.removeAttribute('aria-busy');
    }
    if (mine !== generation) return;   // cleared meanwhile

    if (!content) {
      // Nothing came back: take the turn back so that it can be sent again.
      messages.pop();
      question.node.remove();
      answer.node.remove();
      if (!conversation.querySelector('.msg')) {
        setChildren(conversation, el('p', {class: 'empty'}, 'Pick a model and say something.'));
      }
      input.value = text;
      if (failure) showError(errorBox, failure);
      else $('state').textContent = stopped ? 'Stopped.' : 'The model returned nothing.';
      return;
    }
    messages.push({role: 'assistant', content});
    const why = stopped ? 'stopped' : failure ? `error: ${failure.message}`
      : finish === 'length' ? 'cut off at max tokens' : null;
    if (why) answer.node.appendChild(el('span', {class: 'note'}, `(${why})`));
    if (failure) showError(errorBox, failure);
  }

  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    send();
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $('stop').addEventListener('click', () => { if (controller) controller.abort(); });
  $('clear').addEventListener('click', clear);

  loadModels();
})();

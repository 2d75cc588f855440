// DOM helpers: elements are built with properties and text nodes, never from HTML strings, so
// nothing the api returns can become markup.
import { NetworkError, Problem } from './api.js';

let ids = 0;

/** A new element: `h('button', {type: 'submit'}, 'Create')`. `on*` attributes are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== 'string') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces `el`'s children (nested arrays flattened, null and false left out). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

/**
 * A labelled control with its own error slot: `name` is the api's field name, so a problem's
 * `errors[].field` lands next to it.
 */
export function field(label, control, { name, hint } = {}) {
  const id = control.id || uid('f');
  control.id = id;
  const errorId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  control.setAttribute('aria-describedby', [hintId, errorId].filter(Boolean).join(' '));
  if (name) control.dataset.field = name;
  const isCheck = control.type === 'checkbox';
  const labelEl = h('label', { for: id }, label);
  return h('div', { class: isCheck ? 'field check' : 'field', dataset: name ? { fieldFor: name } : {} },
    isCheck ? [control, labelEl] : [labelEl, control],
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
    h('p', { class: 'field-error', id: errorId }));
}

/** A form with an alert slot at its top for problems that name no field. */
export function form(attrs, ...children) {
  const alert = h('div', { class: 'alert', role: 'alert' });
  const el = h('form', { novalidate: true, ...attrs }, alert, ...children);
  el.alertSlot = alert;
  return el;
}

export function clearErrors(formEl) {
  if (formEl.alertSlot) formEl.alertSlot.replaceChildren();
  for (const slot of formEl.querySelectorAll('.field-error')) slot.textContent = '';
  for (const control of formEl.querySelectorAll('[aria-invalid]')) control.removeAttribute('aria-invalid');
}

/** The api field name's control in `formEl` (`redirect_uris[1]` → `redirect_uris`). */
function controlFor(formEl, fieldName) {
  const base = String(fieldName || '').split(/[.[]/)[0];
  return base ? formEl.querySelector(`[data-field="${CSS.escape(base)}"]`) : null;
}

/**
 * Shows `error` in `target` (an element, or a form from {@link form}): the problem's detail,
 * each field's message next to its field, or for a network error a "Retry" button calling
 * `retry`.
 */
export function showError(target, error, retry) {
  const slot = target.alertSlot || target;
  slot.replaceChildren();
  if (error instanceof NetworkError) {
    slot.append(h('p', {}, 'The api cannot be reached. Check your connection, then retry.'));
    if (retry) slot.append(h('button', { type: 'button', onclick: () => retry() }, 'Retry'));
    return;
  }
  if (!(error instanceof Problem)) {
    slot.append(h('p', {}, `Something went wrong: ${error && error.message ? error.message : error}`));
    if (retry) slot.append(h('button', { type: 'button', onclick: () => retry() }, 'Retry'));
    return;
  }
  slot.append(h('p', {}, error.detail));
  const unplaced = [];
  for (const fe of error.errors) {
    const control = target.tagName === 'FORM' ? controlFor(target, fe.field) : null;
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      const errorSlot = document.getElementById(`${control.id}-error`);
      if (errorSlot) {
        errorSlot.textContent = errorSlot.textContent ? `${errorSlot.textContent} ${fe.message}` : fe.message;
        continue;
      }
    }
    unplaced.push(fe);
  }
  if (unplaced.length) {
    slot.append(h('ul', {}, unplaced.map((fe) => h('li', {}, `${fe.field}: ${fe.message}`))));
  }
  const first = target.querySelector && target.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
}

/**
 * Runs `action` for a submitted form: the button is disabled meanwhile, errors are shown in the
 * form, and a network error's "Retry" submits again.
 */
export function onSubmit(formEl, action) {
  formEl.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(formEl);
    const buttons = [...formEl.querySelectorAll('button')];
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await action(new FormData(formEl));
    } catch (error) {
      showError(formEl, error, () => formEl.requestSubmit());
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
  return formEl;
}

/** A button running `action`, its errors shown in `errorSlot`. */
export function actionButton(label, action, errorSlot, attrs = {}) {
  const button = h('button', { type: 'button', ...attrs }, label);
  button.addEventListener('click', async () => {
    errorSlot.replaceChildren();
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      showError(errorSlot, error, () => button.click());
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

export function badge(value) {
  return h('span', { class: `badge state-${value}` }, value);
}

export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return h('time', { datetime: iso }, date.toLocaleString());
}

export function select(options, selected, attrs = {}) {
  return h('select', attrs, options.map(([value, label]) => h('option', { value, selected: value === selected }, label)));
}

export function input(attrs = {}) {
  return h('input', { type: 'text', ...attrs });
}

/** A page: its heading and an alert slot for loading errors. */
export function page(title, ...children) {
  const main = document.getElementById('main');
  const alert = h('div', { class: 'alert', role: 'alert' });
  const heading = h('h1', {}, title);
  fill(main, heading, alert, children);
  document.title = `${title} · appreg developer portal`;
  return { main, alert, heading };
}

export function say(message) {
  const notice = document.getElementById('notice');
  if (notice) notice.textContent = message;
}

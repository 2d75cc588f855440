// "My applications" (search, type, status, sort; paged) and "Create application" (a form driven
// by GET /application-types).
import { envPath, get, post, query } from './api.js';
import * as live from './live.js';
import {
  fill, badge, field, form, h, input, onSubmit, page, select, showError,
} from './ui.js';

const PAGE_SIZE = 20;

export const TYPE_LABELS = {
  simple: 'Simple',
  browser: 'Browser (single-page application)',
  web: 'Web',
  native: 'Native',
  backend_to_backend: 'Backend to backend',
};

const GRANT_LABELS = {
  authorization_code: 'Authorization code',
  client_credentials: 'Client credentials',
  refresh_token: 'Refresh token',
  implicit: 'Implicit',
  password: 'Password',
  'urn:ietf:params:oauth:grant-type:jwt-bearer': 'JWT bearer',
  'urn:ietf:params:oauth:grant-type:device_code': 'Device code',
};

export function grantLabel(grant) {
  return GRANT_LABELS[grant] || grant;
}

function applicationRow(app) {
  return h('tr', {},
    h('td', {}, h('a', { href: `#/applications/${encodeURIComponent(app.id)}` }, app.name)),
    h('td', {}, TYPE_LABELS[app.type] || app.type),
    h('td', {}, badge(app.status)),
    h('td', {}, app.registration ? badge(app.registration.state) : '—'),
    h('td', {}, app.role || (app.permissions ? 'administrator' : '')));
}

export async function applicationsPage({ session, onLeave }) {
  const search = input({ type: 'search', name: 'q', maxlength: 200 });
  const status = select([['ACTIVE', 'Active'], ...(session.admin ? [['ARCHIVED', 'Archived']] : [])], 'ACTIVE', { name: 'status' });
  const type = select([['', 'Any type'], ...Object.entries(TYPE_LABELS)], '', { name: 'type' });
  const sort = select([['name', 'Name'], ['-created_at', 'Newest first'], ['created_at', 'Oldest first']], 'name', { name: 'sort' });
  const filters = form({ class: 'inline', role: 'search', 'aria-label': 'Search applications' },
    field('Search', search, { name: 'q' }),
    field('Status', status, { name: 'status' }),
    field('Type', type, { name: 'type' }),
    field('Sort by', sort, { name: 'sort' }),
    h('button', { type: 'submit' }, 'Search'));
  const results = h('div', { 'aria-live': 'polite' });
  const { alert } = page('My applications',
    h('p', {}, h('a', { href: '#/applications/new' }, 'Create application')),
    filters, results);
  let current = 1;
  const load = async (pageNumber) => {
    current = pageNumber;
    const list = await get(envPath(`/applications${query({
      q: search.value.trim(), status: status.value, type: type.value, sort: sort.value, page: pageNumber, size: PAGE_SIZE,
    })}`));
    const pages = Math.max(1, Math.ceil(list.total / PAGE_SIZE));
    fill(results, 
      list.items.length === 0
        ? h('p', {}, 'No application matches.')
        : h('table', {},
          h('caption', { class: 'hint' }, `${list.total} application${list.total === 1 ? '' : 's'}, page ${pageNumber} of ${pages}`),
          h('thead', {}, h('tr', {}, ['Name', 'Type', 'Status', 'Registration', 'Your role'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, list.items.map(applicationRow))),
      h('div', { class: 'actions' },
        pageNumber > 1 ? h('button', { type: 'button', class: 'secondary', onclick: () => load(pageNumber - 1).catch((e) => showError(alert, e)) }, 'Previous page') : null,
        pageNumber < pages ? h('button', { type: 'button', class: 'secondary', onclick: () => load(pageNumber + 1).catch((e) => showError(alert, e)) }, 'Next page') : null));
  };
  onSubmit(filters, () => load(1));
  // The list follows the stream: an application created, archived or registered elsewhere shows.
  let pending = null;
  onLeave(live.onEvent((event) => {
    if (event && event.stream_type !== 'application') return;
    clearTimeout(pending);
    pending = setTimeout(() => load(current).catch(() => {}), 300);
  }));
  try {
    await load(1);
  } catch (error) {
    showError(alert, error, () => load(1).then(() => alert.replaceChildren()).catch((e) => showError(alert, e)));
  }
}

function linesOf(text) {
  return text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
}

export async function createApplicationPage() {
  const { alert, main } = page('Create application');
  let types;
  try {
    types = (await get(envPath('/application-types'))).items;
  } catch (error) {
    showError(alert, error, () => createApplicationPage());
    return;
  }
  if (types.length === 0) {
    main.append(h('p', {}, 'No application type is enabled in this environment: ask an administrator.'));
    return;
  }
  const name = input({ name: 'name', required: true, maxlength: 200 });
  const description = h('textarea', { name: 'description', rows: 3, maxlength: 4000 });
  const type = select(types.map((t) => [t.type, TYPE_LABELS[t.type] || t.type]), types[0].type, { name: 'type' });
  const clientId = input({ name: 'client_id', maxlength: 255 });
  const redirects = h('textarea', { name: 'redirect_uris', rows: 3 });
  const grants = h('fieldset', { 'data-field': 'grant_types', id: 'grant-types', 'aria-describedby': 'grant-types-error' });
  const clientIdField = field('Client ID', clientId, { name: 'client_id', hint: 'Optional: the client id this application uses at your authorization server.' });
  const redirectField = field('Redirect URIs', redirects, { name: 'redirect_uris', hint: 'One absolute URI per line.' });
  const grantsField = h('div', {}, grants, h('p', { class: 'field-error', id: 'grant-types-error' }));
  const showType = () => {
    const chosen = types.find((t) => t.type === type.value);
    const simple = chosen.type === 'simple';
    clientIdField.hidden = !simple;
    redirectField.hidden = simple || !chosen.requires_redirect_uris;
    grantsField.hidden = simple;
    fill(grants, h('legend', {}, 'Grant types'), chosen.allowed_grant_types.map((g) => {
      const box = h('input', {
        type: 'checkbox', name: 'grant', value: g,
        checked: chosen.default_grant_types.includes(g) || chosen.mandatory_grant_types.includes(g),
        disabled: chosen.mandatory_grant_types.includes(g),
      });
      return field(chosen.mandatory_grant_types.includes(g) ? `${grantLabel(g)} (required)` : grantLabel(g), box);
    }));
  };
  type.addEventListener('change', showType);
  const f = form({ 'aria-label': 'Create application' },
    field('Name', name, { name: 'name' }),
    field('Description', description, { name: 'description' }),
    field('Type', type, { name: 'type' }),
    clientIdField, redirectField, grantsField,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create')));
  showType();
  onSubmit(f, async () => {
    const chosen = type.value;
    const body = { name: name.value, type: chosen };
    if (description.value.trim()) body.description = description.value;
    if (chosen === 'simple') {
      if (clientId.value.trim()) body.client_id = clientId.value.trim();
    } else {
      body.grant_types = [...grants.querySelectorAll('input[type=checkbox]:checked')].map((b) => b.value);
      const uris = linesOf(redirects.value);
      if (uris.length) body.redirect_uris = uris;
    }
    const app = await post(envPath('/applications'), body);
    window.location.hash = `#/applications/${encodeURIComponent(app.id)}`;
  });
  main.append(f);
  name.focus();
}

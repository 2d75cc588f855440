// The administrators' pages: client registration settings, providers, the catalogue, pending
// subscriptions, archived applications, the environment's audit.
import {
  envPath, get, post, put, query,
} from './api.js';
import * as live from './live.js';
import {
  fill, actionButton, badge, field, form, h, input, onSubmit, page, select, showError, when,
} from './ui.js';
import { TYPE_LABELS } from './applications.js';

const errorSlot = () => h('div', { class: 'alert', role: 'alert' });
const table = (headings, rows) => h('table', {},
  h('thead', {}, h('tr', {}, headings.map((c) => h('th', { scope: 'col' }, c)))), h('tbody', {}, rows));

/** Loads with `load`, shows it with `show`; a failure shows in the page's alert with a retry. */
async function loaded(alert, load, show) {
  try {
    show(await load());
    alert.replaceChildren();
  } catch (error) {
    showError(alert, error, () => loaded(alert, load, show));
  }
}

async function clientRegistration() {
  const { alert, main } = page('Client registration');
  await loaded(alert, () => get(envPath('/settings/client-registration')), (settings) => {
    const boxes = Object.keys(TYPE_LABELS).map((type) => h('input', { type: 'checkbox', value: type, checked: settings.allowed_types[type] }));
    const dcr = h('input', { type: 'checkbox', name: 'dcr_enabled', checked: settings.dcr_enabled });
    const saved = h('p', { role: 'status', class: 'notice' });
    const f = form({ 'aria-label': 'Client registration settings' },
      h('fieldset', { 'data-field': 'allowed_types' }, h('legend', {}, 'Allowed application types'),
        boxes.map((b) => field(TYPE_LABELS[b.value], b))),
      field('Dynamic client registration', dcr, { name: 'dcr_enabled', hint: 'OAuth application types need it and a provider.' }),
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save settings')));
    onSubmit(f, async () => {
      saved.textContent = '';
      await put(envPath('/settings/client-registration'), {
        allowed_types: Object.fromEntries(boxes.map((b) => [b.value, b.checked])),
        dcr_enabled: dcr.checked,
      });
      saved.textContent = 'Settings saved.';
    });
    main.append(f, saved);
  });
}

function providerForm(refresh) {
  const name = input({ name: 'name' });
  const description = input({ name: 'description' });
  const discovery = input({ type: 'url', name: 'discovery_endpoint', placeholder: 'https://idp.example.com/.well-known/openid-configuration' });
  const mode = select([['INITIAL_ACCESS_TOKEN', 'Initial access token'], ['CLIENT_CREDENTIALS', 'Client credentials']], 'INITIAL_ACCESS_TOKEN', { name: 'initial_access_token_type' });
  const token = input({ type: 'password', name: 'initial_access_token', autocomplete: 'off' });
  const clientId = input({ name: 'client_id', autocomplete: 'off' });
  const clientSecret = input({ type: 'password', name: 'client_secret', autocomplete: 'off' });
  const scopes = input({ name: 'scopes' });
  const isDefault = h('input', { type: 'checkbox', name: 'default' });
  const tokenField = field('Initial access token', token, { name: 'initial_access_token' });
  const credentialFields = h('div', { hidden: true },
    field('Provider client ID', clientId, { name: 'client_id' }),
    field('Provider client secret', clientSecret, { name: 'client_secret' }),
    field('Scopes', scopes, { name: 'scopes', hint: 'Space-separated.' }));
  mode.addEventListener('change', () => {
    tokenField.hidden = mode.value !== 'INITIAL_ACCESS_TOKEN';
    credentialFields.hidden = mode.value !== 'CLIENT_CREDENTIALS';
  });
  // Secret renewal (no RFC defines it): the provider's own endpoint, if it has one.
  const renews = h('input', { type: 'checkbox', name: 'renew_enabled' });
  const renewEndpoint = input({ name: 'renew_endpoint', placeholder: '{registration_endpoint}/{client_id}/renew_secret' });
  const renewMethod = select([['POST', 'POST'], ['PUT', 'PUT'], ['PATCH', 'PATCH']], 'POST', { name: 'renew_method' });
  const renewFields = h('div', { hidden: true },
    field('Renewal endpoint', renewEndpoint, { name: 'renew_client_secret.endpoint', hint: 'A template with {client_id} and {registration_endpoint}, called with the registration access token.' }),
    field('Renewal method', renewMethod, { name: 'renew_client_secret.method' }));
  renews.addEventListener('change', () => { renewFields.hidden = !renews.checked; });
  const f = form({ 'aria-label': 'Add provider' },
    field('Name', name, { name: 'name' }),
    field('Description', description, { name: 'description' }),
    field('Discovery endpoint', discovery, { name: 'discovery_endpoint' }),
    field('Registration mode', mode, { name: 'initial_access_token_type' }),
    tokenField, credentialFields,
    field('Renews client secrets', renews, { name: 'renew_client_secret.enabled' }), renewFields,
    field('Default provider', isDefault, { name: 'default' }),
    h('p', { class: 'hint' }, 'The provider is validated live when it is added: its discovery document must answer and, with client credentials, a token must be issued.'),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Add provider')));
  onSubmit(f, async () => {
    const body = {
      name: name.value,
      description: description.value.trim() || null,
      discovery_endpoint: discovery.value.trim(),
      initial_access_token_type: mode.value,
      default: isDefault.checked,
    };
    if (mode.value === 'INITIAL_ACCESS_TOKEN') body.initial_access_token = token.value;
    else Object.assign(body, { client_id: clientId.value.trim(), client_secret: clientSecret.value, scopes: scopes.value.split(/\s+/).filter(Boolean) });
    if (renews.checked) body.renew_client_secret = { enabled: true, endpoint: renewEndpoint.value.trim(), method: renewMethod.value };
    await post(envPath('/client-registration-providers'), body);
    f.reset();
    renewFields.hidden = true;
    await refresh();
  });
  return f;
}

/** A provider's whole definition as a `PUT` replaces it (secrets left out: the stored ones stay). */
function definition(p, changes = {}) {
  const keep = ['name', 'description', 'discovery_endpoint', 'initial_access_token_type', 'client_id', 'scopes',
    'software_id', 'renew_client_secret', 'delete_client_on_archive', 'default', 'allow_cross_origin_endpoints'];
  return { ...Object.fromEntries(keep.map((k) => [k, p[k]])), ...changes };
}

async function providers() {
  const { alert, main } = page('Providers');
  const listed = h('div', {});
  const slot = errorSlot();
  const refresh = () => loaded(alert, () => get(envPath('/client-registration-providers')), (list) => {
    fill(listed, list.items.length ? table(['Name', 'Discovery endpoint', 'Mode', 'Default', 'Actions'], list.items.map((p) => h('tr', {},
      h('td', {}, p.name), h('td', {}, h('code', {}, p.discovery_endpoint)), h('td', {}, p.initial_access_token_type),
      h('td', {}, p.default ? 'Default' : ''),
      h('td', {}, h('div', { class: 'actions' },
        actionButton(`Validate ${p.name}`, async () => {
          // An update without secrets keeps the stored ones and validates the provider live.
          await put(envPath(`/client-registration-providers/${p.id}`), definition(p));
          fill(slot, h('p', { role: 'status', class: 'notice' }, `${p.name} answers: valid.`));
        }, slot, { class: 'secondary' }),
        p.default ? null : actionButton(`Make ${p.name} the default`, async () => {
          await put(envPath(`/client-registration-providers/${p.id}`), definition(p, { default: true }));
          await refresh();
        }, slot, { class: 'secondary' })))))) : h('p', {}, 'No provider yet.'));
  });
  main.append(slot, listed, h('section', { 'aria-labelledby': 'add-provider' }, h('h2', { id: 'add-provider' }, 'Add a provider'), providerForm(refresh)));
  await refresh();
}

async function catalogue() {
  const { alert, main } = page('Catalogue');
  const listed = h('div', {});
  const refresh = () => loaded(alert, () => get(envPath(`/apis${query({ size: 100 })}`)), (list) => {
    fill(listed, ...list.items.map((api) => {
      const planName = input({ name: 'name' });
      const security = select([['API_KEY', 'API key'], ['KEYLESS', 'Keyless'], ['JWT', 'JWT'], ['OAUTH2', 'OAuth 2']], 'API_KEY', { name: 'security' });
      const validation = select([['MANUAL', 'Manual'], ['AUTO', 'Automatic']], 'MANUAL', { name: 'validation' });
      const addPlan = form({ class: 'inline', 'aria-label': `Add a plan to ${api.name}` },
        field('Plan name', planName, { name: 'name' }), field('Security', security, { name: 'security' }),
        field('Validation', validation, { name: 'validation' }), h('button', { type: 'submit' }, 'Add plan'));
      onSubmit(addPlan, async () => {
        await post(envPath(`/apis/${api.id}/plans`), { name: planName.value, security: security.value, validation: validation.value });
        await refresh();
      });
      return h('section', { 'aria-label': api.name }, h('h2', {}, api.name), api.description ? h('p', {}, api.description) : null,
        api.plans.length ? table(['Plan', 'Security', 'Validation', 'Status'], api.plans.map((p) => h('tr', {},
          h('td', {}, p.name), h('td', {}, p.security), h('td', {}, p.validation), h('td', {}, badge(p.status))))) : h('p', {}, 'No plan yet.'),
        addPlan);
    }));
  });
  const apiName = input({ name: 'name' });
  const apiDescription = input({ name: 'description' });
  const addApi = form({ 'aria-label': 'Add an API' },
    field('API name', apiName, { name: 'name' }), field('API description', apiDescription, { name: 'description' }),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Add API')));
  onSubmit(addApi, async () => {
    await post(envPath('/apis'), { name: apiName.value, description: apiDescription.value.trim() || null });
    addApi.reset();
    await refresh();
  });
  main.append(listed, h('section', { 'aria-labelledby': 'add-api' }, h('h2', { id: 'add-api' }, 'Add an API'), addApi));
  await refresh();
}

/** Pending subscriptions: the environment's queue (`GET /subscriptions?status=PENDING`), oldest
 * request first, a page at a time. */
async function pendingSubscriptions({ onLeave }) {
  const { alert, main } = page('Pending subscriptions');
  const listed = h('div', { 'aria-live': 'polite' });
  const slot = errorSlot();
  main.append(slot, listed);
  const SIZE = 50;
  let pageNumber = 1;
  const refresh = () => loaded(alert, async () => {
    const [queue, apis] = await Promise.all([
      get(envPath(`/subscriptions${query({ status: 'PENDING', page: pageNumber, size: SIZE })}`)),
      get(envPath(`/apis${query({ size: 100 })}`))]);
    return { queue, apis: new Map(apis.items.map((a) => [a.id, a])) };
  }, ({ queue, apis }) => {
    const pages = Math.max(1, Math.ceil(queue.total / SIZE));
    if (pageNumber > pages) { pageNumber = pages; refresh(); return; }
    const label = (s) => {
      const api = apis.get(s.api_id);
      const plan = api && api.plans.find((p) => p.id === s.plan_id);
      return `${api ? api.name : s.api_id} / ${plan ? plan.name : s.plan_id}`;
    };
    const go = (n) => { pageNumber = n; refresh(); };
    fill(listed, queue.items.length ? table(['Application', 'API and plan', 'Requested', 'Actions'], queue.items.map((s) => {
      const app = { id: s.application_id, name: s.application_name };
      const reason = input({ 'aria-label': `Reason for rejecting ${app.name}`, placeholder: 'reason (optional)' });
      return h('tr', {}, h('td', {}, h('a', { href: `#/applications/${app.id}` }, app.name)), h('td', {}, label(s)), h('td', {}, when(s.created_at)),
        h('td', {}, h('div', { class: 'actions' },
          actionButton(`Accept ${app.name} on ${label(s)}`, async () => { await post(envPath(`/subscriptions/${s.id}/_accept`)); await refresh(); }, slot),
          reason,
          actionButton(`Reject ${app.name} on ${label(s)}`, async () => { await post(envPath(`/subscriptions/${s.id}/_reject`), reason.value.trim() ? { reason: reason.value.trim() } : {}); await refresh(); }, slot, { class: 'danger' }))));
    })) : h('p', {}, 'No subscription is waiting.'),
    queue.total > SIZE ? h('div', { class: 'actions' },
      h('p', { class: 'hint' }, `${queue.total} waiting, page ${pageNumber} of ${pages}`),
      pageNumber > 1 ? h('button', { type: 'button', class: 'secondary', onclick: () => go(pageNumber - 1) }, 'Previous page') : null,
      pageNumber < pages ? h('button', { type: 'button', class: 'secondary', onclick: () => go(pageNumber + 1) }, 'Next page') : null) : '');
  });
  onLeave(live.onEvent((event) => { if (!event || /^Subscription/.test(event.type)) refresh(); }));
  await refresh();
}

async function archived() {
  const { alert, main } = page('Archived applications');
  const listed = h('div', {});
  const slot = errorSlot();
  main.append(slot, listed);
  const refresh = () => loaded(alert, () => get(envPath(`/applications${query({ status: 'ARCHIVED', size: 100 })}`)), (list) => {
    fill(listed, list.items.length ? table(['Application', 'Type', 'Archived', 'Actions'], list.items.map((app) => h('tr', {},
      h('td', {}, h('a', { href: `#/applications/${app.id}` }, app.name)), h('td', {}, TYPE_LABELS[app.type] || app.type), h('td', {}, when(app.updated_at)),
      h('td', {}, actionButton(`Restore ${app.name}`, async () => {
        await post(envPath(`/applications/${app.id}/_restore`));
        fill(slot, h('p', { role: 'status', class: 'notice' }, `${app.name} is restored.`));
        await refresh();
      }, slot))))) : h('p', {}, 'No archived application.'));
  });
  await refresh();
}

async function audit() {
  const { alert, main } = page('Audit');
  const actor = input({ name: 'actor' });
  const type = input({ name: 'type' });
  const from = input({ type: 'datetime-local', name: 'from' });
  const to = input({ type: 'datetime-local', name: 'to' });
  const rows = h('tbody', {});
  const more = h('div', { class: 'actions' });
  const iso = (v) => (v.value ? new Date(v.value).toISOString() : '');
  const load = async (after) => {
    const result = await get(envPath(`/audit${query({ actor: actor.value.trim(), type: type.value.trim(), from: iso(from), to: iso(to), after, limit: 100 })}`));
    if (!after) rows.replaceChildren();
    rows.append(...result.items.map((e) => h('tr', {}, h('td', {}, when(e.at)), h('td', {}, e.type), h('td', {}, `${e.stream_type} ${e.stream_id}`),
      h('td', {}, (e.metadata && e.metadata.actor) || ''))));
    fill(more, result.next_after ? h('button', { type: 'button', class: 'secondary', onclick: () => load(result.next_after).catch((er) => showError(alert, er)) }, 'Load more events') : '');
  };
  const filters = form({ class: 'inline', role: 'search', 'aria-label': 'Filter the audit' },
    field('Actor', actor, { name: 'actor' }), field('Event type', type, { name: 'type' }),
    field('From', from, { name: 'from' }), field('To', to, { name: 'to' }), h('button', { type: 'submit' }, 'Filter'));
  onSubmit(filters, () => load(null));
  main.append(filters, h('table', {}, h('thead', {}, h('tr', {}, ['When', 'Event', 'Stream', 'Actor'].map((c) => h('th', { scope: 'col' }, c)))), rows), more);
  try {
    await load(null);
  } catch (error) {
    showError(alert, error, () => load(null).then(() => alert.replaceChildren()));
  }
}

export const adminPages = {
  'client-registration': clientRegistration,
  providers,
  catalogue,
  subscriptions: pendingSubscriptions,
  archived,
  audit,
};

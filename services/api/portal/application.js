// One application's page: details and edit, registration state (live) and credentials, members,
// subscriptions and their keys, notification settings, the history as a timeline, archive and
// restore. What the caller may do comes from the application's `permissions` (per permission, a
// subset of "CRUD"); the api enforces it again.
import {
  del, envPath, get, post, put, query,
} from './api.js';
import * as live from './live.js';
import {
  fill, actionButton, badge, field, form, h, input, onSubmit, page, select, showError, when,
} from './ui.js';
import { grantLabel, TYPE_LABELS } from './applications.js';

const HOOKS = ['SUBSCRIPTION_ACCEPTED', 'SUBSCRIPTION_REJECTED', 'SUBSCRIPTION_CLOSED',
  'SUBSCRIPTION_PAUSED', 'SUBSCRIPTION_RESUMED', 'API_KEY_EXPIRING'];
const HISTORY_PAGE = 50;

const can = (app, permission, letter) => String((app.permissions || {})[permission] || '').includes(letter);
/** A titled section; none when it would hold nothing (a control the user may not use). */
const section = (title, ...children) => (children.every((c) => c == null) ? null : h('section', { 'aria-labelledby': `${title.toLowerCase().replace(/\W+/g, '-')}-heading` },
  h('h2', { id: `${title.toLowerCase().replace(/\W+/g, '-')}-heading` }, title), ...children));
const errorSlot = () => h('div', { class: 'alert', role: 'alert' });

function detailsList(app) {
  const reg = app.registration;
  const rows = [
    ['Type', TYPE_LABELS[app.type] || app.type],
    ['Status', badge(app.status)],
    ['Client ID', app.client_id ? h('code', {}, app.client_id) : '—'],
    ['Description', app.description || '—'],
    ['Owner', app.owner ? (app.owner.name || app.owner.id) : '—'],
    ['Your role', app.role || 'administrator'],
    ['Created', when(app.created_at)],
  ];
  if (app.type !== 'simple') {
    rows.push(['Redirect URIs', app.redirect_uris.length ? app.redirect_uris.join(', ') : '—']);
    rows.push(['Grant types', app.grant_types.map(grantLabel).join(', ') || '—']);
  }
  if (reg) {
    rows.push(['Registration', h('span', { id: 'registration-state' }, badge(reg.state),
      reg.error ? ` ${reg.error}${reg.error_description ? `: ${reg.error_description}` : ''}` : '')]);
    if (reg.operation) rows.push(['Last operation', `${reg.operation.kind} ${reg.operation.state}${reg.operation.error_description ? `: ${reg.operation.error_description}` : ''}`]);
  }
  return h('dl', {}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function editForm(app, refresh) {
  const name = input({ name: 'name', value: app.name, maxlength: 200 });
  const description = h('textarea', { name: 'description', rows: 3 }, app.description || '');
  const redirects = h('textarea', { name: 'redirect_uris', rows: 3 }, app.redirect_uris.join('\n'));
  const f = form({ 'aria-label': 'Edit application' },
    field('Name', name, { name: 'name' }),
    field('Description', description, { name: 'description' }),
    app.type !== 'simple' ? field('Redirect URIs', redirects, { name: 'redirect_uris', hint: 'One absolute URI per line.' }) : null,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save')));
  onSubmit(f, async () => {
    const body = { name: name.value, description: description.value.trim() ? description.value : null };
    if (app.type !== 'simple') body.redirect_uris = redirects.value.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
    await put(envPath(`/applications/${app.id}`), body);
    await refresh();
  });
  return f;
}

function credentials(app, refresh) {
  const slot = errorSlot();
  const shown = h('div', {});
  const reveal = actionButton('Show credentials', async () => {
    const c = await get(envPath(`/applications/${app.id}/credentials`));
    const secret = input({ readOnly: true, value: c.client_secret || '', class: 'secret', size: 48 });
    const copied = h('p', { role: 'status', class: 'hint' });
    fill(shown, h('dl', {},
      h('dt', {}, 'Client ID'), h('dd', {}, h('code', {}, c.client_id || '—')),
      c.client_secret_expires_at ? [h('dt', {}, 'Secret expires'), h('dd', {}, when(c.client_secret_expires_at))] : null),
    c.client_secret ? [field('Client secret', secret),
      h('button', {
        type: 'button',
        class: 'secondary',
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(c.client_secret);
            copied.textContent = 'Client secret copied.';
          } catch {
            secret.select();
            copied.textContent = 'Copying is not allowed here: the secret is selected, copy it with your keyboard.';
          }
        },
      }, 'Copy client secret'), copied] : h('p', {}, 'A public client has no secret.'));
  }, slot);
  const actions = [reveal];
  if (app.registration && app.registration.state === 'REGISTERED') {
    actions.push(actionButton('Renew secret', async () => {
      await post(envPath(`/applications/${app.id}/_renew_secret`));
      fill(shown, h('p', { role: 'status' }, 'Secret renewal requested: show the credentials again when it is done.'));
      await refresh();
    }, slot, { class: 'secondary' }));
  }
  if (app.registration && app.registration.state === 'REGISTRATION_FAILED') {
    actions.push(actionButton('Retry registration', async () => {
      await post(envPath(`/applications/${app.id}/_retry_registration`));
      await refresh();
    }, slot));
  }
  return [slot, h('div', { class: 'actions' }, actions), shown];
}

async function members(app, session, refresh) {
  const list = (await get(envPath(`/applications/${app.id}/members`))).items;
  const slot = errorSlot();
  const rows = list.map((m) => {
    const cells = [h('td', {}, m.user), h('td', {}, m.name || ''), h('td', {}, m.role)];
    const actions = [];
    if (m.role !== 'PRIMARY_OWNER' && can(app, 'MEMBER', 'U')) {
      const role = select([['USER', 'User'], ['OWNER', 'Owner']], m.role, { 'aria-label': `Role of ${m.user}` });
      actions.push(role, actionButton(`Change role of ${m.user}`, async () => {
        await put(envPath(`/applications/${app.id}/members/${encodeURIComponent(m.user)}`), { role: role.value });
        await refresh();
      }, slot, { class: 'secondary' }));
    }
    if (m.role !== 'PRIMARY_OWNER' && can(app, 'MEMBER', 'D')) {
      actions.push(actionButton(`Remove ${m.user}`, async () => {
        await del(envPath(`/applications/${app.id}/members/${encodeURIComponent(m.user)}`));
        await refresh();
      }, slot, { class: 'danger' }));
    }
    return h('tr', {}, cells, h('td', {}, h('div', { class: 'actions' }, actions)));
  });
  const parts = [slot, h('table', {}, h('thead', {}, h('tr', {}, ['User', 'Name', 'Role', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))), h('tbody', {}, rows))];
  if (can(app, 'MEMBER', 'C')) {
    const options = h('datalist', { id: 'user-options' });
    const user = input({ name: 'user', list: 'user-options', autocomplete: 'off' });
    const role = select([['USER', 'User'], ['OWNER', 'Owner']], 'USER', { name: 'role' });
    let typing = null;
    user.addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(async () => {
        const q = user.value.trim();
        if (!q) return;
        try {
          const found = await get(envPath(`/users${query({ q, limit: 10 })}`));
          fill(options, ...found.items.map((u) => h('option', { value: u.id }, u.name || u.id)));
        } catch {
          options.replaceChildren();
        }
      }, 200);
    });
    const add = form({ class: 'inline', 'aria-label': 'Add member' },
      field('Find user', user, { name: 'user', hint: 'Type the start of a user id or name.' }), options,
      field('Role', role, { name: 'role' }), h('button', { type: 'submit' }, 'Add member'));
    onSubmit(add, async () => {
      await post(envPath(`/applications/${app.id}/members`), { user: user.value.trim(), role: role.value });
      await refresh();
    });
    parts.push(h('h3', {}, 'Add a member'), add);
  }
  const others = list.filter((m) => m.role !== 'PRIMARY_OWNER');
  if ((app.role === 'PRIMARY_OWNER' || session.admin) && others.length) {
    const to = select(others.map((m) => [m.user, m.name ? `${m.name} (${m.user})` : m.user]), others[0].user, { name: 'user' });
    const former = select([['USER', 'User'], ['OWNER', 'Owner']], 'USER', { name: 'former_owner_role' });
    const transfer = form({ class: 'inline', 'aria-label': 'Transfer ownership' },
      field('New primary owner', to, { name: 'user' }),
      field('Former primary owner\'s role', former, { name: 'former_owner_role' }), h('button', { type: 'submit' }, 'Transfer ownership'));
    onSubmit(transfer, async () => {
      await post(envPath(`/applications/${app.id}/members/_transfer_ownership`), { user: to.value, former_owner_role: former.value });
      await refresh();
    });
    parts.push(h('h3', {}, 'Transfer ownership'), transfer);
  }
  return parts;
}

async function catalogue() {
  const apis = (await get(envPath(`/apis${query({ size: 100 })}`))).items;
  return new Map(apis.map((api) => [api.id, api]));
}

async function subscriptions(app, refresh) {
  const [subs, apis] = await Promise.all([
    get(envPath(`/applications/${app.id}/subscriptions${query({ size: 100 })}`)), catalogue()]);
  const slot = errorSlot();
  const planOf = (s) => (apis.get(s.api_id)?.plans || []).find((p) => p.id === s.plan_id);
  const rows = subs.items.map((s) => {
    const api = apis.get(s.api_id);
    const plan = planOf(s);
    const label = `${api ? api.name : s.api_id} / ${plan ? plan.name : s.plan_id}`;
    const keys = s.api_keys.map((k) => h('li', {},
      h('code', { class: 'secret' }, k.key || `${k.prefix}…`),
      k.revoked_at ? ' revoked' : k.expires_at ? [' expires ', when(k.expires_at)] : '',
      !k.revoked_at && can(app, 'SUBSCRIPTION', 'U') ? [' ', actionButton(`Revoke key ${k.prefix}`, async () => {
        await post(envPath(`/subscriptions/${s.id}/api-keys/${encodeURIComponent(k.id)}/_revoke`));
        await refresh();
      }, slot, { class: 'danger' })] : null));
    const actions = [];
    if (s.status === 'ACCEPTED' && s.security === 'API_KEY' && can(app, 'SUBSCRIPTION', 'U')) {
      actions.push(actionButton(`Renew key of ${label}`, async () => {
        await post(envPath(`/subscriptions/${s.id}/api-keys/_renew`));
        await refresh();
      }, slot, { class: 'secondary' }));
    }
    if (['PENDING', 'ACCEPTED', 'PAUSED'].includes(s.status) && can(app, 'SUBSCRIPTION', 'D')) {
      actions.push(actionButton(s.status === 'PENDING' ? `Withdraw ${label}` : `Close ${label}`, async () => {
        await post(envPath(`/subscriptions/${s.id}/_close`));
        await refresh();
      }, slot, { class: 'danger' }));
    }
    return h('tr', {}, h('td', {}, label), h('td', {}, badge(s.status), s.reason ? ` ${s.reason}` : ''),
      h('td', {}, keys.length ? h('ul', {}, keys) : '—'), h('td', {}, h('div', { class: 'actions' }, actions)));
  });
  const parts = [slot, subs.items.length ? h('table', {}, h('thead', {}, h('tr', {}, ['API and plan', 'Status', 'API keys', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))), h('tbody', {}, rows)) : h('p', {}, 'No subscription yet.')];
  const plans = [...apis.values()].flatMap((api) => api.plans.filter((p) => p.status === 'PUBLISHED' && p.security !== 'KEYLESS')
    .map((p) => [p.id, `${api.name} / ${p.name} (${p.security}, ${p.validation === 'AUTO' ? 'automatic' : 'manual'} validation)`]));
  if (app.status === 'ACTIVE' && can(app, 'SUBSCRIPTION', 'C') && plans.length) {
    const plan = select(plans, plans[0][0], { name: 'plan_id' });
    const subscribe = form({ class: 'inline', 'aria-label': 'Subscribe' },
      field('Plan', plan, { name: 'plan_id' }), h('button', { type: 'submit' }, 'Subscribe'));
    onSubmit(subscribe, async () => {
      await post(envPath(`/applications/${app.id}/subscriptions`), { plan_id: plan.value });
      await refresh();
    });
    parts.push(h('h3', {}, 'Subscribe to a plan'), subscribe);
  }
  return parts;
}

async function notifications(app, session) {
  const mine = (await get(envPath(`/applications/${app.id}/notifications`))).items.find((n) => n.user === session.user);
  const email = input({ type: 'email', name: 'email', value: mine ? mine.email : '', autocomplete: 'email' });
  const boxes = HOOKS.map((hook) => h('input', { type: 'checkbox', value: hook, checked: Boolean(mine && mine.hooks.includes(hook)) }));
  const f = form({ 'aria-label': 'Notification settings' },
    field('E-mail', email, { name: 'email' }),
    h('fieldset', { 'data-field': 'hooks' }, h('legend', {}, 'Notify me when'),
      boxes.map((b) => field(b.value.toLowerCase().replace(/_/g, ' ').replace(/^./, (c) => c.toUpperCase()).replace(/^Api key/, 'API key'), b))),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save notifications')));
  const saved = h('p', { role: 'status', class: 'notice' });
  onSubmit(f, async () => {
    const hooks = boxes.filter((b) => b.checked).map((b) => b.value);
    await put(envPath(`/applications/${app.id}/notifications`), { email: email.value.trim() || null, hooks });
    saved.textContent = 'Notification settings saved.';
  });
  return [f, saved];
}

function history(app) {
  const list = h('ol', { class: 'timeline' });
  const slot = errorSlot();
  const more = h('div', { class: 'actions' });
  const load = async (after) => {
    const pageOf = await get(envPath(`/applications/${app.id}/history${query({ after_version: after, limit: HISTORY_PAGE })}`));
    list.append(...pageOf.items.map((e) => h('li', {}, h('strong', {}, e.type), ` (version ${e.version})`,
      e.actor ? ` by ${e.actor}` : '', h('br'), when(e.at))));
    fill(more, pageOf.next_after_version !== null
      ? actionButton('Load more history', () => load(pageOf.next_after_version), slot, { class: 'secondary' }) : '');
  };
  load(0).catch((e) => showError(slot, e, () => load(0)));
  return [slot, list, more];
}

function archive(app, session, refresh) {
  const slot = errorSlot();
  if (app.status === 'ARCHIVED') {
    return session.admin ? [slot, actionButton('Restore application', async () => {
      await post(envPath(`/applications/${app.id}/_restore`));
      await refresh();
    }, slot)] : [h('p', {}, 'This application is archived.')];
  }
  if (!can(app, 'DEFINITION', 'D')) return null;
  const confirm = h('div', { class: 'actions', hidden: true },
    h('p', {}, 'Archiving ends its subscriptions and revokes its keys.'),
    actionButton('Confirm archive', async () => {
      await del(envPath(`/applications/${app.id}`));
      if (session.admin) await refresh();
      else window.location.hash = '#/applications';
    }, slot, { class: 'danger' }));
  return [slot, h('button', { type: 'button', class: 'danger', onclick: () => { confirm.hidden = false; } }, 'Archive application'), confirm];
}

export async function applicationPage({ session, onLeave }, id) {
  const { alert, main, heading } = page('Application');
  const path = envPath(`/applications/${encodeURIComponent(id)}`);
  const details = h('div', { 'aria-live': 'polite' });
  const sections = h('div', {});
  let app;
  let shownVersion = -1;
  let refreshing = null;
  const render = async () => {
    heading.textContent = app.name;
    document.title = `${app.name} · appreg developer portal`;
    fill(details, detailsList(app));
    const settled = await Promise.allSettled([
      members(app, session, refresh), subscriptions(app, refresh),
      can(app, 'NOTIFICATION', 'R') ? notifications(app, session) : null]);
    const part = (i) => (settled[i].status === 'fulfilled' ? settled[i].value
      : (() => { const slot = errorSlot(); showError(slot, settled[i].reason, () => refresh()); return slot; })());
    fill(sections, ...[
      app.type !== 'simple' && can(app, 'DEFINITION', 'U') ? section('Credentials', credentials(app, refresh)) : null,
      section('Members', part(0)),
      section('Subscriptions', part(1)),
      settled[2].value || settled[2].status === 'rejected' ? section('Notifications', part(2)) : null,
      section('History', history(app)),
      section(app.status === 'ARCHIVED' ? 'Restore' : 'Archive', archive(app, session, refresh)),
      can(app, 'DEFINITION', 'U') && app.status === 'ACTIVE' ? section('Edit', editForm(app, refresh)) : null,
    ].filter(Boolean));
  };
  async function refresh() {
    app = await get(path);
    alert.replaceChildren();
    shownVersion = app.version;
    await render();
  }
  try {
    app = await get(path);
  } catch (error) {
    showError(alert, error, () => applicationPage({ session, onLeave }, id));
    return;
  }
  main.append(section('Details', details), sections);
  shownVersion = app.version;
  await render();
  // Live: an event of this application (its registration, members…) or of a subscription
  // reloads it; forms being filled in are rebuilt only when something changed.
  onLeave(live.onEvent((event) => {
    const ours = !event || String(event.stream_id).endsWith(app.id) || (event.data && event.data.application_id === app.id);
    if (!ours) return;
    clearTimeout(refreshing);
    refreshing = setTimeout(async () => {
      try {
        const latest = await get(path);
        if (latest.version !== shownVersion || !event) {
          app = latest;
          shownVersion = latest.version;
          await render();
        }
      } catch (error) {
        showError(alert, error, () => refresh());
      }
    }, 200);
  }));
}

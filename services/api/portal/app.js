// The portal's entry point: loads /portal/config.json, signs the user in, and renders the page
// the address's fragment names (#/applications, #/applications/new, #/applications/{id},
// #/admin/…). Every page is built from the public api.
import { call, configure, NetworkError, useToken } from './api.js';
import {
  completeOidcSignIn, currentSession, signInForDevelopment, signOut, startOidcSignIn,
} from './auth.js';
import * as live from './live.js';
import { fill, field, form, h, input, onSubmit, page, showError } from './ui.js';
import { applicationsPage, createApplicationPage } from './applications.js';
import { applicationPage } from './application.js';
import { adminPages } from './admin.js';

let settings = null;
let cleanup = null;

function navigation(session) {
  const links = [['#/applications', 'My applications'], ['#/applications/new', 'Create application']];
  if (session && session.admin) {
    links.push(
      ['#/admin/client-registration', 'Client registration'],
      ['#/admin/providers', 'Providers'],
      ['#/admin/catalogue', 'Catalogue'],
      ['#/admin/subscriptions', 'Pending subscriptions'],
      ['#/admin/archived', 'Archived applications'],
      ['#/admin/audit', 'Audit'],
    );
  }
  const nav = document.getElementById('nav');
  const here = window.location.hash || '#/applications';
  fill(nav, session ? h('ul', {}, links.map(([href, label]) => h('li', {},
    h('a', { href, 'aria-current': href === here ? 'page' : undefined }, label)))) : '');
  const who = document.getElementById('who');
  fill(who, ...(session ? [
    h('span', {}, `Signed in as ${session.name || session.user}${session.admin ? ' (administrator)' : ''}`),
    h('button', { type: 'button', class: 'secondary', onclick: () => { live.stop(); signOut(); route(); } }, 'Sign out'),
  ] : []));
}

function signInPage() {
  if (settings.sign_in === 'development') {
    const user = input({ name: 'user', autocomplete: 'username', required: true });
    const admin = h('input', { type: 'checkbox', name: 'admin' });
    const f = form({ 'aria-label': 'Development sign-in' },
      field('User', user, { name: 'user', hint: 'Any user id: development mode trusts whoever you say you are.' }),
      field('Administrator', admin, { name: 'admin' }),
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Sign in')));
    onSubmit(f, async () => {
      await signInForDevelopment(settings, call, user.value.trim(), admin.checked);
      window.location.hash = '#/applications';
      await route();
    });
    page('Sign in', h('p', {}, 'Development sign-in (appreg dev).'), f);
    user.focus();
    return;
  }
  if (settings.sign_in === 'oidc') {
    const slot = h('div', { class: 'alert', role: 'alert' });
    const button = h('button', { type: 'button' }, 'Sign in with your organisation');
    button.addEventListener('click', () => startOidcSignIn(settings).catch((e) => showError(slot, e, () => button.click())));
    page('Sign in', slot, h('p', {}, `You sign in at ${settings.issuer}.`), button);
    return;
  }
  page('Sign in', h('p', {}, 'Sign-in is not configured: set portal_oidc_client_id and auth.issuer.'));
}

/** Renders the page of the current address. */
export async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const session = currentSession();
  navigation(session);
  if (!session) {
    live.stop();
    signInPage();
    return;
  }
  useToken(session.token, () => {
    live.stop();
    signOut();
    route();
  });
  live.start();
  const hash = window.location.hash || '#/applications';
  const [, section, id] = hash.slice(1).split('/');
  const context = { session, settings, onLeave: (fn) => { cleanup = fn; } };
  try {
    if (section === 'applications' && id === 'new') await createApplicationPage(context);
    else if (section === 'applications' && id) await applicationPage(context, decodeURIComponent(id));
    else if (section === 'admin' && session.admin && adminPages[id]) await adminPages[id](context);
    else await applicationsPage(context);
  } catch (error) {
    const { alert } = page('Something went wrong');
    showError(alert, error, () => route());
  }
  const main = document.getElementById('main');
  if (main && !main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

async function boot() {
  try {
    const response = await fetch('/portal/config.json', { credentials: 'omit', cache: 'no-store' });
    if (!response.ok) throw new Error(`the portal's configuration answered ${response.status}`);
    settings = await response.json();
  } catch (error) {
    const { alert } = page('The portal cannot start');
    showError(alert, error instanceof TypeError ? new NetworkError(String(error)) : error, () => boot());
    return;
  }
  configure(settings);
  if (settings.sign_in === 'oidc') {
    try {
      await completeOidcSignIn(settings);
    } catch (error) {
      const { alert } = page('Sign-in failed');
      showError(alert, error, () => { window.location.hash = '#/applications'; route(); });
      return;
    }
  }
  window.addEventListener('hashchange', () => route());
  await route();
}

boot();

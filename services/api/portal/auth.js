// Signing in. The token is kept in sessionStorage (this tab only, gone when it closes) and sent
// in the Authorization header; it never goes into a URL.
// - development (`appreg dev`): POST /portal/dev/sign-in {user, admin} mints a development token;
// - production: OpenID Connect authorization code with PKCE (S256) at the configured issuer, the
//   portal being a public client (no secret).

const SESSION = 'appreg.portal.session';
const PENDING = 'appreg.portal.oidc';

function base64url(bytes) {
  let text = '';
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString() {
  const bytes = new Uint8Array(32);
  crypto.getRandomValues(bytes);
  return base64url(bytes);
}

/** The claims of a JWT (unverified: the api verifies; this only decides what to show). */
function claimsOf(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return {};
  try {
    const json = atob(parts[1].replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(decodeURIComponent([...json].map((c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join('')));
  } catch {
    return {};
  }
}

function asList(value) {
  if (Array.isArray(value)) return value.map(String);
  if (typeof value === 'string') return value.split(/[\s,]+/).filter(Boolean);
  return [];
}

/** The signed-in user of this tab: `{token, user, name, admin, expires_at}` or null. */
export function currentSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION) || 'null');
    if (!session || !session.token) return null;
    if (session.expires_at && Date.now() > session.expires_at) {
      signOut();
      return null;
    }
    return session;
  } catch {
    return null;
  }
}

function keep(settings, token, expiresIn, idClaims = {}) {
  const claims = claimsOf(token);
  const roles = asList(claims[settings.role_claim]);
  const administered = asList(claims[settings.admin_environments_claim]);
  const session = {
    token,
    user: claims.sub || idClaims.sub || 'unknown',
    name: claims.name || idClaims.name || claims.sub || idClaims.sub || '',
    admin: roles.includes(settings.admin_role)
      || administered.includes('*')
      || administered.includes(settings.environment),
    expires_at: Date.now() + Math.max(60, Number(expiresIn) || 3600) * 1000,
  };
  sessionStorage.setItem(SESSION, JSON.stringify(session));
  return session;
}

export function signOut() {
  sessionStorage.removeItem(SESSION);
  sessionStorage.removeItem(PENDING);
}

/** Development sign-in (`appreg dev` only). Throws what `call` throws. */
export async function signInForDevelopment(settings, call, user, admin) {
  const answer = await call('POST', '/portal/dev/sign-in', { user, admin });
  return keep(settings, answer.access_token, answer.expires_in);
}

async function discovery(settings) {
  const issuer = settings.issuer.replace(/\/+$/, '');
  const response = await fetch(`${issuer}/.well-known/openid-configuration`, { credentials: 'omit' });
  if (!response.ok) throw new Error(`the issuer's discovery document answered ${response.status}`);
  return response.json();
}

function redirectUri() {
  return `${window.location.origin}/`;
}

/** Starts the authorization code flow: the browser leaves for the issuer's login page. */
export async function startOidcSignIn(settings) {
  const meta = await discovery(settings);
  const verifier = randomString();
  const state = randomString();
  const nonce = randomString();
  const challenge = base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, nonce, token_endpoint: meta.token_endpoint }));
  const url = new URL(meta.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: settings.client_id,
    redirect_uri: redirectUri(),
    scope: settings.scopes,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  }).toString();
  window.location.assign(url.toString());
}

/**
 * Completes the flow when the issuer sent the browser back with `?code=&state=`: the code is
 * exchanged (with the PKCE verifier) for tokens, and the query is removed from the address bar.
 * Answers the session, or null when this load is not a return from the issuer.
 */
export async function completeOidcSignIn(settings) {
  const params = new URLSearchParams(window.location.search);
  if (!params.has('code') && !params.has('error')) return null;
  window.history.replaceState(null, '', `${window.location.pathname}${window.location.hash || '#/applications'}`);
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || 'null');
  sessionStorage.removeItem(PENDING);
  if (params.has('error')) {
    throw new Error(`the issuer refused the sign-in: ${params.get('error_description') || params.get('error')}`);
  }
  if (!pending || params.get('state') !== pending.state) {
    throw new Error('this sign-in was not started here (state mismatch): sign in again');
  }
  const response = await fetch(pending.token_endpoint, {
    method: 'POST',
    credentials: 'omit',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.get('code'),
      redirect_uri: redirectUri(),
      client_id: settings.client_id,
      code_verifier: pending.verifier,
    }).toString(),
  });
  const tokens = await response.json().catch(() => ({}));
  if (!response.ok || !tokens.access_token) {
    throw new Error(`the issuer refused the code: ${tokens.error_description || tokens.error || response.status}`);
  }
  const idClaims = tokens.id_token ? claimsOf(tokens.id_token) : {};
  if (tokens.id_token && idClaims.nonce !== pending.nonce) {
    throw new Error('the ID token does not answer this sign-in (nonce mismatch): sign in again');
  }
  return keep(settings, tokens.access_token, tokens.expires_in, idClaims);
}

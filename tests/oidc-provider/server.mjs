// A real OpenID Connect provider (panva/oidc-provider) for appreg's DCR end-to-end tests.
//
//   PORT=0 INITIAL_ACCESS_TOKEN=s3cr3t node server.mjs                      # fixed-token mode
//   PORT=0 ADMIN_CLIENT_ID=admin ADMIN_CLIENT_SECRET=pw node server.mjs      # client-credentials mode
//   IDEMPOTENCY=off …                                   # Idempotency-Key ignored (random client ids)
//
// Prints exactly one line on stdout once listening: {"issuer":"http://127.0.0.1:PORT","port":PORT}
// Everything else (the provider's notices included) goes to stderr. See README.md.

import http from 'node:http';
import crypto from 'node:crypto';

import Provider from 'oidc-provider';

// stdout carries only the ready line: route every console output to stderr.
// eslint-disable-next-line no-console
console.log = console.info = console.warn;

const env = process.env;
const FIXED_TOKEN = env.INITIAL_ACCESS_TOKEN || undefined;
const ADMIN_CLIENT_ID = env.ADMIN_CLIENT_ID || undefined;
const ADMIN_CLIENT_SECRET = env.ADMIN_CLIENT_SECRET || undefined;
// Sign-in for a browser portal (the developer portal's production sign-in test): access tokens
// become JWTs for this audience (an absolute URI: a resource indicator, RFC 8707), and browser
// clients may call the token endpoint from any origin (CORS).
const PORTAL_AUDIENCE = env.PORTAL_AUDIENCE || undefined;
const DCR_SCOPE = 'dcr';
const REGISTRATION_PATH = '/reg';
// IDEMPOTENCY=off: the Idempotency-Key header is ignored (random client ids, like most providers).
const IDEMPOTENCY = (env.IDEMPOTENCY || 'on').toLowerCase();
const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:~-]{8,200}$/;

if (IDEMPOTENCY !== 'on' && IDEMPOTENCY !== 'off') {
  console.error('server.mjs: IDEMPOTENCY must be on or off');
  process.exit(2);
}

// The Idempotency-Key of a registration request, when the provider honours keys.
function idempotencyKey(headers) {
  const key = headers['idempotency-key'];
  return IDEMPOTENCY === 'on' && key && IDEMPOTENCY_KEY.test(key) ? key : undefined;
}

// Idempotency-Key -> the first 201 answer given for it (while its client exists).
const answered = new Map();

if (!FIXED_TOKEN && (!ADMIN_CLIENT_ID || !ADMIN_CLIENT_SECRET)) {
  console.error('server.mjs: set INITIAL_ACCESS_TOKEN (fixed-token mode), or ADMIN_CLIENT_ID and ADMIN_CLIENT_SECRET (client-credentials mode)');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// In-memory storage adapter, one Map per model name.
//
// The client-credentials trick: with `features.registration.initialAccessToken = true` the
// registration endpoint calls `provider.InitialAccessToken.find(bearer)`, which asks this adapter,
// constructed for the model name 'InitialAccessToken', for `find(bearer)`. A client_credentials
// access token is stored under the model 'ClientCredentials' (opaque format: the token value IS
// its id). So when an InitialAccessToken is not found, we look the same id up among the
// ClientCredentials tokens and, if it was issued to the admin client and carries the `dcr` scope,
// answer with an InitialAccessToken payload carrying the same jti/iat/exp. The provider then runs
// its ordinary checks (expiry via `exp`) on it. A token of another client or without the scope is
// simply "not found" (401 invalid_token), exactly like an unknown initial access token.
// ---------------------------------------------------------------------------------------------
const stores = new Map(); // model name -> Map(id -> { payload, expiresAt })

function storeOf(model) {
  if (!stores.has(model)) stores.set(model, new Map());
  return stores.get(model);
}

function readEntry(model, id) {
  const store = storeOf(model);
  const entry = store.get(id);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(id);
    return undefined;
  }
  return entry.payload;
}

function nowEpoch() {
  return Math.floor(Date.now() / 1000);
}

class MemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : undefined;
    storeOf(this.model).set(id, { payload: structuredClone(payload), expiresAt });
  }

  async find(id) {
    const own = readEntry(this.model, id);
    if (own || this.model !== 'InitialAccessToken' || FIXED_TOKEN) return own;
    return clientCredentialsAsInitialAccessToken(id);
  }

  async findByUid(uid) {
    for (const [id, entry] of storeOf(this.model)) {
      if (entry.payload.uid === uid) return readEntry(this.model, id);
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [id, entry] of storeOf(this.model)) {
      if (entry.payload.userCode === userCode) return readEntry(this.model, id);
    }
    return undefined;
  }

  async consume(id) {
    const payload = readEntry(this.model, id);
    if (payload) payload.consumed = nowEpoch();
  }

  async destroy(id) {
    storeOf(this.model).delete(id);
  }

  async revokeByGrantId(grantId) {
    const store = storeOf(this.model);
    for (const [id, entry] of store) {
      if (entry.payload.grantId === grantId) store.delete(id);
    }
  }
}

function clientCredentialsAsInitialAccessToken(id) {
  const cc = readEntry('ClientCredentials', id);
  if (!cc || cc.clientId !== ADMIN_CLIENT_ID) return undefined;
  const scopes = new Set((cc.scope || '').split(' '));
  if (!scopes.has(DCR_SCOPE)) return undefined;
  return {
    iat: cc.iat, exp: cc.exp, jti: cc.jti, kind: 'InitialAccessToken',
  };
}

// ---------------------------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------------------------
function signingKeys() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'sig-rs256', use: 'sig', alg: 'RS256' }] };
}

function portalSignIn() {
  if (!PORTAL_AUDIENCE) return {};
  return {
    clientBasedCORS: () => true,
    resourceIndicators: {
      enabled: true,
      defaultResource: () => PORTAL_AUDIENCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({ scope: 'openid', audience: PORTAL_AUDIENCE, accessTokenFormat: 'jwt', accessTokenTTL: 3600 }),
    },
  };
}

function configuration() {
  const clients = [];
  if (ADMIN_CLIENT_ID && ADMIN_CLIENT_SECRET) {
    clients.push({
      client_id: ADMIN_CLIENT_ID,
      client_secret: ADMIN_CLIENT_SECRET,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: DCR_SCOPE,
    });
  }
  return {
    adapter: MemoryAdapter,
    clients,
    jwks: signingKeys(),
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', DCR_SCOPE],
    ttl: { ClientCredentials: 600 },
    routes: { registration: REGISTRATION_PATH },
    features: {
      clientCredentials: { enabled: true },
      registration: {
        enabled: true,
        initialAccessToken: FIXED_TOKEN ?? true,
        // Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): a repeated registration
        // with the same key gets the first answer again (see the middleware below), or, when
        // that client was deleted meanwhile, the same client_id again, so the provider stores
        // one client, not two, when an answer was lost after the client was created. Without
        // the header (or with IDEMPOTENCY=off): a random id, as by default.
        idFactory: (ctx) => {
          const key = idempotencyKey(ctx.req.headers);
          if (key) {
            return `idem-${crypto.createHash('sha256').update(key).digest('base64url').slice(0, 32)}`;
          }
          return crypto.randomBytes(18).toString('base64url');
        },
      },
      registrationManagement: {
        enabled: true,
        rotateRegistrationAccessToken: true,
      },
      ...(PORTAL_AUDIENCE ? { resourceIndicators: portalSignIn().resourceIndicators } : {}),
    },
    ...(PORTAL_AUDIENCE ? { clientBasedCORS: portalSignIn().clientBasedCORS } : {}),
    // Every OpenID Connect response type (the default set has no `id_token token`, which
    // implicit clients register with).
    responseTypes: ['code', 'id_token', 'id_token token', 'code id_token', 'code token', 'code id_token token', 'none'],
    // pkce: the provider's defaults (S256 only, required for public clients).
  };
}

// ---------------------------------------------------------------------------------------------
// Fault injection for registration requests (POST /reg)
// ---------------------------------------------------------------------------------------------
const faults = [];
const FAULT_KINDS = new Set(['status', 'delay', 'reset', 'created_then_500', 'created_then_delay']);

function validFault(f) {
  if (!f || typeof f !== 'object' || !FAULT_KINDS.has(f.kind)) return false;
  if (f.kind === 'status') return Number.isInteger(f.status) && f.status >= 100 && f.status <= 599;
  if (f.kind === 'delay' || f.kind === 'created_then_delay') return Number.isInteger(f.ms) && f.ms >= 0 && f.ms <= 600000;
  return true;
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing
// ---------------------------------------------------------------------------------------------
function sendJson(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function bearer(req) {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization || '');
  return m ? m[1] : undefined;
}

let provider; // set once the port is known (the issuer contains it)
let handleProvider;

// POST /reg/{client_id}/renew_secret
async function renewSecret(req, res, clientId) {
  await readBody(req);
  const stored = readEntry('Client', clientId);
  if (!stored) {
    sendJson(res, 404, { error: 'invalid_client', error_description: 'unknown client' });
    return;
  }
  const rat = await provider.RegistrationAccessToken.find(bearer(req));
  if (!rat || rat.clientId !== clientId) {
    sendJson(res, 401, { error: 'invalid_token', error_description: 'invalid registration access token' }, {
      'www-authenticate': 'Bearer error="invalid_token"',
    });
    return;
  }
  // Persist the new secret: Client.find re-reads the adapter and caches clients by a fingerprint
  // of their metadata, so the old secret stops authenticating at once.
  const updated = { ...stored, client_secret: crypto.randomBytes(48).toString('base64url') };
  await new MemoryAdapter('Client').upsert(clientId, updated);
  const client = await provider.Client.find(clientId);
  sendJson(res, 200, client.metadata());
}

// Whether the request carries a token that may register (what the provider itself checks).
async function mayRegister(req) {
  const token = bearer(req);
  if (!token) return false;
  if (FIXED_TOKEN) return token === FIXED_TOKEN;
  const iat = await provider.InitialAccessToken.find(token);
  return Boolean(iat && !iat.isExpired);
}

async function faultsRoute(req, res) {
  if (req.method === 'DELETE') {
    await readBody(req);
    faults.length = 0;
    sendJson(res, 200, { queued: 0 });
    return;
  }
  if (req.method !== 'POST') {
    sendJson(res, 405, { error: 'method not allowed' });
    return;
  }
  let list;
  try {
    list = JSON.parse(await readBody(req));
  } catch {
    sendJson(res, 400, { error: 'body must be a JSON array of faults' });
    return;
  }
  if (!Array.isArray(list) || !list.every(validFault)) {
    sendJson(res, 400, { error: 'body must be a JSON array of faults: {"kind":"status","status":N} | {"kind":"delay","ms":N} | {"kind":"reset"} | {"kind":"created_then_500"} | {"kind":"created_then_delay","ms":N}' });
    return;
  }
  faults.push(...list);
  sendJson(res, 200, { queued: faults.length });
}

function clientsRoute(req, res) {
  const ids = [];
  for (const id of storeOf('Client').keys()) {
    if (readEntry('Client', id)) ids.push(id);
  }
  sendJson(res, 200, { count: ids.length, clients: ids });
}

async function route(req, res) {
  if (!provider) {
    sendJson(res, 503, { error: 'temporarily_unavailable', error_description: 'starting' });
    return;
  }
  const { pathname } = new URL(req.url, 'http://127.0.0.1');

  if (pathname === '/_faults') return faultsRoute(req, res);
  if (pathname === '/_clients' && req.method === 'GET') return clientsRoute(req, res);

  const renew = /^\/reg\/([^/]+)\/renew_secret$/.exec(pathname);
  if (renew && req.method === 'POST') return renewSecret(req, res, decodeURIComponent(renew[1]));

  if (pathname === REGISTRATION_PATH && req.method === 'POST' && faults.length) {
    const fault = faults.shift();
    switch (fault.kind) {
      case 'status':
        await readBody(req);
        sendJson(res, fault.status, { error: 'server_error', error_description: `injected fault: status ${fault.status}` });
        return undefined;
      case 'delay':
        await new Promise((resolve) => { setTimeout(resolve, fault.ms); });
        break;
      case 'reset':
        await readBody(req);
        req.socket.destroy();
        return undefined;
      case 'created_then_500':
        req.appregCreatedThen500 = true; // read by the koa middleware below
        break;
      case 'created_then_delay':
        req.appregCreatedThenDelay = fault.ms; // read by the koa middleware below
        break;
      default:
    }
  }
  return handleProvider(req, res);
}

const server = http.createServer((req, res) => {
  route(req, res).catch((err) => {
    console.error('server.mjs: request failed', err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    else res.destroy();
  });
});

server.listen(Number(env.PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  provider = new Provider(issuer, configuration());

  // Idempotency-Key replay, then the faults that act after the provider.
  // created_then_500: the provider creates (and stores) the client, then the answer is replaced.
  provider.use(async (ctx, next) => {
    const key = ctx.method === 'POST' && ctx.path === REGISTRATION_PATH
      ? idempotencyKey(ctx.req.headers) : undefined;
    const first = key ? answered.get(key) : undefined;
    if (first && readEntry('Client', first.client_id) && await mayRegister(ctx.req)) {
      // The same key again: the first answer again (same client, secret, registration token).
      ctx.status = 201;
      ctx.body = structuredClone(first);
      ctx.set('cache-control', 'no-store');
    } else {
      await next();
      if (key && ctx.status === 201 && ctx.body && ctx.body.client_id) {
        answered.set(key, structuredClone(ctx.body));
      }
    }
    if (ctx.req.appregCreatedThen500) {
      ctx.status = 500;
      ctx.body = { error: 'server_error', error_description: 'injected fault: created_then_500' };
    }
    if (ctx.req.appregCreatedThenDelay) {
      await new Promise((resolve) => { setTimeout(resolve, ctx.req.appregCreatedThenDelay); });
    }
  });

  handleProvider = provider.callback();
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

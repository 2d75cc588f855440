// Self-test of server.mjs: node --test tests/oidc-provider/test.mjs
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const SERVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'server.mjs');
const ADMIN = { id: 'dcr-admin', secret: 'dcr-admin-secret' };
const FIXED_TOKEN = 'fixed-initial-access-token';

async function startServer(extraEnv) {
  const child = spawn(process.execPath, [SERVER], {
    env: { ...process.env, PORT: '0', ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const lines = createInterface({ input: child.stdout });
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 15000);
    lines.once('line', (line) => { clearTimeout(timer); resolve(line); });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited ${code}: ${stderr}`)); });
  });
  const info = JSON.parse(ready);
  assert.deepEqual(Object.keys(info).sort(), ['issuer', 'port']);
  assert.equal(info.issuer, `http://127.0.0.1:${info.port}`);
  const stop = async () => {
    if (child.exitCode !== null) return child.exitCode;
    const exited = new Promise((resolve) => { child.once('exit', (code, signal) => resolve(code ?? signal)); });
    child.kill('SIGTERM');
    return exited;
  };
  return { ...info, child, stop };
}

async function json(res) {
  const text = await res.text();
  return text ? JSON.parse(text) : undefined;
}

function basic(id, secret) {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

async function clientCredentialsToken(issuer, id, secret, scope) {
  const form = new URLSearchParams({ grant_type: 'client_credentials' });
  if (scope) form.set('scope', scope);
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: basic(id, secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: form,
  });
  return { status: res.status, body: await json(res) };
}

async function register(issuer, token, metadata) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${issuer}/reg`, { method: 'POST', headers, body: JSON.stringify(metadata) });
  return { status: res.status, body: await json(res) };
}

async function clients(issuer) {
  return json(await fetch(`${issuer}/_clients`));
}

async function queueFaults(issuer, list) {
  const res = await fetch(`${issuer}/_faults`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(list),
  });
  assert.equal(res.status, 200);
}

const BACKEND = { grant_types: ['client_credentials'], response_types: [] };

describe('fixed-token mode', () => {
  let srv;
  before(async () => { srv = await startServer({ INITIAL_ACCESS_TOKEN: FIXED_TOKEN }); });
  after(async () => { assert.equal(await srv.stop(), 0); });

  test('discovery answers with a registration_endpoint', async () => {
    const res = await fetch(`${srv.issuer}/.well-known/openid-configuration`);
    assert.equal(res.status, 200);
    const doc = await res.json();
    assert.equal(doc.issuer, srv.issuer);
    assert.equal(doc.registration_endpoint, `${srv.issuer}/reg`);
    assert.ok(doc.grant_types_supported.includes('client_credentials'));
    assert.deepEqual(doc.code_challenge_methods_supported, ['S256']);
  });

  test('registration needs the fixed initial access token', async () => {
    const without = await register(srv.issuer, undefined, BACKEND);
    assert.ok([400, 401].includes(without.status), `got ${without.status}`);
    const wrong = await register(srv.issuer, 'not-the-token', BACKEND);
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error, 'invalid_token');
    const ok = await register(srv.issuer, FIXED_TOKEN, BACKEND);
    assert.equal(ok.status, 201);
    assert.ok(ok.body.client_id && ok.body.client_secret && ok.body.registration_access_token);
    assert.equal((await clients(srv.issuer)).count, 1);
  });
});

describe('client-credentials mode', () => {
  let srv;
  let iat; // the admin's client_credentials token used as initial access token
  before(async () => {
    srv = await startServer({ ADMIN_CLIENT_ID: ADMIN.id, ADMIN_CLIENT_SECRET: ADMIN.secret });
    const t = await clientCredentialsToken(srv.issuer, ADMIN.id, ADMIN.secret, 'dcr');
    assert.equal(t.status, 200, JSON.stringify(t.body));
    iat = t.body.access_token;
  });
  after(async () => { assert.equal(await srv.stop(), 0); });

  test('the admin token (scope dcr) registers a client; others do not', async () => {
    const t = await clientCredentialsToken(srv.issuer, ADMIN.id, ADMIN.secret, 'dcr');
    assert.equal(t.status, 200);
    assert.equal(t.body.scope, 'dcr');
    const ok = await register(srv.issuer, t.body.access_token, BACKEND);
    assert.equal(ok.status, 201, JSON.stringify(ok.body));

    const noScope = await clientCredentialsToken(srv.issuer, ADMIN.id, ADMIN.secret);
    assert.equal(noScope.status, 200);
    assert.equal((await register(srv.issuer, noScope.body.access_token, BACKEND)).status, 401);
    assert.equal((await register(srv.issuer, 'garbage', BACKEND)).status, 401);
    const none = await register(srv.issuer, undefined, BACKEND);
    assert.ok([400, 401].includes(none.status));
    const badAdmin = await clientCredentialsToken(srv.issuer, ADMIN.id, 'wrong', 'dcr');
    assert.equal(badAdmin.status, 401);

    // a registered client's own client_credentials token is not an initial access token
    const own = await clientCredentialsToken(srv.issuer, ok.body.client_id, ok.body.client_secret);
    assert.equal(own.status, 200);
    assert.equal((await register(srv.issuer, own.body.access_token, BACKEND)).status, 401);
  });

  test('strict metadata: application_type browser is rejected', async () => {
    const res = await register(srv.issuer, iat, {
      application_type: 'browser', redirect_uris: ['https://spa.example/cb'],
    });
    assert.equal(res.status, 400);
    assert.equal(res.body.error, 'invalid_client_metadata');
  });

  test('a confidential client_credentials client gets a token with its secret', async () => {
    const reg = await register(srv.issuer, iat, BACKEND);
    assert.equal(reg.status, 201);
    assert.deepEqual(reg.body.grant_types, ['client_credentials']);
    assert.deepEqual(reg.body.response_types, []);
    const t = await clientCredentialsToken(srv.issuer, reg.body.client_id, reg.body.client_secret);
    assert.equal(t.status, 200, JSON.stringify(t.body));
    assert.ok(t.body.access_token);
    const bad = await clientCredentialsToken(srv.issuer, reg.body.client_id, 'wrong');
    assert.equal(bad.status, 401);
  });

  test('RFC 7592: GET reads, PUT rotates the registration access token, DELETE removes', async () => {
    const reg = await register(srv.issuer, iat, { ...BACKEND, client_name: 'before' });
    assert.equal(reg.status, 201);
    const uri = reg.body.registration_client_uri;
    assert.equal(uri, `${srv.issuer}/reg/${reg.body.client_id}`);
    const rat1 = reg.body.registration_access_token;

    const get = await fetch(uri, { headers: { authorization: `Bearer ${rat1}` } });
    assert.equal(get.status, 200);
    assert.equal((await get.json()).client_name, 'before');

    const put = await fetch(uri, {
      method: 'PUT',
      headers: { authorization: `Bearer ${rat1}`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: reg.body.client_id, ...BACKEND, client_name: 'after' }),
    });
    assert.equal(put.status, 200);
    const updated = await put.json();
    assert.equal(updated.client_name, 'after');
    assert.equal(updated.client_secret, reg.body.client_secret);
    const rat2 = updated.registration_access_token;
    assert.ok(rat2 && rat2 !== rat1);

    const oldGet = await fetch(uri, { headers: { authorization: `Bearer ${rat1}` } });
    assert.equal(oldGet.status, 401);
    const newGet = await fetch(uri, { headers: { authorization: `Bearer ${rat2}` } });
    assert.equal(newGet.status, 200);

    const before_ = (await clients(srv.issuer)).count;
    const del = await fetch(uri, { method: 'DELETE', headers: { authorization: `Bearer ${rat2}` } });
    assert.equal(del.status, 204);
    const after_ = await clients(srv.issuer);
    assert.equal(after_.count, before_ - 1);
    assert.ok(!after_.clients.includes(reg.body.client_id));
    const t = await clientCredentialsToken(srv.issuer, reg.body.client_id, reg.body.client_secret);
    assert.equal(t.status, 401);
  });

  test('renew_secret: the old secret fails, the new one works', async () => {
    const reg = await register(srv.issuer, iat, BACKEND);
    const { client_id: id, client_secret: oldSecret, registration_access_token: rat } = reg.body;
    const renewUrl = `${srv.issuer}/reg/${id}/renew_secret`;

    const noAuth = await fetch(renewUrl, { method: 'POST' });
    assert.equal(noAuth.status, 401);
    const badAuth = await fetch(renewUrl, { method: 'POST', headers: { authorization: 'Bearer nope' } });
    assert.equal(badAuth.status, 401);
    const other = await register(srv.issuer, iat, BACKEND);
    const otherRat = await fetch(renewUrl, {
      method: 'POST', headers: { authorization: `Bearer ${other.body.registration_access_token}` },
    });
    assert.equal(otherRat.status, 401);
    const unknown = await fetch(`${srv.issuer}/reg/no-such-client/renew_secret`, {
      method: 'POST', headers: { authorization: `Bearer ${rat}` },
    });
    assert.equal(unknown.status, 404);

    const res = await fetch(renewUrl, { method: 'POST', headers: { authorization: `Bearer ${rat}` } });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.client_id, id);
    assert.deepEqual(body.grant_types, ['client_credentials']);
    assert.ok(body.client_secret && body.client_secret !== oldSecret);

    assert.equal((await clientCredentialsToken(srv.issuer, id, oldSecret)).status, 401);
    assert.equal((await clientCredentialsToken(srv.issuer, id, body.client_secret)).status, 200);
    // RFC 7592 GET now shows the new secret too
    const get = await fetch(`${srv.issuer}/reg/${id}`, { headers: { authorization: `Bearer ${rat}` } });
    assert.equal((await get.json()).client_secret, body.client_secret);
  });

  test('Idempotency-Key: the same key gets the first answer again, with a valid token only', async () => {
    const key = 'cc-mode-key-0123456789';
    const first = await registerKeyed(srv.issuer, iat, key, BACKEND);
    assert.equal(first.status, 201);
    const again = await registerKeyed(srv.issuer, iat, key, BACKEND);
    assert.equal(again.status, 201);
    assert.equal(again.body.client_id, first.body.client_id);
    assert.equal(again.body.client_secret, first.body.client_secret);
    assert.equal((await registerKeyed(srv.issuer, 'not-a-token', key, BACKEND)).status, 401);
  });

  describe('fault injection on registration requests', () => {
    test('status answers that status without creating a client', async () => {
      const before_ = (await clients(srv.issuer)).count;
      await queueFaults(srv.issuer, [{ kind: 'status', status: 503 }]);
      const res = await register(srv.issuer, iat, BACKEND);
      assert.equal(res.status, 503);
      assert.equal(res.body.error, 'server_error');
      assert.equal((await clients(srv.issuer)).count, before_);
      assert.equal((await register(srv.issuer, iat, BACKEND)).status, 201, 'the fault is consumed');
    });

    test('delay waits then proceeds', async () => {
      await queueFaults(srv.issuer, [{ kind: 'delay', ms: 400 }]);
      const started = Date.now();
      const res = await register(srv.issuer, iat, BACKEND);
      assert.equal(res.status, 201);
      assert.ok(Date.now() - started >= 400);
    });

    test('reset destroys the socket without an answer', async () => {
      const before_ = (await clients(srv.issuer)).count;
      await queueFaults(srv.issuer, [{ kind: 'reset' }]);
      await assert.rejects(register(srv.issuer, iat, BACKEND), TypeError);
      assert.equal((await clients(srv.issuer)).count, before_);
    });

    test('created_then_500 creates the client but answers 500', async () => {
      const before_ = (await clients(srv.issuer)).count;
      await queueFaults(srv.issuer, [{ kind: 'created_then_500' }]);
      const res = await register(srv.issuer, iat, BACKEND);
      assert.equal(res.status, 500);
      assert.equal(res.body.client_id, undefined);
      assert.equal((await clients(srv.issuer)).count, before_ + 1);
    });

    test('faults queue in order, apply only to registrations, and DELETE clears them', async () => {
      await queueFaults(srv.issuer, [{ kind: 'status', status: 502 }, { kind: 'status', status: 429 }]);
      assert.equal((await fetch(`${srv.issuer}/.well-known/openid-configuration`)).status, 200);
      assert.equal((await register(srv.issuer, iat, BACKEND)).status, 502);
      const del = await fetch(`${srv.issuer}/_faults`, { method: 'DELETE' });
      assert.equal(del.status, 200);
      assert.equal((await register(srv.issuer, iat, BACKEND)).status, 201);
      const bad = await fetch(`${srv.issuer}/_faults`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify([{ kind: 'nope' }]),
      });
      assert.equal(bad.status, 400);
    });
  });
});

async function registerKeyed(issuer, token, key, metadata) {
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': key };
  const res = await fetch(`${issuer}/reg`, { method: 'POST', headers, body: JSON.stringify(metadata) });
  return { status: res.status, body: await json(res) };
}

describe('Idempotency-Key', () => {
  for (const idempotency of ['on', 'off']) {
    test(`IDEMPOTENCY=${idempotency}: an answer lost after creation, then the same key again`, async () => {
      const srv = await startServer({ INITIAL_ACCESS_TOKEN: FIXED_TOKEN, IDEMPOTENCY: idempotency });
      try {
        const key = `key-${idempotency}-0123456789`;
        await queueFaults(srv.issuer, [{ kind: 'created_then_500' }]);
        assert.equal((await registerKeyed(srv.issuer, FIXED_TOKEN, key, BACKEND)).status, 500);
        const second = await registerKeyed(srv.issuer, FIXED_TOKEN, key, BACKEND);
        assert.equal(second.status, 201);
        const third = await registerKeyed(srv.issuer, FIXED_TOKEN, key, BACKEND);
        assert.equal(third.status, 201);
        const { count } = await clients(srv.issuer);
        if (idempotency === 'on') {
          // One client; the repeated request gets the first answer again (same secret).
          assert.equal(count, 1);
          assert.equal(third.body.client_id, second.body.client_id);
          assert.equal(third.body.client_secret, second.body.client_secret);
          assert.equal(third.body.registration_access_token, second.body.registration_access_token);
          // A bad token gets no replay.
          assert.equal((await registerKeyed(srv.issuer, 'wrong-token', key, BACKEND)).status, 401);
        } else {
          // The key is ignored: a client per request, random ids.
          assert.equal(count, 3);
          assert.notEqual(third.body.client_id, second.body.client_id);
        }
      } finally {
        await srv.stop();
      }
    });
  }

  test('IDEMPOTENCY other than on/off: exit 2', async () => {
    const child = spawn(process.execPath, [SERVER], {
      env: { ...process.env, PORT: '0', INITIAL_ACCESS_TOKEN: FIXED_TOKEN, IDEMPOTENCY: 'maybe' },
      stdio: 'ignore',
    });
    const code = await new Promise((resolve) => { child.once('exit', resolve); });
    assert.equal(code, 2);
  });
});

test('refuses to start without a mode', async () => {
  const child = spawn(process.execPath, [SERVER], {
    env: { ...process.env, PORT: '0', INITIAL_ACCESS_TOKEN: '', ADMIN_CLIENT_ID: '', ADMIN_CLIENT_SECRET: '' },
    stdio: 'ignore',
  });
  const code = await new Promise((resolve) => { child.once('exit', resolve); });
  assert.equal(code, 2);
});

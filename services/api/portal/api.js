// The public HTTP api, as any portal calls it: the bearer token in the Authorization header
// (never in a URL), problems (RFC 9457) turned into `Problem` errors, and the last write's
// consistency token sent back with reads, so a page shows what the user just did.

let settings = null;
let token = null;
let consistency = null;
let onUnauthenticated = () => {};

/** A problem answer: `detail`, `code`, and each invalid field in `errors`. */
export class Problem extends Error {
  constructor(status, body) {
    const detail = (body && (body.detail || body.title)) || `The api answered ${status}.`;
    super(detail);
    this.status = status;
    this.detail = detail;
    this.code = (body && body.code) || 'unknown';
    this.errors = (body && Array.isArray(body.errors)) ? body.errors : [];
  }
}

/** The api could not be reached (the request may be retried). */
export class NetworkError extends Error {}

export function configure(portalSettings) {
  settings = portalSettings;
}

export function portalSettings() {
  return settings;
}

export function useToken(bearer, whenUnauthenticated) {
  token = bearer;
  if (whenUnauthenticated) onUnauthenticated = whenUnauthenticated;
}

/** `/v1/environments/{env}` + `path`. */
export function envPath(path) {
  return `/v1/environments/${encodeURIComponent(settings.environment)}${path}`;
}

/** A query string of the non-empty values of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') q.set(key, value);
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}

/** Calls the api; answers the parsed JSON (or null), throws `Problem` or `NetworkError`. */
export async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method === 'GET' && consistency) headers['X-Consistency-Token'] = consistency;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (error) {
    throw new NetworkError(String(error));
  }
  const written = response.headers.get('x-consistency-token');
  if (written) consistency = written;
  const text = await response.text();
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  if (!response.ok) {
    const problem = new Problem(response.status, parsed);
    if (response.status === 401) onUnauthenticated(problem);
    throw problem;
  }
  return parsed;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body === undefined ? {} : body);
export const put = (path, body) => call('PUT', path, body);
export const del = (path) => call('DELETE', path);

// Live updates: the environment's event stream through EventSource. EventSource cannot send an
// Authorization header, so each connection first asks for a single-use ticket
// (POST /events/_ticket) and opens GET /events?ticket=… with it. A ticket is used once: when
// the stream drops, a new ticket opens a new stream, and pages reload what they show (events
// may have passed meanwhile).
import { envPath, post } from './api.js';

// The SSE `event:` field is the event type: EventSource delivers named events only to
// listeners of that name.
const TYPES = [
  'ApiCreated', 'ApiKeyIssued', 'ApiKeyRenewed', 'ApiKeyRevoked', 'ApplicationArchived',
  'ApplicationCreated', 'ApplicationRestored', 'ApplicationUpdated',
  'ClientRegistrationSettingsUpdated', 'ClientSecretRenewalFailed', 'ClientSecretRenewalRequested',
  'ClientSecretRenewed', 'DcrAttemptOutcomeUnknown', 'DcrAttemptSuspicionsCleared',
  'DcrClientDeleted', 'DcrClientRegistered', 'DcrClientUpdateFailed', 'DcrClientUpdateRequested',
  'DcrClientUpdated', 'DcrRegistrationFailed', 'DcrRegistrationRequested', 'EnvironmentCreated',
  'MemberAdded', 'MemberRemoved', 'MemberRoleChanged', 'NotificationSettingsDeleted',
  'NotificationSettingsUpdated', 'OrphanClientDetected', 'PlanClosed', 'PlanCreated',
  'PrimaryOwnershipTransferred', 'ProviderCreated', 'ProviderDeleted', 'ProviderUpdated',
  'SubscriptionAccepted', 'SubscriptionClosed', 'SubscriptionCreated', 'SubscriptionPaused',
  'SubscriptionRejected', 'SubscriptionReopened', 'SubscriptionResumed', 'UserFirstSeen',
];

const listeners = new Set();
let source = null;
let retryTimer = null;
let stopped = true;
let attempts = 0;

function show(text) {
  const el = document.getElementById('live');
  if (el) el.textContent = `Live updates: ${text}`;
}

/** Calls `listener(envelope)` for every event; `listener(null)` after a reconnection. */
export function onEvent(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function deliver(envelope) {
  for (const listener of [...listeners]) {
    try {
      listener(envelope);
    } catch (error) {
      console.error('a live listener failed', error);
    }
  }
}

function later() {
  if (stopped || retryTimer) return;
  attempts += 1;
  const delay = Math.min(30000, 1000 * 2 ** Math.min(attempts, 5));
  show(`reconnecting in ${Math.round(delay / 1000)} s`);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    open(true);
  }, delay);
}

async function open(reconnecting) {
  if (stopped) return;
  let ticket;
  try {
    ticket = (await post(envPath('/events/_ticket'))).ticket;
  } catch (error) {
    show(`unavailable (${error.message})`);
    later();
    return;
  }
  if (stopped) return;
  const stream = new EventSource(`${envPath('/events')}?ticket=${encodeURIComponent(ticket)}`);
  source = stream;
  stream.addEventListener('open', () => {
    attempts = 0;
    show('connected');
    if (reconnecting) deliver(null);
  });
  const handle = (message) => {
    try {
      deliver(JSON.parse(message.data));
    } catch (error) {
      console.error('an event could not be read', error);
    }
  };
  for (const type of TYPES) stream.addEventListener(type, handle);
  stream.addEventListener('message', handle);
  stream.addEventListener('error', () => {
    // The ticket was used: EventSource's own reconnection would be refused. A new ticket,
    // a new stream.
    stream.close();
    if (source === stream) source = null;
    later();
  });
}

export function start() {
  if (!stopped) return;
  stopped = false;
  show('connecting');
  open(false);
}

export function stop() {
  stopped = true;
  if (retryTimer) clearTimeout(retryTimer);
  retryTimer = null;
  if (source) source.close();
  source = null;
  show('off');
}

// Served by the browser test's static server on another port than the api: the api must allow
// this origin (cors_allowed_origins) for any of this to work. The token comes from the test
// server's /config.json, never from a URL.
const result = document.getElementById('result');
const events = document.getElementById('events');

async function main() {
  const config = await (await fetch('/config.json')).json();
  const api = `${config.api}/v1/environments/DEFAULT`;
  const auth = { Authorization: `Bearer ${config.token}` };
  let ticket;
  try {
    const answer = await fetch(`${api}/events/_ticket`, { method: 'POST', headers: auth });
    ticket = (await answer.json()).ticket;
  } catch (error) {
    // A disallowed origin: the browser blocks the call (no CORS headers).
    result.textContent = 'blocked';
    return;
  }
  const stream = new EventSource(`${api}/events?ticket=${encodeURIComponent(ticket)}`);
  stream.addEventListener('ApplicationCreated', (message) => {
    const envelope = JSON.parse(message.data);
    events.textContent += `${envelope.type} ${envelope.data.name || ''}\n`;
  });
  stream.addEventListener('open', async () => {
    const created = await fetch(`${api}/applications`, {
      method: 'POST',
      headers: { ...auth, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'From another origin', type: 'simple' }),
    });
    const consistency = created.headers.get('x-consistency-token');
    result.textContent = created.status === 201 && consistency ? 'created' : `failed ${created.status}`;
  }, { once: true });
}

main().catch((error) => { result.textContent = `failed: ${error}`; });

// The admin API as the page uses it: JSON requests (admin/README.md, "Endpoints"), the
// Prometheus text of /metrics, and the live events WebSocket, reconnected after a loss.
// An error from the API is thrown as an Error whose message is the API's one-line error.
// When the API has a token (admin/README.md, "Authentication"), the first 401 asks for it;
// it is kept for this tab only (sessionStorage) and sent as Authorization: Bearer, and
// offered to the WebSocket as the subprotocol bearer.TOKEN beside mailtap.events.

const TOKEN_KEY = 'mailtap-admin-token';
const storedToken = () => sessionStorage.getItem(TOKEN_KEY) || '';

function withToken(headers, token) {
  return token ? {...headers, Authorization: `Bearer ${token}`} : headers;
}

// fetch with the token. A 401 for the token it sent asks for one (a 401 for an older token
// retries with the one given meanwhile: prompt() blocks, so parallel requests ask once).
async function authorizedFetch(path, init = {}) {
  const sent = storedToken();
  const response = await fetch(path, {...init, headers: withToken(init.headers || {}, sent)});
  if (response.status !== 401) return response;
  if (storedToken() === sent) {
    const given = (window.prompt('This mailtap admin API needs its token (admin_token_file):') || '').trim();
    if (given) sessionStorage.setItem(TOKEN_KEY, given);
  }
  const now = storedToken();
  return now && now !== sent ? fetch(path, {...init, headers: withToken(init.headers || {}, now)}) : response;
}

async function errorOf(response) {
  try {
    const doc = await response.json();
    if (doc && typeof doc.error === 'string') return new Error(doc.error);
  } catch (_) { /* not JSON: the status says it */ }
  return new Error(`HTTP ${response.status}`);
}

export async function getJson(path) {
  const response = await authorizedFetch(path, {headers: {Accept: 'application/json'}, cache: 'no-store'});
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

// POST or DELETE with a JSON body (the API takes mutations only with a JSON or TOML body).
export async function sendJson(method, path, doc = {}) {
  const response = await authorizedFetch(path, {
    method,
    headers: {'Content-Type': 'application/json', Accept: 'application/json'},
    body: JSON.stringify(doc),
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export async function getText(path) {
  const response = await authorizedFetch(path, {cache: 'no-store'});
  if (!response.ok) throw await errorOf(response);
  return response.text();
}

// Saves what `path` serves as a file named `filename`: fetched with the token (a plain link
// cannot send one), handed to the browser as a blob.
export async function download(path, filename) {
  const response = await authorizedFetch(path, {cache: 'no-store'});
  if (!response.ok) throw await errorOf(response);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// Reconnection waits: from 0.5 s, doubled, at most 5 s.
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 5000;

// The events WebSocket (GET /api/v1/events): each parsed event goes to every listener;
// `onState` hears 'live', 'reconnecting'. Returns {listen(fn) -> unlisten, live() -> bool}.
export function connectEvents(onState) {
  const listeners = new Set();
  let wait = RECONNECT_FIRST_MS;
  let live = false;
  const setState = (state) => {
    live = state === 'live';
    onState(state);
  };
  const open = () => {
    const token = storedToken();
    let socket;
    try {
      socket = new WebSocket(`ws://${location.host}/api/v1/events`, token ? ['mailtap.events', `bearer.${token}`] : []);
    } catch (_) {   // a token that is not a valid subprotocol name: refused like a wrong one
      socket = new WebSocket(`ws://${location.host}/api/v1/events`);
    }
    socket.addEventListener('open', () => {
      wait = RECONNECT_FIRST_MS;
      setState('live');
      // Events were missed while away: listeners refresh as after a 'dropped'.
      for (const fn of listeners) fn({type: 'connected'});
    });
    socket.addEventListener('message', (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (_) { return; }
      for (const fn of listeners) fn(event);
    });
    socket.addEventListener('close', () => {
      setState('reconnecting');
      setTimeout(open, wait);
      wait = Math.min(wait * 2, RECONNECT_MAX_MS);
    });
  };
  open();
  return {
    listen(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    live: () => live,
  };
}

// The web UI's entry (admin/ui/README.md): one events connection for the page, and the view
// the location's hash names: #/ (sessions), #/session/ID, #/faults, #/metrics. A view is
// mount(root, context) -> unmount; the previous one is unmounted before the next mounts.
import {connectEvents} from './api.js';
import {mountFaults} from './faults.js';
import {mountMetrics} from './metrics.js';
import {mountSession} from './session.js';
import {mountSessions} from './sessions.js';

const views = {
  sessions: mountSessions,
  session: mountSession,
  faults: mountFaults,
  metrics: mountMetrics,
};

const liveBadge = document.getElementById('live');
const events = connectEvents((state) => {
  liveBadge.dataset.state = state;
  liveBadge.textContent = state;
});

let unmount = null;

function route() {
  if (unmount) unmount();
  unmount = null;
  const root = document.getElementById('view');
  root.replaceChildren();
  // "#/session/ID" -> ["session", "ID"]; the ID is percent-decoded once.
  const [name = '', ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const view = views[name] ? name : 'sessions';
  let param = '';
  try { param = decodeURIComponent(rest.join('/')); } catch (_) { param = ''; }
  for (const link of document.querySelectorAll('nav a')) {
    const current = link.dataset.view === (view === 'session' ? 'sessions' : view);
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  root.dataset.view = view;
  unmount = views[view](root, {events, param});
}

window.addEventListener('hashchange', route);
route();

// The live sessions table (#/): the newest page of GET /api/v1/sessions, kept current by the
// events WebSocket. A session_started event adds an "in progress" row at once; a
// session_ended event refetches the page (again, shortly, while the capture has no end
// record yet: the relay publishes the event before the capture's end is written). Without
// the WebSocket (refused: too many subscribers; or lost) the page is refetched every 2 s.
import {getJson} from './api.js';
import {el, replaceChildren} from './dom.js';
import {clockTime, duration} from './format.js';

const PAGE_ROWS = 100;
// After a session_ended: refetch after this long, and again while its row is not final,
// at most this many times.
const REFRESH_DELAY_MS = 30;
const FINAL_RETRY_MS = 100;
const FINAL_RETRIES = 30;
const POLL_WITHOUT_EVENTS_MS = 2000;
const COLUMNS = ['Time', 'Client', 'Sender', 'Recipients', 'Outcome', 'Total time', 'Faults'];

export function mountSessions(root, {events}) {
  const status = el('p', {class: 'muted', id: 'sessions-status'}, 'loading…');
  const body = el('tbody', {id: 'sessions-body'});
  root.append(
    el('h1', {}, 'Sessions'),
    status,
    el('table', {class: 'grid', id: 'sessions'},
      el('thead', {}, el('tr', {}, COLUMNS.map((c) => el('th', {scope: 'col'}, c)))),
      body));

  let rows = [];                       // the API's page, newest first
  const started = new Map();           // id -> in-progress row from events, until the API lists it
  const waitingEnd = new Set();        // ids whose session_ended came before their capture's end
  let timer = null;
  let retries = 0;
  let mounted = true;

  const render = () => {
    const listed = new Set(rows.map((r) => r.id));
    const fresh = [...started.values()].filter((r) => !listed.has(r.id)).sort((a, b) => (a.id < b.id ? 1 : -1));
    replaceChildren(body, [...fresh, ...rows].map(rowElement));
    if (fresh.length + rows.length === 0) body.append(el('tr', {}, el('td', {colspan: COLUMNS.length, class: 'muted'}, 'No sessions yet: send mail through the relay.')));
  };

  const refresh = async () => {
    try {
      const page = await getJson(`/api/v1/sessions?limit=${PAGE_ROWS}`);
      if (!mounted) return;
      rows = page.sessions;
      for (const row of rows) {
        if (row.end_reason !== null) waitingEnd.delete(row.id);
        started.delete(row.id);
      }
      status.textContent = `${rows.length} session${rows.length === 1 ? '' : 's'}${page.more ? ' (the newest)' : ''}`;
      render();
      if (waitingEnd.size > 0 && retries++ < FINAL_RETRIES) schedule(FINAL_RETRY_MS);
      else waitingEnd.clear();
    } catch (err) {
      status.textContent = `cannot list sessions: ${err.message}`;
    }
  };

  const schedule = (ms) => {
    if (timer === null) timer = setTimeout(() => { timer = null; refresh(); }, ms);
  };

  const unlisten = events.listen((event) => {
    if (event.type === 'session_started') {
      started.set(event.session, {id: event.session, started_ms: event.unix_ms, client: event.client,
        outcome: 'in progress', end_reason: null, faults: 0, fault_rules: [], recipients: []});
      render();
    } else if (event.type === 'fault' && started.has(event.session)) {
      const row = started.get(event.session);
      row.faults += 1;
      if (!row.fault_rules.includes(event.rule)) row.fault_rules.push(event.rule);
      render();
    } else if (event.type === 'session_ended') {
      waitingEnd.add(event.session);
      retries = 0;
      schedule(REFRESH_DELAY_MS);
    } else if (event.type === 'dropped' || event.type === 'connected') {
      schedule(0);
    }
  });

  const poll = setInterval(() => { if (!events.live()) refresh(); }, POLL_WITHOUT_EVENTS_MS);
  refresh();
  return () => {
    mounted = false;
    clearTimeout(timer);
    clearInterval(poll);
    unlisten();
  };
}

function rowElement(row) {
  const link = `#/session/${encodeURIComponent(row.id)}`;
  // No start time: a capture the reader refuses, or a session whose header is not written yet.
  const time = row.started_at ? clockTime(row.started_at)
    : row.started_ms !== undefined ? new Date(row.started_ms).toLocaleTimeString([], {hour12: false}) : '\u2014';
  const tr = el('tr', {'data-id': row.id, 'data-outcome': row.outcome, class: 'clickable', title: row.id},
    el('td', {class: 'nowrap'}, el('a', {href: link}, time)),
    el('td', {class: 'nowrap'}, row.client || ''),
    el('td', {}, senderText(row)),
    el('td', {}, recipientsText(row)),
    el('td', {class: 'outcome nowrap'}, row.outcome),
    el('td', {class: 'num'}, row.end_reason === null ? '' : duration(row.duration_us)),
    el('td', {class: 'num faults'}, faultsText(row)));
  tr.addEventListener('click', (e) => {
    if (e.target.tagName !== 'A') location.hash = link;
  });
  return tr;
}

function senderText(row) {
  if (row.without_mail) return '(no MAIL)';   // a BDAT without MAIL: no sender, which '<>' would misstate
  if (row.sender === undefined || row.sender === null) return '';
  return row.sender === '' ? '<>' : row.sender;   // the null reverse-path (RFC 5321 4.5.5)
}

function recipientsText(row) {
  const list = (row.recipients || []).join(', ');
  const more = (row.recipients_total || 0) - (row.recipients || []).length;
  return more > 0 ? `${list} +${more} more` : list;
}

function faultsText(row) {
  if (!row.faults) return '';
  const rules = row.fault_rules || [];
  return rules.length ? `${row.faults} (${rules.join(', ')})` : String(row.faults);
}

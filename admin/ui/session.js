// One session (#/session/ID): the `mailtap show --json` document of GET /api/v1/sessions/ID
// as a summary, the stage waterfall (waterfall.js), the transactions, and the transcript in
// time order with `mailtap show`'s markers (C> client command, U> the relay's own command
// upstream, S< upstream reply, R> reply to the client, F! fault, == TLS, !! note). Body
// bytes are summed, not shown; the raw capture is a download.
import {download, getJson} from './api.js';
import {el, replaceChildren} from './dom.js';
import {bytes, duration} from './format.js';
import {drawWaterfall} from './waterfall.js';

export function mountSession(root, {param: id}) {
  const holder = el('div', {id: 'session'}, el('p', {class: 'muted'}, 'loading…'));
  root.append(el('p', {}, el('a', {href: '#/'}, '← all sessions')), holder);
  let mounted = true;
  getJson(`/api/v1/sessions/${encodeURIComponent(id)}`)
    .then((doc) => { if (mounted) replaceChildren(holder, sessionParts(doc)); })
    .catch((err) => { if (mounted) replaceChildren(holder, el('p', {class: 'error', role: 'alert'}, err.message)); });
  return () => { mounted = false; };
}

// The raw capture as a download. The link works by itself where the API has no token; the
// click fetches it with the token (api.js download), which a plain link cannot send.
function rawDownload(id) {
  const path = `/api/v1/sessions/${encodeURIComponent(id)}/raw`;
  const problem = el('span', {class: 'error', role: 'alert'});
  const link = el('a', {
    href: path,
    download: `${id}.jsonl`,
    id: 'raw-download',
    onclick: (event) => {
      event.preventDefault();
      replaceChildren(problem);
      download(path, `${id}.jsonl`).catch((err) => replaceChildren(problem, ` cannot download: ${err.message}`));
    },
  }, 'download the raw capture');
  return el('p', {}, link, problem);
}

function sessionParts(doc) {
  return [
    el('h1', {}, 'Session ', el('code', {}, doc.id)),
    summary(doc),
    rawDownload(doc.id),
    el('h2', {}, 'Stages'),
    el('p', {class: 'legend'},
      el('span', {class: 'key wf-key-bar'}), ' relay ',
      el('span', {class: 'key wf-key-upstream'}), ' upstream ',
      el('span', {class: 'key wf-key-think'}), ' sender think time'),
    el('div', {class: 'scroll'}, drawWaterfall(doc)),
    el('h2', {}, `Transactions (${doc.transactions.length})`),
    transactions(doc.transactions),
    el('h2', {}, 'Transcript'),
    transcript(doc.events),
  ];
}

function summary(doc) {
  const items = [
    ['client', `${doc.client} → ${doc.upstream}`],
    ['started', doc.started_at],
    ['outcome', doc.outcome],
    ['end', [doc.end_reason ?? (doc.in_progress === false ? '(cut short: no end record)' : '(in progress)'),
             doc.end_detail].filter(Boolean).join(': ')],
    ['duration', duration(doc.duration_us)],
    ['capture', doc.complete ? 'complete' : 'incomplete'],
  ];
  return el('dl', {class: 'summary'}, items.map(([k, v]) => [el('dt', {}, k), el('dd', {'data-field': k}, v)]));
}

function transactions(list) {
  if (!list.length) return el('p', {class: 'muted'}, 'none');
  return el('table', {class: 'grid', id: 'transactions'},
    el('thead', {}, el('tr', {}, ['#', 'From', 'To', 'Size', 'Final reply', 'Outcome'].map((h) => el('th', {scope: 'col'}, h)))),
    el('tbody', {}, list.map((t, i) => el('tr', {},
      el('td', {}, String(i + 1)),
      el('td', {}, t.without_mail ? '(no MAIL)' : `<${t.mail_from}>`),
      el('td', {}, t.rcpt_to.map((r, j) => `<${r}> (${t.rcpt_codes[j] ?? '?'})`).join(', ')),
      el('td', {class: 'num'}, bytes(t.size)),
      el('td', {}, t.final_reply ? `${t.final_reply.code} ${t.final_reply.enhanced} ${t.final_reply.text}`.replace(/\s+/g, ' ') : ''),
      el('td', {}, t.outcome)))));
}

const MARKERS = {
  'command:client': 'C>', 'command:upstream': 'U>',
  'reply:upstream': 'S<', 'reply:client': 'R>',
};

function marker(e) {
  if (e.kind === 'fault') return 'F!';
  if (e.kind === 'tls') return '==';
  if (e.kind === 'note') return '!!';
  return MARKERS[`${e.kind}:${e.leg}`] || e.kind;
}

function transcript(events) {
  const shown = events.filter((e) => e.kind !== 'bytes');
  const bodyBytes = events.filter((e) => e.kind === 'bytes' && e.leg === 'client' && e.dir === 'in').reduce((n, e) => n + (e.size || 0), 0);
  return el('div', {},
    el('p', {class: 'muted'}, `${shown.length} events; ${bytes(bodyBytes)} from the client in all`),
    el('table', {class: 'transcript', id: 'transcript'},
      el('tbody', {}, shown.map((e) => el('tr', {'data-kind': e.kind},
        el('td', {class: 'num'}, `+${(e.t_us / 1000).toFixed(3)} ms`),
        el('td', {class: 'marker'}, marker(e)),
        el('td', {class: 'text'}, e.text))))));
}

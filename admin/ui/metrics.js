// A small metrics view (#/metrics): a few numbers read from GET /metrics (Prometheus text,
// admin/README.md "Metrics"), summed over their labels, refreshed every 2 s while shown.
import {getText} from './api.js';
import {el, replaceChildren} from './dom.js';
import {bytes} from './format.js';

const POLL_MS = 2000;
// [label, metric name, label filter or null, how to show the value]
const SHOWN = [
  ['sessions active', 'mailtap_sessions_active', null, String],
  ['sessions', 'mailtap_sessions_total', null, String],
  ['transactions', 'mailtap_transactions_total', null, String],
  ['messages delivered', 'mailtap_messages_delivered_total', null, String],
  ['replies 4xx', 'mailtap_replies_total', ['class', '4xx'], String],
  ['replies 5xx', 'mailtap_replies_total', ['class', '5xx'], String],
  ['faults injected', 'mailtap_faults_injected_total', null, String],
  ['upstream connect failures', 'mailtap_upstream_connect_failures_total', null, String],
  ['TLS failures', 'mailtap_tls_failures_total', null, String],
  ['capture bytes written', 'mailtap_capture_bytes_written_total', null, bytes],
  ['capture write failures', 'mailtap_capture_write_failures_total', null, String],
];

// Samples of the exposition: [{name, labels: {k: v}, value}]. Label values may hold escaped
// quotes (\"), which the pattern allows.
export function parseMetrics(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split('\n')) {
    if (raw.startsWith('#')) continue;
    const m = line.exec(raw);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || '').matchAll(label)) labels[l[1]] = l[2];
    samples.push({name: m[1], labels, value: Number(m[3])});
  }
  return samples;
}

function total(samples, name, filter) {
  return samples
    .filter((s) => s.name === name && (!filter || s.labels[filter[0]] === filter[1]))
    .reduce((sum, s) => sum + s.value, 0);
}

export function mountMetrics(root) {
  const cards = el('div', {class: 'cards', id: 'metrics'});
  const status = el('p', {class: 'muted'}, 'from ', el('code', {}, '/metrics'), ', every 2 s');
  root.append(el('h1', {}, 'Metrics'), status, cards);
  let mounted = true;
  const load = async () => {
    try {
      const samples = parseMetrics(await getText('/metrics'));
      if (!mounted) return;
      replaceChildren(cards, SHOWN.map(([label, name, filter, show]) =>
        el('div', {class: 'card', 'data-metric': label},
          el('div', {class: 'value'}, show(total(samples, name, filter))),
          el('div', {class: 'label'}, label))));
    } catch (err) {
      if (mounted) replaceChildren(cards, el('p', {class: 'error', role: 'alert'}, `cannot read /metrics: ${err.message}`));
    }
  };
  const timer = setInterval(load, POLL_MS);
  load();
  return () => {
    mounted = false;
    clearInterval(timer);
  };
}

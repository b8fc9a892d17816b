// The faults page (#/faults): the rules in force with their counters (GET /api/v1/faults,
// polled, and at once when a fault event arrives), a form that arms one rule (POST
// /api/v1/faults with a JSON object: the keys of policies/README.md, checked by the same
// loader as scenario files), a Disarm button per rule (DELETE /api/v1/faults/NAME), Reset
// (POST /api/v1/faults/reset) and loading a scenario file (POST /api/v1/scenarios). The
// API's one-line error is shown as it is.
import {getJson, sendJson} from './api.js';
import {el, replaceChildren} from './dom.js';

const POLL_MS = 2000;
const PHASES = ['connect', 'banner', 'ehlo', 'helo', 'starttls', 'auth', 'mail', 'rcpt', 'data', 'data_end',
  'bdat', 'rset', 'noop', 'vrfy', 'expn', 'help', 'quit', 'other'];
// The types the form arms, and which of its optional keys each takes (policies/README.md).
const TYPES = {
  reply: ['code', 'enhanced', 'text'],
  reply_and_close: ['code', 'enhanced', 'text'],
  disconnect: ['code', 'enhanced', 'text'],
  reset: [],
  delay: ['delay'],
};
const COLUMNS = ['Name', 'Type', 'Phases', 'Injected', 'Max', 'Active', 'Source', ''];
// Where a rule came from (the API's `source`): a reload (SIGHUP) keeps the configuration's
// rules and removes those armed over the API (README "Reloading").
const SOURCES = {
  config: ['config', 'from the configuration: kept by a reload'],
  api: ['API', 'armed over the API or this page: a reload (SIGHUP) removes it'],
};

export function mountFaults(root, {events}) {
  const status = el('p', {id: 'faults-status', role: 'status', class: 'muted'});
  const body = el('tbody', {id: 'faults-body'});
  const reset = el('button', {type: 'button', id: 'faults-reset'}, 'Reset all');
  const armForm = armFormElement();
  const scenarioForm = el('form', {id: 'scenario-form', class: 'inline'},
    el('label', {}, 'Scenario file on the relay\'s host ', el('input', {name: 'path', required: true, size: 50, placeholder: '/path/to/greylisting.toml'})),
    el('button', {type: 'submit'}, 'Load'));
  root.append(
    el('h1', {}, 'Faults'),
    status,
    el('table', {class: 'grid', id: 'faults'},
      el('thead', {}, el('tr', {}, COLUMNS.map((c) => el('th', {scope: 'col'}, c)))), body),
    el('p', {}, reset),
    el('h2', {}, 'Arm a fault'),
    armForm,
    el('h2', {}, 'Load a scenario'),
    scenarioForm);

  let mounted = true;
  const say = (text, isError = false) => {
    status.textContent = text;
    status.className = isError ? 'error' : 'muted';
  };

  const load = async () => {
    try {
      const {faults} = await getJson('/api/v1/faults');
      if (!mounted) return;
      replaceChildren(body, faults.map((rule) => ruleRow(rule, disarm)));
      if (!faults.length) body.append(el('tr', {}, el('td', {colspan: COLUMNS.length, class: 'muted'}, 'No fault rules in force.')));
    } catch (err) {
      say(`cannot list faults: ${err.message}`, true);
    }
  };

  // Each action: the request, then a message and a fresh list.
  const act = async (request, done) => {
    try {
      const result = await request();
      say(done(result));
    } catch (err) {
      say(err.message, true);
    }
    await load();
  };

  const disarm = (name) => act(() => sendJson('DELETE', `/api/v1/faults/${encodeURIComponent(name)}`),
    () => `disarmed ${name}`);
  reset.addEventListener('click', () => act(() => sendJson('POST', '/api/v1/faults/reset'),
    (r) => `reset: ${r.removed} rule(s) removed`));
  armForm.addEventListener('submit', (e) => {
    e.preventDefault();
    act(() => sendJson('POST', '/api/v1/faults', ruleOf(armForm)), (r) => `armed ${r.added.join(', ')}`);
  });
  scenarioForm.addEventListener('submit', (e) => {
    e.preventDefault();
    act(() => sendJson('POST', '/api/v1/scenarios', {path: scenarioForm.elements.path.value}),
      (r) => `loaded ${r.file}: ${r.added.join(', ')}`);
  });

  const timer = setInterval(load, POLL_MS);
  const unlisten = events.listen((event) => { if (event.type === 'fault') load(); });
  load();
  return () => {
    mounted = false;
    clearInterval(timer);
    unlisten();
  };
}

function ruleRow(rule, disarm) {
  return el('tr', {'data-rule': rule.name},
    el('td', {}, rule.name),
    el('td', {}, rule.type),
    el('td', {}, rule.phases.join(', ')),
    el('td', {class: 'num injected'}, String(rule.injected)),
    el('td', {class: 'num'}, rule.max_count === null ? '' : String(rule.max_count)),
    el('td', {}, rule.active ? 'yes' : 'no'),
    sourceCell(rule.source),
    el('td', {}, el('button', {type: 'button', class: 'disarm', onclick: () => disarm(rule.name)}, 'Disarm')));
}

function sourceCell(source) {
  const [text, title] = SOURCES[source] || [String(source), ''];
  return el('td', {class: 'source', title}, text);
}

function field(label, input) {
  return el('label', {}, el('span', {}, label), input);
}

function armFormElement() {
  const type = el('select', {name: 'type'}, Object.keys(TYPES).map((t) => el('option', {value: t}, t)));
  const phase = el('select', {name: 'phase'}, PHASES.map((p) => el('option', {value: p, selected: p === 'rcpt'}, p)));
  return el('form', {id: 'arm-form', class: 'fields'},
    field('name', el('input', {name: 'name', required: true, placeholder: 'mailbox-full'})),
    field('type', type),
    field('phase', phase),
    field('code', el('input', {name: 'code', type: 'number', min: 200, max: 599, placeholder: '452'})),
    field('enhanced', el('input', {name: 'enhanced', placeholder: '4.2.2'})),
    field('text', el('input', {name: 'text', placeholder: 'Mailbox full'})),
    field('delay', el('input', {name: 'delay', placeholder: '2s (type delay)'})),
    field('recipient', el('input', {name: 'recipient', placeholder: '*@full.example (optional)'})),
    field('max count', el('input', {name: 'max_count', type: 'number', min: 1, placeholder: '(no limit)'})),
    el('button', {type: 'submit'}, 'Arm'));
}

// The JSON rule the form describes: only the keys its type takes, and only those filled in
// (the loader refuses keys of another type).
function ruleOf(form) {
  const value = (name) => form.elements[name].value.trim();
  const type = value('type');
  const rule = {name: value('name'), type, phase: value('phase')};
  for (const key of TYPES[type] || []) {
    if (value(key) === '') continue;
    rule[key] = key === 'code' ? Number(value(key)) : value(key);
  }
  if (value('recipient') !== '') rule.recipient = value('recipient');
  if (value('max_count') !== '') rule.max_count = Number(value('max_count'));
  return rule;
}

// What every browser scenario shares (tests/ui/README.md): Debian's chromium driven by
// playwright-core (installed by tests/ui/install.sh into MAILTAP_UI_NODE, a folder of the
// build tree), a page that fails the scenario on any script error or console error (a CSP
// violation is one), screenshots into MAILTAP_UI_ARTIFACTS, swaks against the relay, and
// the one JSON line of observations that tests/integration/test_web_ui.py asserts on.
import {execFile} from 'node:child_process';
import {mkdirSync} from 'node:fs';
import {createRequire} from 'node:module';
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (tests/integration/test_web_ui.py sets it)`);
  return value;
};

export const adminUrl = () => env('MAILTAP_UI_URL');            // http://127.0.0.1:PORT
export const smtpPort = () => Number(env('MAILTAP_SMTP_PORT'));  // the relay's SMTP listener

const CHROMIUM = '/usr/bin/chromium';
// Every wait of a scenario is bounded; this is the longest.
export const WAIT_MS = 20000;

// Launches chromium headless (without its sandbox when root: the sandbox needs user
// namespaces a root test run does not set up) and opens a page that records errors, but for
// console errors matching one of `expected` (a request the scenario makes fail on purpose).
export async function openBrowser(expected = []) {
  const require = createRequire(path.join(env('MAILTAP_UI_NODE'), 'package.json'));
  const {chromium} = require('playwright-core');
  // --disable-dev-shm-usage: a container's /dev/shm is often too small for chromium.
  const args = ['--disable-dev-shm-usage', ...(process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [])];
  const browser = await chromium.launch({executablePath: CHROMIUM, headless: true, args});
  const page = await browser.newPage({viewport: {width: 1280, height: 800}});
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !expected.some((re) => re.test(m.text()))) errors.push(`console: ${m.text()}`);
  });
  page.setDefaultTimeout(WAIT_MS);
  return {browser, page, errors};
}

export async function screenshot(page, name) {
  const dir = env('MAILTAP_UI_ARTIFACTS');
  mkdirSync(dir, {recursive: true});
  const file = path.join(dir, `${name}.png`);
  await page.screenshot({path: file, fullPage: true});
  return file;
}

// swaks against the relay: {code (exit status), output}. Never throws on a failed send.
export function swaks(...args) {
  const argv = ['--server', `127.0.0.1:${smtpPort()}`, '--timeout', '30', ...args];
  return new Promise((resolve) => {
    execFile('/usr/bin/swaks', argv, {timeout: 60000}, (err, stdout, stderr) => {
      resolve({code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, output: stdout + stderr});
    });
  });
}

// Runs a scenario: its observations are printed as one JSON line; any failure, or any error
// the page logged, exits 1 with the reason (and a screenshot of where it stood).
// `expectedConsoleErrors`: patterns of console errors the scenario causes on purpose.
export async function runScenario(name, scenario, expectedConsoleErrors = []) {
  let opened = null;
  try {
    opened = await openBrowser(expectedConsoleErrors);
    const observed = await scenario(opened.page);
    if (opened.errors.length) throw new Error(`the page logged errors: ${opened.errors.join(' | ')}`);
    console.log(JSON.stringify(observed));
  } catch (err) {
    if (opened) await screenshot(opened.page, `${name}-failed`).catch(() => {});
    console.error(`${name}: ${err.stack || err}`);
    process.exitCode = 1;
  } finally {
    if (opened) await opened.browser.close();
  }
}

// Scenario: the faults page's other actions. Loads the scenario file MAILTAP_UI_SCENARIO,
// disarms one of its rules with its button, then resets them all; and arms a rule the
// loader refuses, whose one-line error the page must show. Observes the rule names in the
// table after each step and the status line.
import {adminUrl, runScenario, screenshot} from './lib.mjs';

const scenarioFile = process.env.MAILTAP_UI_SCENARIO;

await runScenario('manage_faults', async (page) => {
  await page.goto(`${adminUrl()}/#/faults`);
  const names = () => page.$$eval('#faults-body tr[data-rule]', (rows) => rows.map((r) => r.getAttribute('data-rule')));
  const waitForCount = (n) => page.waitForFunction((k) => document.querySelectorAll('#faults-body tr[data-rule]').length === k, n);

  await page.locator('#scenario-form [name="path"]').fill(scenarioFile);
  await page.locator('#scenario-form button[type="submit"]').click();
  await page.waitForSelector('#faults-body tr[data-rule]');
  const loaded = await names();
  const loadedStatus = await page.locator('#faults-status').textContent();
  await screenshot(page, 'manage_faults_loaded');

  await page.locator(`#faults-body tr[data-rule="${loaded[0]}"] button.disarm`).click();
  await waitForCount(loaded.length - 1);
  const afterDisarm = await names();

  await page.locator('#faults-reset').click();
  await waitForCount(0);
  const afterReset = await names();

  // A reply rule without its code: the loader's error, shown as it is.
  const form = page.locator('#arm-form');
  await form.locator('[name="name"]').fill('no-code');
  await form.locator('[name="type"]').selectOption('reply');
  await form.locator('button[type="submit"]').click();
  await page.waitForSelector('#faults-status.error');
  const refused = await page.locator('#faults-status').textContent();
  return {loaded, loaded_status: loadedStatus, after_disarm: afterDisarm, after_reset: afterReset,
    refused, after_refusal: await names()};
}, [/status of 400 \(Bad Request\)/]);   // the refused rule's POST

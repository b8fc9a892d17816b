// Scenario: arm a fault from the faults page and see the next message fail with it. Fills in
// the form (a reply rule at rcpt, code 452), waits for the rule in the table, sends with
// swaks, and reads the rule's counter on the page after the refusal. Observes swaks' exit
// status and transcript (the test asserts the reply code), and the counter.
import {adminUrl, runScenario, screenshot, swaks} from './lib.mjs';

await runScenario('arm_fault', async (page) => {
  await page.goto(`${adminUrl()}/#/faults`);
  const form = page.locator('#arm-form');
  await form.locator('[name="name"]').fill('full');
  await form.locator('[name="type"]').selectOption('reply');
  await form.locator('[name="phase"]').selectOption('rcpt');
  await form.locator('[name="code"]').fill('452');
  await form.locator('[name="enhanced"]').fill('4.2.2');
  await form.locator('[name="text"]').fill('Mailbox full');
  await form.locator('button[type="submit"]').click();
  const rule = page.locator('#faults-body tr[data-rule="full"]');
  await rule.waitFor();
  const status = await page.locator('#faults-status').textContent();
  const sent = await swaks('--from', 'alice@example.org', '--to', 'bob@example.net');
  // The page polls the rules and also reloads them on the fault event.
  await page.waitForFunction(() => {
    const cell = document.querySelector('#faults-body tr[data-rule="full"] td.injected');
    return cell && cell.textContent === '1';
  });
  const file = await screenshot(page, 'arm_fault');
  return {
    status,
    rule_cells: await rule.locator('td').allTextContents(),
    source_title: await rule.locator('td.source').getAttribute('title'),
    swaks_code: sent.code,
    swaks_output: sent.output,
    screenshot: file,
  };
});

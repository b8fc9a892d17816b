// Scenario: the sessions table without the events WebSocket (the relay refuses it: the test
// holds every subscriber slot). The page says it is not live, and still shows a message
// sent with swaks, by polling. Observes the badge's state and the row.
import {adminUrl, runScenario, screenshot, swaks} from './lib.mjs';

// The page polls every 2 s while not live.
const APPEAR_WITHIN_MS = 5000;

await runScenario('without_events', async (page) => {
  await page.goto(`${adminUrl()}/`);
  await page.waitForSelector('#live[data-state="reconnecting"]');
  const sent = await swaks('--from', 'alice@example.org', '--to', 'bob@example.net');
  const row = page.locator('#sessions-body tr[data-outcome="delivered"]').first();
  await row.waitFor({state: 'visible', timeout: APPEAR_WITHIN_MS});
  const cells = await row.locator('td').allTextContents();
  const state = await page.locator('#live').getAttribute('data-state');
  await screenshot(page, 'without_events');
  return {swaks_code: sent.code, cells, state};
}, [/WebSocket connection to .* failed/]);   // the refused upgrades

// Scenario: the sessions table is live. With the page open (and its events WebSocket
// connected), swaks sends a message through the relay; the row must appear within a second
// of swaks' end, without a reload. Then the metrics view counts it. Observes: how long it
// took, the row's cells, and the metrics view's numbers.
import {adminUrl, runScenario, screenshot, swaks} from './lib.mjs';

const APPEAR_WITHIN_MS = 1000;

await runScenario('live_table', async (page) => {
  await page.goto(`${adminUrl()}/`);
  await page.waitForSelector('#live[data-state="live"]');
  await page.waitForSelector('#sessions-status:not(:empty)');
  const before = await page.locator('#sessions-body tr[data-id]').count();
  // A reload would lose this: the row must come from the live update, not a new page.
  await page.evaluate(() => { window.__samePage = true; });
  const sent = await swaks('--from', 'alice@example.org', '--to', 'bob@example.net', '--header', 'Subject: live table');
  const ended = Date.now();
  const row = page.locator('#sessions-body tr[data-outcome="delivered"]').first();
  await row.waitFor({state: 'visible', timeout: APPEAR_WITHIN_MS});
  const appearedMs = Date.now() - ended;
  const cells = await row.locator('td').allTextContents();
  const id = await row.getAttribute('data-id');
  const file = await screenshot(page, 'live_table');
  const reloaded = await page.evaluate(() => window.__samePage !== true);
  await page.locator('nav a[data-view="metrics"]').click();
  await page.waitForSelector('#metrics .card');
  const metrics = Object.fromEntries(await page.$$eval('#metrics .card', (cards) =>
    cards.map((c) => [c.getAttribute('data-metric'), c.querySelector('.value').textContent])));
  await screenshot(page, 'metrics');
  return {
    swaks_code: sent.code,
    rows_before: before,
    appeared_ms: appearedMs,
    id,
    cells,
    reloaded,
    metrics,
    screenshot: file,
  };
});

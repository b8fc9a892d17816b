// Scenario: a relay whose admin API has a token (admin/README.md, "Authentication"). The page
// loads without it, asks for it once (a prompt, answered with MAILTAP_UI_TOKEN), then lists
// the sessions and goes live: the events WebSocket offers the token as a subprotocol. A
// message sent with swaks appears in the table. Observes: the prompts, the row, whether the
// token was kept for the tab, and the session's raw capture downloaded with the token.
import {readFileSync} from 'node:fs';

import {adminUrl, runScenario, screenshot, swaks} from './lib.mjs';

const token = process.env.MAILTAP_UI_TOKEN;

// The requests made before the token was given are refused on purpose: 401s in the console.
await runScenario('token', async (page) => {
  const prompts = [];
  page.on('dialog', async (dialog) => {
    prompts.push(dialog.type());
    await dialog.accept(token);
  });
  await page.goto(`${adminUrl()}/`);
  await page.waitForSelector('#live[data-state="live"]');
  const sent = await swaks('--from', 'alice@example.org', '--to', 'bob@example.net', '--header', 'Subject: token');
  const row = page.locator('#sessions-body tr[data-outcome="delivered"]').first();
  await row.waitFor({state: 'visible'});
  const cells = await row.locator('td').allTextContents();
  const file = await screenshot(page, 'token');
  const kept = await page.evaluate(() => sessionStorage.getItem('mailtap-admin-token'));
  // The session page's raw capture: a plain link could not send the token; the download can.
  await row.locator('a').first().click();
  await page.waitForSelector('#raw-download');
  const [saved] = await Promise.all([page.waitForEvent('download'), page.click('#raw-download')]);
  const raw = readFileSync(await saved.path(), 'utf8');
  const first = JSON.parse(raw.split('\n')[0]);
  return {swaks_code: sent.code, prompts, cells, kept_token: kept === token, screenshot: file,
          download_name: saved.suggestedFilename(), download_first_type: first.type, download_session: first.session};
}, [/401/, /WebSocket connection to .* failed: HTTP Authentication failed/]);

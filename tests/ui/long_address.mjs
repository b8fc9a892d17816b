// Scenario: a session whose sender and recipient are far longer than a table cell (the Cisco
// scenario's long-sender example sends a 330-character address). The sessions table must
// still fit the page: the long cells wrap, and every column, Faults the last, stays in view
// without a horizontal scroll bar. Observes: the table's and the page's widths, each header
// cell's right edge, and the row's cells.
import {adminUrl, runScenario, screenshot, swaks} from './lib.mjs';

const SENDER = 'x'.repeat(330) + '@example.com';
const RECIPIENT = 'y'.repeat(200) + '@example.net';

await runScenario('long_address', async (page) => {
  await page.goto(`${adminUrl()}/`);
  await page.waitForSelector('#live[data-state="live"]');
  const sent = await swaks('--from', SENDER, '--to', RECIPIENT, '--header', 'Subject: long address');
  const row = page.locator('#sessions-body tr[data-outcome="delivered"]').first();
  await row.waitFor({state: 'visible'});
  const cells = await row.locator('td').allTextContents();
  const widths = await page.evaluate(() => {
    const table = document.querySelector('#sessions');
    return {
      viewport: document.documentElement.clientWidth,
      page_scroll: document.documentElement.scrollWidth,
      table: table.getBoundingClientRect().width,
      header_right: [...table.querySelectorAll('thead th')].map((th) => Math.round(th.getBoundingClientRect().right)),
    };
  });
  const file = await screenshot(page, 'long_address');
  return {swaks_code: sent.code, sender: SENDER, recipient: RECIPIENT, cells, ...widths, screenshot: file};
});

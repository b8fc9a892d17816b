// Scenario: the sessions table lists a capture the reader refuses (test_web_ui.py writes one
// into the relay's captures directory before the page loads). Such a row has no started_at
// (admin/README.md, GET /api/v1/sessions), and a QA trial's new sessions had none either for
// up to a writer tick: its time cell must not say "Invalid Date". Observes: the unreadable
// row's cells.
import {adminUrl, runScenario, screenshot} from './lib.mjs';

await runScenario('unreadable_row', async (page) => {
  await page.goto(`${adminUrl()}/`);
  const row = page.locator('#sessions-body tr[data-outcome="unreadable"]').first();
  await row.waitFor({state: 'visible'});
  const cells = await row.locator('td').allTextContents();
  const file = await screenshot(page, 'unreadable_row');
  return {cells, screenshot: file};
});

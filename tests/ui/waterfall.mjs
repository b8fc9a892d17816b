// Scenario: a session's page. Opens the sessions table, clicks the session SESSION_ID
// (MAILTAP_UI_SESSION) and reads the page: the SVG waterfall's bars (stage and width), the
// transcript, and whether captured markup stayed text (MAILTAP_UI_MARKUP is a string that
// the session's transcript holds, as sent by the client).
import {adminUrl, runScenario, screenshot} from './lib.mjs';

const id = process.env.MAILTAP_UI_SESSION;
const markup = process.env.MAILTAP_UI_MARKUP || '';

await runScenario('waterfall', async (page) => {
  await page.goto(`${adminUrl()}/`);
  await page.locator(`#sessions-body tr[data-id="${id}"] a`).click();
  await page.waitForURL(`**/#/session/${id}`);
  await page.waitForSelector('svg.waterfall rect.wf-bar');
  const bars = await page.$$eval('svg.waterfall rect.wf-bar', (rects) =>
    rects.map((r) => ({stage: r.getAttribute('data-stage'), width: Number(r.getAttribute('width'))})));
  const transcript = await page.locator('#transcript').innerText();
  const file = await screenshot(page, 'waterfall');
  return {
    url_hash: await page.evaluate(() => location.hash),
    bars,
    upstream_bars: await page.locator('svg.waterfall rect.wf-upstream').count(),
    transcript_has_markup_text: markup !== '' && transcript.includes(markup),
    elements_in_transcript: await page.$$eval('#transcript td.text *', (nodes) => nodes.map((n) => n.tagName)),
    img_on_page: await page.locator('img').count(),
    pwned: await page.evaluate(() => window.__pwned === 1),
    screenshot: file,
  };
});

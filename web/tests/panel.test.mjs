// The review panel in Debian's Chromium, driven by playwright-core: sign in, the queue and its
// filters, a case refused before settlement with its missing claims, cleared after settlement
// once live updates show READY, a viewer who cannot decide, keyboard paths, and (when the node
// serves a local LLM) the chat page with its boxes filling in; the case's memory continuity
// ("no memory used"), and the memory lines of a view built by haca-review. Screenshots go to $OUT.
//
// crates/haca/tests/it/panel_browser.rs starts the node and runs this with:
//   HACA_URL, REVIEWER_TOKEN, VIEWER_TOKEN, CASE_ID, OUT, CHAT=1 to test the chat page, and
//   MEMORY_VIEW: a case's memory view (JSON) with shared, stale, over-age and foreign rows.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const url = env('HACA_URL');
const reviewer = env('REVIEWER_TOKEN');
const viewer = env('VIEWER_TOKEN');
const caseId = env('CASE_ID');
const out = env('OUT');
mkdirSync(out, { recursive: true });

const step = (s) => console.log(`panel: ${s}`);
const shot = async (page, name) => {
  await page.screenshot({ path: `${out}/${name}.png`, fullPage: true });
  step(`screenshot ${out}/${name}.png`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.setDefaultTimeout(15000);

  step('the sign-in form, reached by keyboard');
  await page.goto(`${url}/`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  const tokenField = page.getByLabel('Review token');
  await tokenField.focus();
  await page.keyboard.type('rt_not_a_token');
  await page.keyboard.press('Enter');
  await page.getByRole('alert').filter({ hasText: 'Not signed in' }).waitFor();
  await shot(page, '01-sign-in-refused');
  await tokenField.fill(reviewer);
  await page.keyboard.press('Enter');

  step('the queue, filtered by state');
  await page.getByRole('heading', { name: 'Review queue' }).waitFor();
  await page.getByRole('link', { name: caseId }).waitFor();
  await page.getByLabel('State').selectOption('READY');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByText('No case matches these filters.').waitFor();
  await page.getByLabel('State').selectOption('PROVISIONAL');
  await page.getByRole('button', { name: 'Filter' }).click();
  const link = page.getByRole('link', { name: caseId });
  await link.waitFor();
  await shot(page, '02-queue');

  step('the case, opened with the keyboard');
  await link.focus();
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: `Case ${caseId}` }).waitFor();
  assert.equal(await page.evaluate(() => document.body.dataset.caseState), 'PROVISIONAL');
  for (const box of ['artifact', 'route', 'execution', 'attestation', 'proof', 'data', 'memory', 'payment', 'settlement']) {
    await page.getByRole('region', { name: box, exact: true }).waitFor();
  }
  const settlement = page.getByRole('region', { name: 'settlement', exact: true });
  assert.match(await settlement.innerText(), /absent 1/);
  assert.match(await settlement.innerText(), /Never proves/);
  await page.getByRole('region', { name: 'Chronology' }).getByText('answer shown').waitFor();
  const memorySection = page.getByRole('region', { name: 'Memory continuity' });
  assert.match(await memorySection.innerText(), /No memory used/);
  assert.equal(await memorySection.locator('tr.mem-line').count(), 0);

  step('memory continuity lists each row of each run, warnings highlighted, markup as text');
  const memoryView = JSON.parse(env('MEMORY_VIEW'));
  await page.evaluate((m) => {
    const d = document.createElement('section');
    d.id = 'memory-fixture';
    d.setAttribute('aria-label', 'Memory fixture');
    d.innerHTML = memoryContinuityHtml(m);
    document.body.append(d);
  }, memoryView);
  const fixture = page.locator('#memory-fixture');
  const lines = fixture.locator('tbody tr.mem-line');
  assert.equal(await lines.count(), 5, 'one line per row per run');
  const line = async (i) => (await lines.nth(i).innerText()).replace(/\s+/g, ' ').trim();
  assert.match(await line(0), /m-shared 0x1111…1111 5d 0\.813 over age used by 2 runs/);
  assert.match(await line(1), /m-stale 0x1111…1111 45d 0\.813 stale and over age/);
  assert.match(await line(3), /m-fresh 0x1111…1111 1d 0\.813 fresh$/);
  assert.match(await line(4), /<img src=x onerror="window.__pwned=1"> 0x2222…2222 not the payer's 1d 0\.813 fresh/);
  assert.equal(await fixture.locator('img').count(), 0, 'a row id is text, never markup');
  assert.deepEqual(await lines.evaluateAll((ls) => ls.map((l) => l.classList.contains('mem-warn'))), [true, true, true, false, true]);
  const warnings = await fixture.locator('.warning').allInnerTexts();
  for (const w of ['Row shared by runs: memory row m-shared steered 2 runs', 'Used while stale: memory row m-stale', 'Over age: memory row m-shared', "Not the payer's row"]) {
    assert.ok(warnings.some((t) => t.includes(w)), `warning "${w}" in ${JSON.stringify(warnings)}`);
  }
  await fixture.screenshot({ path: `${out}/03a-memory-continuity.png` });
  await page.evaluate(() => document.getElementById('memory-fixture').remove());

  step('a clear before settlement is refused with the missing claims');
  await page.getByRole('button', { name: 'Clear', exact: true }).click();
  const refusal = page.getByRole('alert').filter({ hasText: 'Refused (not_ready)' });
  await refusal.waitFor();
  assert.match(await refusal.innerText(), /run\.settled/);
  assert.equal(await page.locator('#refusal-missing li').count(), 1);
  await shot(page, '03-clear-refused');

  step('live updates bring READY when the round commits');
  await page.waitForFunction(() => document.body.dataset.caseState === 'READY', null, { timeout: 90000 });
  assert.match(await settlement.innerText(), /settled 1/);
  await shot(page, '04-ready');

  step('the clear goes through, recorded with its log entry');
  await page.getByRole('button', { name: 'Clear', exact: true }).click();
  await page.getByRole('alert').filter({ hasText: 'Decision recorded: the case is CLEARED' }).waitFor();
  await page.waitForFunction(() => document.body.dataset.caseState === 'CLEARED');
  const decisions = page.getByRole('region', { name: 'Decisions' });
  assert.match(await decisions.innerText(), /clear by token/);
  assert.match(await decisions.innerText(), /appended as log entry \d+/);
  await shot(page, '05-cleared');

  step('a run opened from the runs table shows its nine boxes');
  await page.getByRole('button', { name: /^Show run / }).first().press('Enter');
  await page.getByRole('heading', { name: /^Run / }).waitFor();
  await page.getByRole('region', { name: /^settlement box of run/ }).getByText('run.settled').waitFor();

  step('a viewer reads but cannot decide');
  const vpage = await (await browser.newContext()).newPage();
  await vpage.goto(`${url}/#/case/${caseId}`);
  await vpage.getByLabel('Review token').fill(viewer);
  await vpage.getByRole('button', { name: 'Sign in' }).click();
  await vpage.getByRole('heading', { name: `Case ${caseId}` }).waitFor();
  assert.equal(await vpage.getByRole('button', { name: 'Clear', exact: true }).count(), 0);

  if (process.env.CHAT === '1') {
    step('the chat page streams an answer and fills in its boxes');
    await page.goto(`${url}/#/chat`);
    await page.getByRole('heading', { name: 'Chat' }).waitFor();
    await page.waitForFunction(() => document.querySelector('#chat-model option')?.value?.includes('gemma'));
    await page.getByLabel('Message').fill('Say hello in three words.');
    await page.keyboard.press('Enter');
    const turn = page.locator('li.turn').first();
    await turn.locator('.route').getByText('served by').waitFor({ timeout: 180000 });
    assert.ok((await turn.locator('.assistant p').innerText()).length > 0);
    await turn.getByRole('complementary', { name: 'Evidence for this turn' }).getByText('settlement settled').waitFor({ timeout: 60000 });
    await shot(page, '06-chat');
  }
  assert.deepEqual(pageErrors, [], 'the page threw no error');
  step('passed');
} finally {
  await browser.close();
}

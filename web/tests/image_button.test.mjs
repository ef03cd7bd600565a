// The chat page's image button in Debian's Chromium, driven by playwright-core: the image model
// is offered apart from the chat models, the message is drawn, the image shows with its SHA-256
// (the one the run's output lists), and the run's boxes fill in beside it.
//
// crates/haca/tests/it/images_e2e.rs starts a devnet with an image provider and runs this with
// HACA_URL and OUT (a screenshot goes there).
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';

const url = process.env.HACA_URL;
const out = process.env.OUT;
if (!url || !out) throw new Error('HACA_URL and OUT must be set');
mkdirSync(out, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.setDefaultTimeout(15000);
  await page.goto(`${url}/#/chat`);
  await page.waitForFunction(() => !document.getElementById('chat-image').disabled);
  const imageModels = await page.$$eval('#chat-image-model option', (os) => os.map((o) => o.value));
  assert.ok(imageModels.includes('pix/painter'), `image models: ${imageModels}`);
  await page.selectOption('#chat-image-model', 'pix/painter');
  const chatModels = await page.$$eval('#chat-model option', (os) => os.map((o) => o.value));
  assert.ok(!chatModels.includes('pix/painter'), `image models are not chat models: ${chatModels}`);

  await page.fill('#chat-input', 'a red kite');
  await page.click('#chat-image');
  const img = page.locator('.turn .images img');
  await img.waitFor();
  await page.waitForFunction(() => {
    const i = document.querySelector('.turn .images img');
    return i && i.complete && i.naturalWidth > 0;
  });
  const width = await img.evaluate((i) => i.naturalWidth);
  assert.equal(width, 16, 'the PNG the provider drew, decoded by the browser');
  const run = await page.$eval('.turn', (li) => li.dataset.run);
  const served = await (await fetch(`${url}/v1/runs/${run}`)).json();
  const sha = served.output.images[0].sha256;
  const caption = await page.textContent('.turn figcaption');
  assert.ok(caption.includes(sha.slice(0, 16)), `caption ${caption} names ${sha}`);
  // The run's own boxes fill in beside it: execution signed, then settled.
  await page.waitForFunction(() => [...document.querySelectorAll('.turn .evidence .chip')]
    .some((c) => c.textContent.includes('settlement') && c.textContent.includes('settled')), null, { timeout: 30000 });
  await page.screenshot({ path: `${out}/image-button.png`, fullPage: true });
  assert.deepEqual(pageErrors, []);
  console.log('image button: drawn, hashed, boxes filled in');
} finally {
  await browser.close();
}

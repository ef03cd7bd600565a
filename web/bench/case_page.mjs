// How long a case page with many runs takes to render in Chromium, end to end: navigation,
// the API reading and checking every run's receipt, and the page building its DOM.
//
//   node web/bench/case_page.mjs --haca target/release/haca [--runs 1000] [--loads 7]
//
// Starts a devnet (free runs, no enclave, no LLM) in a temporary directory, makes the runs,
// waits until every one is settled, opens one case over all of them, then loads the case page
// --loads times in one headless Chromium and prints the medians: the whole load (navigation
// start to the case rendered), the API answer alone, and the DOM build alone.
import { chromium } from 'playwright-core';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const haca = arg('haca', 'target/release/haca');
const runs = Number(arg('runs', '1000'));
const loads = Number(arg('loads', '7'));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const log = (s) => process.stderr.write(`${s}\n`);

const dir = mkdtempSync(join(tmpdir(), 'haca-case-bench-'));
const node = spawn(haca, ['devnet', '--listen', '127.0.0.1:0', '--data-dir', dir, '--price-per-request', '0', '--no-llm', '--no-enclave'],
  { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, HACA_LOG: 'warn' } });
const url = await new Promise((resolve, reject) => {
  let buf = '';
  node.stdout.on('data', (d) => {
    buf += d;
    const m = buf.match(/url:\s+(\S+)/);
    if (m) resolve(m[1]);
  });
  node.on('exit', (c) => reject(new Error(`devnet exited with ${c}`)));
});
const post = async (path, body, token) => {
  const r = await fetch(url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
};

try {
  while (!(await fetch(`${url}/readyz`).then((r) => r.ok).catch(() => false))) await new Promise((r) => setTimeout(r, 100));
  log(`devnet at ${url}; making ${runs} runs`);
  const input = { input: { shape: [1, 784], data: Array.from({ length: 784 }, (_, i) => (i % 17) / 17) } };
  const ids = [];
  for (let i = 0; i < runs; i += 16) {
    const batch = await Promise.all(Array.from({ length: Math.min(16, runs - i) }, () => post('/v1/infer', { model: 'example/mnist-mlp', input })));
    ids.push(...batch.map((b) => b.run_id));
    if ((i / 16) % 10 === 0) log(`  ${ids.length}/${runs} runs`);
  }
  log('waiting until every run is settled');
  for (;;) {
    const s = await fetch(`${url}/v1/runs/${ids[ids.length - 1]}/settlement`).then((r) => r.json());
    if (s.status === 'settled') break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const out = execFileSync(haca, ['token', 'create', '--role', 'reviewer', '--node', url], { encoding: 'utf8' });
  const token = out.trim().split('\n').pop();
  const c = await post('/v1/cases', { runs: ids }, token);
  log(`case ${c.id} over ${ids.length} runs: ${c.state}`);

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addInitScript((t) => sessionStorage.setItem('haca.token', t), token);
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Performance.enable');
  const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const total = [];
  const apiMs = [];
  const domMs = [];
  for (let i = 0; i < loads + 1; i++) {
    await page.goto('about:blank');
    const before = await metrics();
    await page.goto(`${url}/#/case/${c.id}`);
    await page.waitForFunction(() => document.getElementById('main').dataset.rendered, null, { timeout: 60000, polling: 'raf' });
    const t = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const api = performance.getEntriesByType('resource').find((r) => /\/v1\/cases\/[^/]+$/.test(r.name));
      const script = performance.getEntriesByType('resource').find((r) => r.name.endsWith('/panel.js'));
      return {
        total: performance.now() - nav.startTime,
        api: api ? api.duration : NaN,
        apiStart: api ? api.startTime - nav.startTime : NaN,
        apiEnd: api ? api.responseEnd - nav.startTime : NaN,
        scriptEnd: script ? script.responseEnd - nav.startTime : NaN,
        dom: Number(document.getElementById('main').dataset.renderMs),
      };
    });
    const after = await metrics();
    const d = (k) => Math.round((after[k] - before[k]) * 1000);
    t.browser = `script ${d('ScriptDuration')} ms, style ${d('RecalcStyleDuration')} ms, layout ${d('LayoutDuration')} ms, tasks ${d('TaskDuration')} ms`;
    if (i === 0) continue; // the first load warms the browser's caches
    total.push(t.total);
    apiMs.push(t.api);
    domMs.push(t.dom);
    log(`  load ${i}: ${t.total.toFixed(0)} ms (script loaded at ${t.scriptEnd.toFixed(0)}, API ${t.apiStart.toFixed(0)}..${t.apiEnd.toFixed(0)} = ${t.api.toFixed(0)} ms, DOM ${t.dom} ms; ${t.browser})`);
  }
  await browser.close();
  const result = {
    runs: ids.length,
    loads,
    cores: cpus().length,
    median_page_ms: Math.round(median(total)),
    median_api_ms: Math.round(median(apiMs)),
    median_dom_ms: Math.round(median(domMs)),
    min_page_ms: Math.round(Math.min(...total)),
    max_page_ms: Math.round(Math.max(...total)),
  };
  console.log(JSON.stringify(result));
} finally {
  node.kill();
  rmSync(dir, { recursive: true, force: true });
}

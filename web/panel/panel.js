// haca's review panel and chat page. One script, no build step: the binary serves it as is.
// Every value from the server goes through esc() before it reaches innerHTML.
'use strict';

const STATES = ['HOLD', 'PROVISIONAL', 'READY', 'CLEARED', 'REJECTED'];
const BOXES = ['artifact', 'route', 'execution', 'attestation', 'proof', 'data', 'memory', 'payment', 'settlement'];
const CLAIM_WORDS = { holds: 'holds', fails: 'fails', not_present: 'not present', unchecked: 'unchecked' };

const main = () => document.getElementById('main');
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const time = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '—');
const short = (id, n = 12) => String(id || '').replace(/^sha256:/, '').slice(0, n);
const claimKey = (s) => String(s).replace(' ', '_');

const session = {
  token: sessionStorage.getItem('haca.token'),
  me: null,
  live: null, // AbortController of the case's event stream
  view: null, // the case view on screen
};

function announce(text) {
  const live = document.getElementById('live');
  live.textContent = '';
  setTimeout(() => { live.textContent = text; }, 30);
}

async function api(path, opts = {}) {
  const headers = {};
  if (session.token && !opts.anonymous) headers.Authorization = `Bearer ${session.token}`;
  if (opts.apiKey) headers.Authorization = `Bearer ${opts.apiKey}`;
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method: opts.method || 'GET',
    headers,
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    signal: opts.signal,
  });
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { raw: text }; }
  if (!r.ok) {
    const e = new Error(body?.error?.message || `HTTP ${r.status}`);
    e.status = r.status;
    e.body = body;
    throw e;
  }
  return body;
}

// Reads a server-sent event stream from a fetch response, calling onEvent(name, data).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) onEvent(name, data.join('\n'));
    }
  }
}

function stopLive() {
  if (session.live) session.live.abort();
  session.live = null;
}

// Moves focus to the new page's heading on navigation, not on first load: a fresh page starts
// at the top (the skip link first).
function focusHeading() {
  if (!session.navigated) return;
  const h = main().querySelector('h1');
  if (h) { h.setAttribute('tabindex', '-1'); h.focus(); }
}

function setNav(which) {
  for (const [id, name] of [['nav-queue', 'queue'], ['nav-chat', 'chat']]) {
    const a = document.getElementById(id);
    if (name === which) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const who = document.getElementById('who');
  const out = document.getElementById('sign-out');
  who.textContent = session.me ? `Signed in: token ${session.me.id} (${session.me.role})` : '';
  out.hidden = !session.token;
}

async function route() {
  stopLive();
  const hash = location.hash || '#/queue';
  const [path, query] = hash.slice(1).split('?');
  const parts = path.split('/').filter(Boolean);
  const page = parts[0] || 'queue';
  // A case page starts loading its case at once, beside the token check.
  const caseId = page === 'case' && parts[1] ? decodeURIComponent(parts[1]) : null;
  const casePromise = session.token && caseId ? api(`/v1/cases/${encodeURIComponent(caseId)}`) : null;
  if (casePromise) casePromise.catch(() => {}); // awaited below
  if (session.token && !session.me) {
    try { session.me = await api('/v1/review/me'); } catch (e) {
      if (e.status === 401 || e.status === 403) { signOut(); return renderSignIn(e.message); }
    }
  }
  setNav(page === 'chat' ? 'chat' : 'queue');
  if (page === 'chat') return renderChat();
  if (!session.token) return renderSignIn();
  if (caseId) return renderCase(caseId, casePromise);
  return renderQueue(new URLSearchParams(query || ''));
}

function signOut() {
  session.token = null;
  session.me = null;
  sessionStorage.removeItem('haca.token');
  setNav('queue');
}

// ---- sign in ---------------------------------------------------------------------------

function renderSignIn(message) {
  main().innerHTML = `
    <h1>Sign in</h1>
    <p>Cases and decisions need a review token. An operator creates one on the node's machine with
    <code>haca token create --role reviewer</code> (or <code>--role viewer</code> to read only).</p>
    <form id="signin" class="stack">
      <label for="token">Review token</label>
      <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required>
      <button type="submit">Sign in</button>
    </form>
    <p id="signin-error" class="error" role="alert">${esc(message || '')}</p>
    <p>The <a href="#/chat">chat page</a> needs no review token.</p>`;
  document.getElementById('signin').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = document.getElementById('token').value.trim();
    session.token = token;
    try {
      session.me = await api('/v1/review/me');
      sessionStorage.setItem('haca.token', token);
      session.navigated = true;
      route();
    } catch (e) {
      session.token = null;
      document.getElementById('signin-error').textContent = `Not signed in: ${e.message}`;
      document.getElementById('token').focus();
    }
  });
  focusHeading();
}

// ---- queue -----------------------------------------------------------------------------

function stateTag(s) {
  return `<span class="state state-${esc(String(s).toLowerCase())}">${esc(s)}</span>`;
}

async function renderQueue(q) {
  const classes = session.me?.classes || [];
  const opt = (v, cur) => `<option value="${esc(v)}"${v === cur ? ' selected' : ''}>${esc(v || 'any')}</option>`;
  const canOpen = session.me?.role === 'reviewer';
  main().innerHTML = `
    <h1>Review queue</h1>
    <form id="filters" class="filters" aria-label="Filter the queue">
      <label>State <select name="state">${['', ...STATES].map((s) => opt(s, q.get('state') || '')).join('')}</select></label>
      <label>Policy <select name="policy">${['', ...classes.map((c) => c.name)].map((s) => opt(s, q.get('policy') || '')).join('')}</select></label>
      <label>Model label <input name="model" value="${esc(q.get('model') || '')}" placeholder="example/mnist-mlp"></label>
      <label>Artifact <input name="artifact" value="${esc(q.get('artifact') || '')}" placeholder="sha256:…"></label>
      <button type="submit">Filter</button>
    </form>
    <div id="queue-body"><p>Loading cases…</p></div>
    ${canOpen ? `
    <details class="open-case">
      <summary>Open a case</summary>
      <form id="open-case" class="stack">
        <label for="open-runs">Run ids, one per line</label>
        <textarea id="open-runs" rows="3" required spellcheck="false"></textarea>
        <label for="open-policy">Policy</label>
        <select id="open-policy">${classes.map((c) => `<option value="${esc(c.name)}">${esc(c.name)}: requires ${esc(c.required.join(', '))}</option>`).join('')}</select>
        <button type="submit">Open case</button>
      </form>
      <p id="open-error" class="error" role="alert"></p>
    </details>` : ''}`;
  document.getElementById('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(ev.target)) if (v) p.set(k, v);
    location.hash = `#/queue?${p}`;
  });
  if (canOpen) {
    document.getElementById('open-case').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const runs = document.getElementById('open-runs').value.split(/\s+/).filter(Boolean);
      try {
        const c = await api('/v1/cases', { method: 'POST', body: { runs, policy: document.getElementById('open-policy').value } });
        location.hash = `#/case/${encodeURIComponent(c.id)}`;
      } catch (e) {
        document.getElementById('open-error').textContent = `Not opened: ${e.message}`;
      }
    });
  }
  focusHeading();
  const params = new URLSearchParams();
  for (const k of ['state', 'policy', 'model', 'artifact']) if (q.get(k)) params.set(k, q.get(k));
  let data;
  try {
    data = await api(`/v1/cases?${params}`);
  } catch (e) {
    document.getElementById('queue-body').innerHTML = `<p class="error" role="alert">${esc(e.message)}</p>`;
    return;
  }
  const rows = data.cases.map((c) => `
    <tr>
      <td><a href="#/case/${encodeURIComponent(c.id)}">${esc(c.id)}</a></td>
      <td>${stateTag(c.state)}</td>
      <td>${esc(c.policy)}</td>
      <td class="num">${c.runs}</td>
      <td>${c.models.map(esc).join(', ')}</td>
      <td>${c.artifacts.map((a) => `<code title="${esc(a)}">${esc(short(a))}</code>`).join(' ')}</td>
      <td>${c.missing_claims.length ? c.missing_claims.map((m) => `<span class="claim">${esc(m)}</span>`).join(' ') : '—'}</td>
      <td>${esc(time(c.created_at))}</td>
    </tr>`).join('');
  document.getElementById('queue-body').innerHTML = data.cases.length ? `
    <table class="queue">
      <caption>${data.cases.length} case${data.cases.length === 1 ? '' : 's'}, newest first; states read at ${esc(time(data.at))}</caption>
      <thead><tr><th scope="col">Case</th><th scope="col">State</th><th scope="col">Policy</th><th scope="col">Runs</th>
      <th scope="col">Models</th><th scope="col">Artifacts</th><th scope="col">Missing claims</th><th scope="col">Opened</th></tr></thead>
      <tbody>${rows}</tbody>
    </table>` : '<p>No case matches these filters.</p>';
}

// ---- case ------------------------------------------------------------------------------

async function renderCase(id, pending) {
  main().innerHTML = '<h1>Case</h1><p>Loading the case and checking its evidence…</p>';
  let view;
  try {
    view = await (pending || api(`/v1/cases/${encodeURIComponent(id)}`));
    if (session.view?.id !== view.id) { session.runsPage = 0; session.runsMissingOnly = false; }
  } catch (e) {
    main().innerHTML = `<h1>Case ${esc(id)}</h1><p class="error" role="alert">${esc(e.message)}</p><p><a href="#/queue">Back to the queue</a></p>`;
    focusHeading();
    return;
  }
  drawCase(view, true);
  startLive(id);
}

function claimState(state, n) {
  const k = claimKey(state);
  return `<span class="cs cs-${esc(k)}">${esc(CLAIM_WORDS[k] || state)}${n !== undefined ? ` ${n}` : ''}</span>`;
}

function boxPanel(b, view) {
  const statuses = Object.entries(b.statuses).map(([s, n]) => `<span class="bs bs-${esc(s)}">${esc(s)} ${n}</span>`).join(' ');
  const claims = b.claims.map((c) => `
    <li>
      <span class="claim">${esc(c.claim)}</span>${c.required ? ' <span class="req">required</span>' : ''}
      ${Object.entries(c.states).map(([s, n]) => claimState(s, n)).join(' ')}
      ${c.detail ? `<div class="detail">${esc(c.detail)}</div>` : ''}
    </li>`).join('');
  return `
    <section class="box" aria-labelledby="box-${esc(b.box)}-h" data-box="${esc(b.box)}">
      <h3 id="box-${esc(b.box)}-h">${esc(b.box)}</h3>
      <p class="statuses">Status across ${view.runs.length} run${view.runs.length === 1 ? '' : 's'}: ${statuses}</p>
      <p><strong>Proves</strong> ${esc(b.proves)}.</p>
      <p class="never"><strong>Never proves</strong> ${esc(b.never_proves)}.</p>
      ${claims ? `<ul class="claims" aria-label="Claims of the ${esc(b.box)} box">${claims}</ul>` : '<p class="muted">This box carries no claim.</p>'}
    </section>`;
}

function decisionsHtml(view) {
  if (!view.decisions.length) return '<p>No decision yet.</p>';
  return `<ol class="decisions">${view.decisions.map((d) => `
    <li>
      <strong>${esc(d.action)}${d.override ? ' (override)' : ''}</strong> by token ${esc(d.by)} at ${esc(time(d.at))}:
      ${stateTag(d.state_before)} → ${stateTag(d.state_after)}
      ${d.reason ? `<div>Reason: ${esc(d.reason)}</div>` : ''}
      <div class="muted">Read snapshot <code>${esc(short(d.snapshot?.id, 16))}</code> with the log at size ${esc(d.snapshot?.log_size)},
      root <code>${esc(short(d.snapshot?.log_root, 16))}</code>; appended as log entry ${esc(d.log_index)}.</div>
    </li>`).join('')}</ol>`;
}

const MEMORY_STATE_WORDS = { fresh: 'fresh', stale: 'stale', over_age: 'over age' };
const MEMORY_WARNING_WORDS = { shared: 'Row shared by runs', stale: 'Used while stale', over_age: 'Over age', owner: "Not the payer's row" };
// An address as 0x1234…abcd; the full one is in the title.
const shortOwner = (s) => (String(s).length > 14 ? `${String(s).slice(0, 6)}…${String(s).slice(-4)}` : String(s));

// One line per memory row per run: which row, whose, how old when used, its score, and its
// state (stale when the receipt flagged it at use, over age against the class's memory.fresh).
function memoryContinuityHtml(m) {
  if (!m.rows_used) return '<p class="memory-none">No memory used: no run of this case carries a memory row.</p>';
  const warnings = m.warnings.map((w) => `<div class="warning" role="note" data-warning="${esc(w.kind)}"><strong>${esc(MEMORY_WARNING_WORDS[w.kind] || w.kind)}:</strong> ${esc(w.message)}
    ${w.runs.length === 1 ? `(run <code>${esc(short(w.runs[0]))}</code>)` : `(${esc(w.runs.length)} runs)`}</div>`).join('');
  const lines = m.runs.flatMap((r) => r.rows.map((row) => {
    const warn = row.state !== 'fresh' || row.owner_differs || row.used_by_runs > 1 || !row.sealed;
    return `<tr class="mem-line${warn ? ' mem-warn' : ''}" data-state="${esc(row.state)}">
      <td><code title="${esc(r.run_id)}">${esc(short(r.run_id))}</code></td><td><code>${esc(row.row_id)}</code></td>
      <td><code title="${esc(row.owner)}">${esc(shortOwner(row.owner))}</code>${row.owner_differs ? ` <span class="warn-text">not the payer's</span>` : ''}</td>
      <td class="num" title="last validated ${esc(time(row.last_validated_at))}">${esc(row.age_at_use)}</td>
      <td class="num">${esc(Number(row.score).toFixed(3))}</td>
      <td><span class="ms ms-${esc(row.state)}">${esc(MEMORY_STATE_WORDS[row.state] || row.state)}</span>${row.state === 'stale' && row.over_age ? ' <span class="warn-text">and over age</span>' : ''}${row.used_by_runs > 1 ? ` <span class="warn-text">used by ${esc(row.used_by_runs)} runs</span>` : ''}${row.sealed ? '' : ' <span class="warn-text">names no sealed row</span>'}</td></tr>`;
  })).join('');
  return `
    <p>${esc(m.rows_used)} memory row use${m.rows_used === 1 ? '' : 's'} across ${esc(m.runs_with_memory)} run${m.runs_with_memory === 1 ? '' : 's'}
      (${esc(m.distinct_rows)} distinct row${m.distinct_rows === 1 ? '' : 's'}); the class allows rows validated within ${esc(m.max_age)}.</p>
    ${warnings}
    <table class="memory-lines">
      <caption>Memory rows each run used${m.rows_left_out ? `; ${esc(m.rows_left_out)} more not listed (the counts and warnings cover them)` : ''}</caption>
      <thead><tr><th scope="col">Run</th><th scope="col">Row</th><th scope="col">Owner</th><th scope="col">Age at use</th><th scope="col">Score</th><th scope="col">State</th></tr></thead>
      <tbody>${lines}</tbody>
    </table>`;
}

function continuityHtml(c) {
  const drift = c.label_drift.map((d) => `<div class="warning" role="note"><strong>Label moved:</strong> ${esc(d.message)}</div>`).join('');
  const artifacts = `
    <table>
      <caption>Runs of this case's labels, grouped by the artifact that ran</caption>
      <thead><tr><th scope="col">Artifact (blob id)</th><th scope="col">Labels</th><th scope="col">Runs</th><th scope="col">In this case</th><th scope="col">First</th><th scope="col">Last</th></tr></thead>
      <tbody>${c.artifacts.map((a) => `<tr><td><code title="${esc(a.blob_id)}">${esc(a.blob_id ? short(a.blob_id, 16) : 'unnamed (upstream provider)')}</code></td>
        <td>${a.labels.map(esc).join(', ')}</td><td class="num">${a.runs}</td><td class="num">${a.in_case}</td>
        <td>${esc(time(a.first_at))}</td><td>${esc(time(a.last_at))}</td></tr>`).join('')}</tbody>
    </table>`;
  const turns = c.turns.length ? `
    <table>
      <caption>Turns of the conversations these runs belong to</caption>
      <thead><tr><th scope="col">Conversation</th><th scope="col">Turn</th><th scope="col">Provider</th><th scope="col">Path</th><th scope="col">Privacy asked</th><th scope="col">Change</th></tr></thead>
      <tbody>${c.turns.map((t) => `<tr${t.in_case ? ' class="in-case"' : ''}><td>${esc(t.conversation)}</td><td class="num">${t.turn}</td>
        <td>${esc(t.provider)}</td><td>${esc(t.path)}</td><td>${esc(t.privacy)}</td>
        <td>${t.changed ? `<span class="warn-text">${esc(t.changed)}</span>` : '—'}</td></tr>`).join('')}</tbody>
    </table>` : '<p>These runs belong to no conversation.</p>';
  return `
    <h3>Artifacts behind the labels</h3>${drift || '<p>Each label in this case resolved to one artifact.</p>'}${artifacts}
    <section aria-labelledby="memcont-h">
      <h3 id="memcont-h">Memory continuity</h3>${memoryContinuityHtml(c.memory)}
    </section>
    <h3>Route and privacy path across turns</h3>${turns}`;
}

const RUNS_PER_PAGE = 100;

// The runs table shows one page of runs (the box panels above already count every run);
// "missing only" keeps the runs whose required claims do not all hold.
function runsTable(view) {
  const req = view.policy.required;
  const pick = session.runsMissingOnly
    ? view.runs.filter((r) => r.required.some((c) => c.state !== 'holds'))
    : view.runs;
  const pages = Math.max(1, Math.ceil(pick.length / RUNS_PER_PAGE));
  const pageNo = Math.min(session.runsPage || 0, pages - 1);
  const from = pageNo * RUNS_PER_PAGE;
  const shown = pick.slice(from, from + RUNS_PER_PAGE);
  const rows = shown.map((r) => {
    const boxes = BOXES.map((b) => `<td class="bs bs-${esc(r.boxes[b])}">${esc(r.boxes[b])}</td>`).join('');
    const claims = r.required.map((c) => `<td>${claimState(c.state)}</td>`).join('');
    return `<tr><th scope="row"><button type="button" class="link run-open" data-run="${esc(r.run_id)}" aria-label="Show run ${esc(short(r.run_id))}">${esc(short(r.run_id))}</button></th>
      <td>${esc(r.model)}</td><td><code title="${esc(r.blob_id)}">${esc(short(r.blob_id))}</code></td>${boxes}${claims}</tr>`;
  }).join('');
  const range = pick.length ? `runs ${from + 1}–${from + shown.length} of ${pick.length}` : 'no run';
  return `
    <div class="filters" role="group" aria-label="Runs shown">
      <label><input type="checkbox" id="runs-missing"${session.runsMissingOnly ? ' checked' : ''}> Only runs missing a required claim</label>
      <button type="button" id="runs-prev"${pageNo === 0 ? ' disabled' : ''}>Previous runs</button>
      <span id="runs-range">${esc(range)}</span>
      <button type="button" id="runs-next"${pageNo >= pages - 1 ? ' disabled' : ''}>Next runs</button>
    </div>
    <div class="scroll">
    <table class="runs">
      <caption>${esc(range)}${session.runsMissingOnly ? ' missing a required claim' : ''}: each box's status, and the required claims</caption>
      <thead><tr><th scope="col">Run</th><th scope="col">Model</th><th scope="col">Artifact</th>
      ${BOXES.map((b) => `<th scope="col">${esc(b)}</th>`).join('')}${req.map((c) => `<th scope="col">${esc(c)}</th>`).join('')}</tr></thead>
      <tbody>${rows}</tbody>
    </table></div>`;
}

function drawRuns(view) {
  const holder = document.getElementById('runs-table');
  holder.innerHTML = runsTable(view);
  holder.querySelectorAll('.run-open').forEach((b) => b.addEventListener('click', () => showRun(b.dataset.run)));
  document.getElementById('runs-missing').addEventListener('change', (e) => {
    session.runsMissingOnly = e.target.checked;
    session.runsPage = 0;
    drawRuns(session.view);
    document.getElementById('runs-missing').focus();
  });
  for (const [id, step] of [['runs-prev', -1], ['runs-next', 1]]) {
    document.getElementById(id).addEventListener('click', () => {
      session.runsPage = (session.runsPage || 0) + step;
      drawRuns(session.view);
      const again = document.getElementById(id);
      (again.disabled ? document.getElementById('runs-range') : again).focus?.();
    });
  }
}

function drawCase(view, first) {
  const prev = session.view;
  session.view = view;
  const reason = document.getElementById('reason')?.value || '';
  const focusedId = document.activeElement?.id;
  const result = document.getElementById('decision-result')?.innerHTML || '';
  const decided = view.state === 'CLEARED' || view.state === 'REJECTED';
  const reviewer = session.me?.role === 'reviewer';
  const missing = view.missing_claims.length
    ? `<div class="missing"><h3 id="missing-h">Required claims that do not hold yet</h3>
       <ul aria-labelledby="missing-h">${view.missing_claims.map((c) => `<li><span class="claim">${esc(c)}</span></li>`).join('')}</ul>
       ${view.missing.slice(0, 5).map((m) => `<p class="detail">run <code>${esc(short(m.run_id))}</code>: ${esc(m.claim)} ${claimState(m.state)}: ${esc(m.detail)}</p>`).join('')}</div>`
    : '<p>Every required claim holds for every run.</p>';
  const chronology = view.chronology.map((e) => `
    <li><time datetime="${new Date(e.first_at).toISOString()}">${esc(time(e.first_at))}</time>
      ${esc(e.event)}${e.of ? ` (${e.runs} of ${e.of} run${e.of === 1 ? '' : 's'}${e.last_at !== e.first_at ? `, last at ${esc(time(e.last_at))}` : ''})` : ''}
      ${e.by ? ` by ${esc(e.by)}` : ''}${e.state ? ` → ${esc(e.state)}` : ''}</li>`).join('');
  const webhooks = view.webhooks.length
    ? `<ul>${view.webhooks.map((w) => `<li>${esc(w.url)}: ${esc(w.status)} after ${w.attempts} attempt${w.attempts === 1 ? '' : 's'}${w.last_error ? ` (${esc(w.last_error)})` : ''}</li>`).join('')}</ul>`
    : `<p>${view.policy.webhook ? 'A signed webhook goes out when the case is cleared.' : 'This policy has no webhook.'}</p>`;
  const t0 = performance.now();
  main().innerHTML = `
    <p><a href="#/queue">← Queue</a></p>
    <h1>Case <code>${esc(view.id)}</code></h1>
    <p class="case-state">State: ${stateTag(view.state)}${decided && view.evidence_state !== view.state ? ` (its evidence reads ${esc(view.evidence_state)} now)` : ''}.
      Policy <strong>${esc(view.policy.name)}</strong> requires ${view.policy.required.map((c) => `<span class="claim">${esc(c)}</span>`).join(', ')}.
      Evidence read at ${esc(time(view.at))}.</p>
    <section aria-labelledby="decide-h" class="decide">
      <h2 id="decide-h">Decision</h2>
      ${missing}
      ${decided ? '<p>This case is decided; it takes no further decision.</p>' : reviewer ? `
      <form id="decide-form" class="stack">
        <p class="muted">You are deciding on what this page shows: snapshot <code id="seen">${esc(view.snapshot.id)}</code>.
        If the evidence changes before you press a button, the decision is refused as stale.</p>
        <label for="reason">Reason (required to override)</label>
        <textarea id="reason" name="reason" rows="2">${esc(reason)}</textarea>
        <div class="actions">
          <button type="submit" id="btn-clear" value="clear">Clear</button>
          <button type="submit" id="btn-reject" value="reject">Reject</button>
          <button type="submit" id="btn-override" value="override">Override and clear</button>
        </div>
      </form>` : '<p>Your token is a viewer token: it reads cases but cannot decide them.</p>'}
      <div id="decision-result" role="alert">${result}</div>
    </section>
    <section aria-labelledby="boxes-h">
      <h2 id="boxes-h">Evidence, box by box</h2>
      <p class="muted">Each box says what it proves and what it never proves. Nothing here adds them up.</p>
      <div class="boxes">${view.boxes.map((b) => boxPanel(b, view)).join('')}</div>
    </section>
    <section aria-labelledby="chron-h">
      <h2 id="chron-h">Chronology</h2>
      <ol class="chronology">${chronology}</ol>
    </section>
    <section aria-labelledby="dec-h">
      <h2 id="dec-h">Decisions</h2>${decisionsHtml(view)}
      <h3>Webhooks</h3>${webhooks}
    </section>
    <section aria-labelledby="cont-h">
      <h2 id="cont-h">Continuity</h2>${continuityHtml(view.continuity)}
    </section>
    <section aria-labelledby="runs-h">
      <h2 id="runs-h">Runs</h2>
      <div id="run-detail"></div>
      <div id="runs-table"></div>
    </section>`;
  drawRuns(view);
  main().dataset.rendered = view.snapshot.id;
  main().dataset.renderMs = String(Math.round(performance.now() - t0));
  document.body.dataset.caseState = view.state;
  const form = document.getElementById('decide-form');
  if (form) form.addEventListener('submit', submitDecision);
  if (first) focusHeading();
  else if (focusedId && document.getElementById(focusedId)) document.getElementById(focusedId).focus();
  if (prev && prev.id === view.id && prev.state !== view.state) announce(`Case is now ${view.state}: new evidence landed.`);
}

async function submitDecision(ev) {
  ev.preventDefault();
  const action = ev.submitter?.value || 'clear';
  const reason = document.getElementById('reason').value.trim();
  const out = document.getElementById('decision-result');
  const view = session.view;
  out.innerHTML = '<p>Sending…</p>';
  try {
    const d = await api(`/v1/cases/${encodeURIComponent(view.id)}/decision`, {
      method: 'POST',
      body: { action, reason: reason || undefined, seen: view.snapshot.id },
    });
    out.innerHTML = `<p class="ok-text">Decision recorded: the case is ${esc(d.state)}${d.override ? ' (override)' : ''};
      appended as log entry ${esc(d.log_index)}.</p>`;
    const fresh = await api(`/v1/cases/${encodeURIComponent(view.id)}`);
    drawCase(fresh, false);
    document.getElementById('decide-h').focus?.();
  } catch (e) {
    const err = e.body?.error || {};
    const missing = err.missing_claims?.length
      ? `<p>Missing claims:</p><ul id="refusal-missing">${err.missing_claims.map((c) => `<li><span class="claim">${esc(c)}</span></li>`).join('')}</ul>`
      : '';
    out.innerHTML = `<div class="refusal"><p><strong>Refused (${esc(err.code || e.status)}).</strong> ${esc(e.message)}</p>${missing}</div>`;
    if (err.code === 'stale_decision') {
      const fresh = await api(`/v1/cases/${encodeURIComponent(view.id)}`);
      drawCase(fresh, false);
    }
  }
}

async function showRun(runId) {
  const box = document.getElementById('run-detail');
  box.innerHTML = '<p>Loading the run…</p>';
  let r;
  try { r = await api(`/v1/runs/${encodeURIComponent(runId)}/claims`, { anonymous: true }); } catch (e) {
    box.innerHTML = `<p class="error" role="alert">${esc(e.message)}</p>`;
    return;
  }
  const panels = BOXES.map((name) => {
    const b = r.boxes[name] || { status: 'absent' };
    const claims = r.claims.filter((c) => boxOf(c.claim) === name);
    const fields = b.evidence ? Object.entries(b.evidence).filter(([, v]) => typeof v !== 'object' || v === null)
      .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(String(v).length > 80 ? `${String(v).slice(0, 80)}…` : v)}</dd>`).join('') : '';
    return `<section class="box" aria-label="${esc(name)} box of run ${esc(short(runId))}">
      <h4>${esc(name)}: <span class="bs bs-${esc(b.status)}">${esc(b.status)}</span></h4>
      ${(b.history || []).map((h) => `<div class="muted">${esc(h.status)} at ${esc(time(h.at))}</div>`).join('')}
      ${fields ? `<dl>${fields}</dl>` : ''}
      <ul class="claims">${claims.map((c) => `<li><span class="claim">${esc(c.claim)}</span> ${claimState(c.state)}<div class="detail">${esc(c.detail)}</div></li>`).join('')}</ul>
    </section>`;
  }).join('');
  box.innerHTML = `<h3 id="run-detail-h" tabindex="-1">Run <code>${esc(runId)}</code> (${esc(r.model)})</h3>
    <p><a href="/v1/runs/${encodeURIComponent(runId)}/receipt">Receipt file</a> (check it offline with <code>haca verify</code>)</p>
    <div class="boxes">${panels}</div>`;
  document.getElementById('run-detail-h').focus();
}

function boxOf(claim) {
  const c = String(claim);
  if (c.startsWith('artifact.')) return 'artifact';
  if (c.startsWith('route.')) return 'route';
  if (c === 'execution.signed' || c === 'node.registered') return 'execution';
  if (c === 'enclave.genuine') return 'attestation';
  if (c === 'execution.correct') return 'proof';
  if (c.startsWith('data.')) return 'data';
  if (c.startsWith('memory.')) return 'memory';
  if (c.startsWith('payment.')) return 'payment';
  return 'settlement';
}

async function startLive(id) {
  stopLive();
  const ctrl = new AbortController();
  session.live = ctrl;
  try {
    const r = await fetch(`/v1/cases/${encodeURIComponent(id)}/events`, {
      headers: { Authorization: `Bearer ${session.token}` },
      signal: ctrl.signal,
    });
    if (!r.ok) return;
    await readEvents(r, async (name, data) => {
      if (name !== 'case' || ctrl.signal.aborted) return;
      const s = JSON.parse(data);
      const v = session.view;
      if (!v || v.id !== s.id) return;
      if (s.snapshot !== v.snapshot.id || s.state !== v.state || s.decisions !== v.decisions.length) {
        const fresh = await api(`/v1/cases/${encodeURIComponent(id)}`);
        if (!ctrl.signal.aborted) drawCase(fresh, false);
      }
    });
  } catch (e) {
    if (ctrl.signal.aborted) return;
  }
  // The stream ended (node restarted, network): reconnect while the page is open.
  if (!ctrl.signal.aborted) setTimeout(() => { if (session.live === ctrl) startLive(id); }, 2000);
}

// ---- chat ------------------------------------------------------------------------------

const chat = { messages: [], conversation: null };

async function renderChat() {
  chat.conversation = chat.conversation || `conv-${crypto.getRandomValues(new Uint32Array(2)).join('')}`;
  main().innerHTML = `
    <h1>Chat</h1>
    <form id="chat-settings" class="filters" aria-label="Chat settings">
      <label>Model <select id="chat-model"><option>loading…</option></select></label>
      <label>Image model <select id="chat-image-model"><option value="">none</option></select></label>
      <label>Privacy <select id="chat-privacy"><option value="any">any</option><option value="private">private</option><option value="tee">tee</option></select></label>
      <label>API key (when the node charges) <input id="chat-key" type="password" autocomplete="off" value="${esc(sessionStorage.getItem('haca.apikey') || '')}"></label>
    </form>
    <p class="muted">Beside each answer its receipt's boxes fill in as payment, attestation, proof and settlement land.</p>
    <ol id="turns" class="turns"></ol>
    <form id="chat-form" class="stack">
      <label for="chat-input">Message</label>
      <textarea id="chat-input" rows="2" required></textarea>
      <div class="row"><button type="submit" id="chat-send">Send</button>
        <button type="button" id="chat-image" disabled title="Draw the message with the image model">Image</button></div>
    </form>
    <p id="chat-error" class="error" role="alert"></p>`;
  document.getElementById('chat-key').addEventListener('change', (e) => sessionStorage.setItem('haca.apikey', e.target.value.trim()));
  document.getElementById('chat-form').addEventListener('submit', sendChat);
  document.getElementById('chat-image').addEventListener('click', sendImage);
  document.getElementById('chat-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); document.getElementById('chat-form').requestSubmit(); }
  });
  focusHeading();
  try {
    const m = await api('/v1/models', { anonymous: true });
    const isImage = (x) => x.haca?.kind === 'image';
    const opts = (xs) => xs.map((x) => `<option>${esc(x.id)}</option>`).join('');
    document.getElementById('chat-model').innerHTML = opts(m.data.filter((x) => !isImage(x))) || '<option value="">none</option>';
    const images = m.data.filter(isImage);
    if (images.length) {
      document.getElementById('chat-image-model').innerHTML = opts(images);
      document.getElementById('chat-image').disabled = false;
    }
  } catch (e) {
    document.getElementById('chat-model').innerHTML = '<option value="">none</option>';
    document.getElementById('chat-error').textContent = `This node serves no chat model: ${e.message}`;
  }
}

function evidenceHtml(r) {
  const chips = BOXES.map((b) => {
    const s = r ? (r.boxes[b]?.status || 'absent') : 'pending';
    return `<li class="chip bs-${esc(s)}"><span>${esc(b)}</span> ${esc(s)}</li>`;
  }).join('');
  const key = r ? r.claims.filter((c) => ['execution.signed', 'enclave.genuine', 'payment.settled', 'execution.correct', 'run.settled', 'route.private'].includes(c.claim))
    .map((c) => `<li><span class="claim">${esc(c.claim)}</span> ${claimState(c.state)}</li>`).join('') : '';
  return `<ul class="chips" aria-label="Boxes">${chips}</ul><ul class="claims">${key}</ul>`;
}

async function watchRun(runId, el) {
  const until = Date.now() + 120000;
  while (Date.now() < until && document.body.contains(el)) {
    try {
      const r = await api(`/v1/runs/${encodeURIComponent(runId)}/claims`, { anonymous: true });
      el.innerHTML = evidenceHtml(r);
      if (r.boxes.settlement?.status === 'settled') return;
    } catch (e) { /* the run may not be stored yet */ }
    await new Promise((res) => setTimeout(res, 1000));
  }
}

async function sendChat(ev) {
  ev.preventDefault();
  const input = document.getElementById('chat-input');
  const text = input.value.trim();
  if (!text) return;
  const err = document.getElementById('chat-error');
  err.textContent = '';
  const model = document.getElementById('chat-model').value;
  const privacy = document.getElementById('chat-privacy').value;
  const key = document.getElementById('chat-key').value.trim();
  chat.messages.push({ role: 'user', content: text });
  input.value = '';
  const li = document.createElement('li');
  li.className = 'turn';
  li.innerHTML = `<div class="msg user"><span class="who">You</span> <p></p></div>
    <div class="msg assistant"><span class="who">${esc(model)}</span> <p aria-live="polite"></p><div class="route muted"></div></div>
    <aside class="evidence" aria-label="Evidence for this turn">${evidenceHtml(null)}</aside>`;
  li.querySelector('.user p').textContent = text;
  document.getElementById('turns').appendChild(li);
  const out = li.querySelector('.assistant p');
  const send = document.getElementById('chat-send');
  send.disabled = true;
  let answer = '';
  let haca = null;
  try {
    const headers = { 'Content-Type': 'application/json' };
    if (key) headers.Authorization = `Bearer ${key}`;
    const r = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers,
      body: JSON.stringify({ model, messages: chat.messages, stream: true, privacy, conversation: chat.conversation, max_tokens: 128 }),
    });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error(body?.error?.message || `HTTP ${r.status}`);
    }
    await readEvents(r, (_, data) => {
      if (data === '[DONE]') return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) { answer += delta; out.textContent = answer; }
      if (chunk.haca) haca = chunk.haca;
    });
    chat.messages.push({ role: 'assistant', content: answer });
    if (haca) {
      const route = haca.route || {};
      li.querySelector('.route').innerHTML = `served by ${esc(route.provider)} over ${esc(route.path)} (privacy asked: ${esc(route.policy)});
        run <a href="/v1/runs/${encodeURIComponent(haca.run_id)}/receipt">${esc(short(haca.run_id))}</a>`;
      li.dataset.run = haca.run_id;
      watchRun(haca.run_id, li.querySelector('.evidence'));
    }
  } catch (e) {
    chat.messages.pop();
    err.textContent = `Not answered: ${e.message}`;
    li.querySelector('.assistant p').textContent = '(no answer)';
  } finally {
    send.disabled = false;
    input.focus();
  }
}

/** The image button: the message becomes an image prompt; the images come back with their
 * own run, whose receipt's output hash covers each image's SHA-256, and its boxes beside. */
async function sendImage() {
  const input = document.getElementById('chat-input');
  const prompt = input.value.trim();
  const err = document.getElementById('chat-error');
  err.textContent = '';
  if (!prompt) { err.textContent = 'Write what to draw in the message box first.'; return; }
  const model = document.getElementById('chat-image-model').value;
  const privacy = document.getElementById('chat-privacy').value;
  const key = document.getElementById('chat-key').value.trim();
  const li = document.createElement('li');
  li.className = 'turn';
  li.innerHTML = `<div class="msg user"><span class="who">You (image)</span> <p></p></div>
    <div class="msg assistant"><span class="who">${esc(model)}</span> <div class="images" aria-live="polite">drawing…</div><div class="route muted"></div></div>
    <aside class="evidence" aria-label="Evidence for this image">${evidenceHtml(null)}</aside>`;
  li.querySelector('.user p').textContent = prompt;
  document.getElementById('turns').appendChild(li);
  const button = document.getElementById('chat-image');
  button.disabled = true;
  try {
    const headers = { 'Content-Type': 'application/json' };
    if (key) headers.Authorization = `Bearer ${key}`;
    const r = await fetch('/v1/images/generations', {
      // The bytes come in the answer: an <img> could not send the API key a run's images need.
      method: 'POST', headers, body: JSON.stringify({ model, prompt, privacy, response_format: 'b64_json' }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body?.error?.message || `HTTP ${r.status}`);
    const haca = body.haca;
    li.querySelector('.images').innerHTML = haca.images.map((im, i) => `<figure>
        <img src="data:${esc(im.media_type)};base64,${esc(body.data[i].b64_json)}" alt="${esc(prompt)}" width="${Number(im.width) || ''}" style="max-width: 100%; height: auto">
        <figcaption class="muted">${esc(im.media_type)}, ${esc(String(im.width))}×${esc(String(im.height))}, sha256 <code title="${esc(im.sha256)}">${esc(short(im.sha256, 16))}</code></figcaption></figure>`).join('');
    const route = haca.route || {};
    li.querySelector('.route').innerHTML = `served by ${esc(route.provider)} over ${esc(route.path)} (privacy asked: ${esc(route.policy)});
      run <a href="/v1/runs/${encodeURIComponent(haca.run_id)}/receipt">${esc(short(haca.run_id))}</a>; its output hash covers these images' bytes`;
    li.dataset.run = haca.run_id;
    input.value = '';
    watchRun(haca.run_id, li.querySelector('.evidence'));
  } catch (e) {
    err.textContent = `No image: ${e.message}`;
    li.querySelector('.images').textContent = '(no image)';
  } finally {
    button.disabled = false;
  }
}

// ---- start -----------------------------------------------------------------------------

document.getElementById('sign-out').addEventListener('click', () => {
  stopLive();
  signOut();
  session.navigated = true;
  location.hash = '#/queue';
  route();
});
window.addEventListener('hashchange', () => { session.navigated = true; route(); });
route();

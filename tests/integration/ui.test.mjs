// The web UI (GET /, src/server/ui/) and its numbers (GET /v1/stats).  First over plain HTTP: the files'
// headers (CSP, ETag and 304, the codings), their size, --no-ui, and what /v1/stats counts.  Then in a real
// browser, Debian's Chromium driven by playwright-core (tests/fixtures' npm packages): the API key is asked
// for, a chat message to the default model streams its answer (shown piece by piece; copy works), Stop
// cancels a generation on the server, the dashboard's numbers move with traffic, and the conversation is
// still there after a reload, with no console message but the expected 401 (a CSP violation would be one).
// Screenshots go to build/ui-shots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import zlib from 'node:zlib';
import { startServer, postJSON, waitFor, MODEL_NAME } from './server.mjs';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const DEFAULT_MODEL = path.join(ROOT, 'models/autoglm-tiny.gguf');
const FILES = ['/', '/ui/app.js', '/ui/app.css'];
const KEY = 'ui-test-key';
const SANITIZED = process.env.AUTOGLM_SANITIZED === '1';

let tiny, fixture;
before(async () => {
  [tiny, fixture] = await Promise.all([
    startServer(['--served-model-name', 'autoglm-tiny', '--api-key', KEY], { model: DEFAULT_MODEL }),
    startServer([]),
  ]);
});
after(async () => {
  assert.equal(await tiny.stop(), 0, tiny.log());
  assert.equal(await fixture.stop(), 0, fixture.log());
});

const get = (url, headers = {}) => fetch(url, { headers });
// A request whose coded body is kept as it came (fetch would decode it): { status, headers, body }.
const rawGet = (url, headers, method = 'GET') => new Promise((resolve, reject) => {
  http.request(url, { method, headers }, (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
  }).on('error', reject).end();
});
async function stats(srv, query = '') {
  const r = await get(srv.url + '/v1/stats' + query, srv === tiny ? { authorization: `Bearer ${KEY}` } : {});
  assert.equal(r.status, 200);
  return r.json();
}

test('GET / serves the page with a CSP that allows only its own script, no inline script and no other origin', async () => {
  const r = await get(tiny.url + '/'); // no key: the files hold no data
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'text/html; charset=utf-8');
  const csp = r.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.match(csp, /connect-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe/);
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  const html = await r.text();
  const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
  assert.ok(scripts.length >= 1);
  for (const [, attrs, body] of scripts) {
    assert.match(attrs, /src="\/ui\/[\w.]+"/);
    assert.equal(body.trim(), '', 'no inline script');
  }
  assert.doesNotMatch(html, /\son\w+=/i, 'no inline event handlers');
  for (const f of FILES) {
    const text = await (await get(tiny.url + f)).text();
    assert.doesNotMatch(text, /(https?:)?\/\/[a-z0-9.-]+\.[a-z]{2,}\//i, `${f} names another origin (a CDN, a font)`);
  }
});

test('each file has an ETag per coding; If-None-Match gets 304 with no body; gzip and zstd decode to the same bytes', async () => {
  for (const f of FILES) {
    const plain = await rawGet(tiny.url + f, {}); // no Accept-Encoding (fetch would send one)
    const bytes = plain.body;
    assert.equal(plain.headers['content-encoding'], undefined);
    const tags = new Set([plain.headers.etag]);
    assert.equal(plain.headers['cache-control'], 'no-cache');
    for (const coding of ['gzip', 'zstd']) {
      const r = await rawGet(tiny.url + f, { 'accept-encoding': coding });
      assert.equal(r.headers['content-encoding'], coding);
      assert.equal(r.headers.vary, 'Accept-Encoding');
      assert.equal(Number(r.headers['content-length']), r.body.length);
      assert.ok(r.body.length < bytes.length);
      tags.add(r.headers.etag);
      if (coding === 'gzip') assert.deepEqual(zlib.gunzipSync(r.body), bytes);
      else assert.equal(r.body.readUInt32LE(0), 0xfd2fb528); // a zstd frame (Node 20's zlib has no zstd)
      const again = await rawGet(tiny.url + f, { 'accept-encoding': coding, 'if-none-match': r.headers.etag });
      assert.equal(again.status, 304);
      assert.equal(again.headers.etag, r.headers.etag);
      assert.equal(again.headers['content-length'], undefined);
      assert.equal(again.body.length, 0);
    }
    assert.equal(tags.size, 3, 'one tag per coding');
    for (const tag of tags) assert.match(tag, /^"[0-9a-f]{16}-[a-z]+"$/);
    const other = await get(tiny.url + f, { 'if-none-match': '"0000000000000000-identity", W/"x"' });
    assert.equal(other.status, 200);
    const any = await get(tiny.url + f, { 'if-none-match': '*' });
    assert.equal(any.status, 304);
    const head = await rawGet(tiny.url + f, {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(Number(head.headers['content-length']), bytes.length);
    assert.equal(head.headers.etag, plain.headers.etag);
  }
  assert.equal((await get(tiny.url + '/ui/nothing.js')).status, 404);
  assert.equal((await fetch(tiny.url + '/', { method: 'POST' })).status, 405);
});

test('the whole UI is at most 150 KB gzipped', async () => {
  let gz = 0, raw = 0;
  for (const f of FILES) {
    const bytes = Buffer.from(await (await get(tiny.url + f)).arrayBuffer());
    raw += bytes.length, gz += zlib.gzipSync(bytes, { level: 9 }).length;
  }
  console.log(`# NOTE web UI: ${FILES.length} files, ${raw} bytes, ${gz} bytes gzipped`);
  assert.ok(gz <= 150 * 1024, `${gz} bytes gzipped`);
});

test('--no-ui: GET / and /ui/ are 404; /v1/stats stays', async () => {
  const srv = await startServer(['--no-ui']);
  try {
    assert.equal((await get(srv.url + '/')).status, 404);
    assert.equal((await get(srv.url + '/ui/app.js')).status, 404);
    assert.equal((await get(srv.url + '/v1/stats')).status, 200);
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('/v1/stats needs the key when the server has keys; a bad window is a 400 naming its range', async () => {
  assert.equal((await get(tiny.url + '/v1/stats')).status, 401);
  for (const w of ['0', '301', 'x', '-1', '']) {
    const r = await get(tiny.url + '/v1/stats?window=' + w, { authorization: `Bearer ${KEY}` });
    assert.equal(r.status, 400, w);
    assert.match((await r.json()).error.message, /from 1 to 300/);
  }
});

test('/v1/stats counts requests, statuses, tokens and latencies over the window', async () => {
  const before = await stats(fixture, '?window=300');
  const body = { model: MODEL_NAME, prompt: 'hello there', max_tokens: 8, temperature: 0, logit_bias: { 2: -100 } };
  for (let i = 0; i < 4; i++) assert.equal((await postJSON(fixture.url, '/v1/completions', body)).status, 200);
  assert.equal((await postJSON(fixture.url, '/v1/completions', { model: MODEL_NAME })).status, 400);
  const s = await stats(fixture, '?window=300');
  assert.equal(s.object, 'stats');
  assert.equal(s.model, MODEL_NAME);
  assert.equal(s.status, 'ok');
  assert.equal(s.window_s, 300);
  assert.equal(s.totals.generations - before.totals.generations, 5);
  assert.equal(s.totals.generated_tokens - before.totals.generated_tokens, 32);
  assert.equal(s.totals.errors - before.totals.errors, 1);
  assert.equal(s.window.generations, s.totals.generations); // the server is younger than the window
  assert.equal(s.window.status['400'], (before.window.status['400'] || 0) + 1);
  assert.ok(s.window.status['200'] >= 5);
  assert.ok(s.window.latency_samples >= 4);
  for (const k of ['ttft_ms', 'tpot_ms', 'e2e_ms']) {
    const p = s.window[k];
    assert.ok(p.p50 > 0 && p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.max, `${k}: ${JSON.stringify(p)}`);
  }
  assert.ok(s.window.e2e_ms.max >= s.window.ttft_ms.max);
  assert.ok(s.engine.kv_blocks_total > 0 && s.engine.requests_running === 0);
  for (const k of ['requests', 'errors', 'generated_tokens']) {
    assert.equal(s.series[k].length, Math.min(300, Math.floor(s.uptime_s) + 1));
    assert.equal(s.series[k].reduce((a, b) => a + b, 0), s.window[k]);
  }
  const short = await stats(fixture, '?window=1');
  assert.equal(short.series.requests.length, 1);
});

// ---- in Chromium ----------------------------------------------------------------------------------------

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
let playwright = null;
try {
  playwright = createRequire(path.join(ROOT, 'tests/fixtures/package.json'))('playwright-core');
} catch { /* the skip says why */ }
const noBrowser = !CHROMIUM ? 'no Chromium here (scripts/install-deps installs Debian\'s chromium)'
  : !playwright ? 'no playwright-core in tests/fixtures/node_modules (make fixtures installs it)' : false;

const SHOTS = path.join(ROOT, 'build/ui-shots');
const shot = (name) => path.join(SHOTS, (SANITIZED ? 'asan-' : '') + name + '.png');

test('in Chromium: key, streamed chat with the default model, Stop, the dashboard moving, kept conversations', { skip: noBrowser }, async () => {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await playwright.chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const messages = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.on('console', (m) => messages.push(`${m.type()}: ${m.text()}`));
    context.on('weberror', (e) => messages.push(`pageerror: ${e.error().message}`));
    const page = await context.newPage();

    // the server has a key: the page asks for it once (dismissed, the page says why and offers the dialog
    // again), then knows the model
    await page.goto(tiny.url + '/#chat');
    await page.locator('#key-dialog[open]').waitFor();
    await page.keyboard.press('Escape');
    await page.locator('#model', { hasText: 'Incorrect API key' }).waitFor();
    await page.click('#key-button');
    await page.locator('#key-dialog[open]').waitFor();
    await page.fill('#key-input', KEY);
    await page.click('#key-form button[type=submit]');
    await page.locator('#model', { hasText: 'autoglm-tiny' }).waitFor();
    await page.waitForFunction(() => document.body.dataset.ready === '1');

    // a chat message to the default model: text streams in, then the reply's token counts and speed
    await page.fill('#max_tokens', '48');
    await page.fill('#temperature', '0');
    await page.locator('#max_tokens').dispatchEvent('change');
    await page.fill('#chat-input', 'And God said');
    // each delta the page shows is one change of the reply's text: counted, to see the answer arrive in pieces
    await page.evaluate(() => {
      window.updates = 0;
      new MutationObserver((records) => {
        for (const r of records) if (r.target.classList?.contains('text') && r.target.closest('.assistant')) window.updates++;
      }).observe(document.getElementById('messages'), { childList: true, subtree: true });
    });
    await page.press('#chat-input', 'Enter');
    const reply = page.locator('.msg.assistant').last();
    await reply.locator('.stats', { hasText: 'tokens' }).waitFor({ timeout: 60000 });
    const text = await reply.locator('.text').textContent();
    assert.ok(text.trim().length > 20, text);
    const updates = await page.evaluate(() => window.updates);
    assert.ok(updates >= 10, `the reply was shown in ${updates} pieces`);
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: tiny.url });
    await reply.locator('.copy').click();
    await reply.locator('.copy', { hasText: 'copied' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), text);
    const statsLine = await reply.locator('.stats').textContent();
    assert.match(statsLine, /^\d+ prompt \+ 48 tokens · first token \d+ ms · [\d.]+ tok\/s · finish: length$/, statsLine);
    await page.screenshot({ path: shot('chat') });

    // kept in the browser: a reload shows the conversation, titled by its first message
    await page.reload();
    await page.waitForFunction(() => document.body.dataset.ready === '1');
    assert.equal(await page.locator('#conv-list .conv').first().textContent(), 'And God said');
    assert.equal(await page.locator('.msg.assistant .text').last().textContent(), text);

    // the dashboard's numbers move when traffic comes
    await page.click('.tab[data-tab=dash]');
    await page.locator('#dash-note', { hasText: 'since start' }).waitFor();
    const before = await stats(tiny);
    const body = { model: 'autoglm-tiny', prompt: 'In the beginning', max_tokens: 32, temperature: 0 };
    for (let i = 0; i < 6; i++) {
      const r = await postJSON(tiny.url, '/v1/completions', body, { authorization: `Bearer ${KEY}` });
      assert.equal(r.status, 200, r.text);
    }
    const want = before.totals.generated_tokens + 6 * 32;
    await page.waitForFunction((n) => new RegExp(`\\b(\\d+) generated tokens since start`).exec(
      document.getElementById('dash-note').textContent)?.[1] >= n, want, { timeout: 10000 });
    const cards = await page.locator('#cards .card').allTextContents();
    assert.ok(cards.some((c) => /^Requests \/ s/.test(c)), cards.join(' | '));
    const rows = await page.locator('#statuses tbody tr').allTextContents();
    assert.ok(rows.some((r) => /^200\d+$/.test(r)), rows.join(' | '));
    assert.notEqual(await page.locator('#latency tbody tr').first().textContent(), 'TTFT––––');
    await page.waitForTimeout(1500); // a second poll, so the browser-built charts have two points
    await page.screenshot({ path: shot('dashboard'), fullPage: true });

    // Stop: a long generation on the fixture server (random weights: no early end) is cancelled there
    const p2 = await context.newPage();
    await p2.goto(fixture.url + '/#complete');
    await p2.waitForFunction(() => document.body.dataset.ready === '1');
    await p2.fill('#max_tokens', '4000');
    await p2.fill('#prompt', 'Once upon a time');
    const tokensBefore = (await stats(fixture)).totals.generated_tokens;
    await p2.click('#generate');
    await p2.waitForFunction(() => document.querySelector('#completion .generated')?.textContent.length > 0, null, { timeout: 30000 });
    await p2.click('#complete-stop');
    await p2.locator('#completion-stats', { hasText: 'stopped' }).waitFor();
    assert.equal(await p2.isHidden('#complete-stop'), true);
    const gone = await waitFor(async () => {
      const s = await stats(fixture);
      return s.engine.requests_running === 0 && s.window.status['499'] === 1 ? s : null;
    }, 10000);
    assert.ok(gone, 'the server saw the client leave (499) and stopped generating');
    const metrics = await (await get(fixture.url + '/metrics')).text();
    assert.match(metrics, /autoglm_request_success_total\{finished_reason="abort"\} 1(\.0)?\n/);
    const made = gone.totals.generated_tokens - tokensBefore;
    assert.ok(made > 0 && made < 4000, `the generation was cut short: ${made} of 4000 tokens`);
    await p2.screenshot({ path: shot('completions') });
  } finally {
    await browser.close();
  }
  // Chromium logs every failed request: the one 401 that made the page ask for the key, and nothing else
  const asked = messages.filter((m) => /status of 401/.test(m));
  assert.equal(asked.length, 1, messages.join('\n'));
  assert.deepEqual(messages.filter((m) => !asked.includes(m)), [], 'no other console message (CSP violations, script errors)');
});

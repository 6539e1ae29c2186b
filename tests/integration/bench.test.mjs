// autoglm bench against targets with known timings (its own --self-test-server)
// and the real server: measured latencies are bounded by injected ones, open-loop
// rates are kept, streaming timings are reproduced, every request lands in
// exactly one bucket, baselines catch regressions, and the
// report is one self-contained file.  Timing-accuracy checks skip under the
// sanitizers (AUTOGLM_SANITIZED=1), where the generator itself runs slowed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { BIN, startServer } from './server.mjs';

const SANITIZED = process.env.AUTOGLM_SANITIZED === '1';
const timing = { skip: SANITIZED && 'timings are not meaningful under the sanitizers' };
const dir = mkdtempSync(path.join(tmpdir(), 'ag-bench-'));

// Start `autoglm bench --self-test-server` on a free port; resolves with its base URL and a stop().
function selfTestServer(args, port = 0) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ['bench', '--self-test-server', '--port', String(port), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    proc.stderr.on('data', (d) => {
      log += d;
      const m = /listening on (http:\/\/[^ ]+)/.exec(log);
      if (m) resolve({ url: m[1], stop: () => proc.kill('SIGTERM') });
    });
    proc.on('exit', (code) => reject(new Error(`self-test server exited ${code}: ${log}`)));
  });
}

// Run autoglm bench; resolves with { code, stdout, stderr, json } (json from --json when the run wrote it).
function bench(args) {
  const json = path.join(dir, `run-${Math.random().toString(36).slice(2)}.json`);
  const r = spawnSync(BIN, ['bench', ...args, '--json', json], { encoding: 'utf8', timeout: 120000 });
  let parsed = null;
  try { parsed = JSON.parse(readFileSync(json, 'utf8')); } catch { /* not written */ }
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, json: parsed };
}

// A measured time is never below what the target injected (less 2% for clock granularity), and never ten times
// above it: tight enough to catch a unit or accounting error, loose enough that a loaded machine cannot fail it.
// How close the measurements come is a benchmark (bench/loadgen), not a test.
const measures = (got, want, what) =>
  assert.ok(got >= 0.98 * want && got <= 10 * want, `${what}: ${got} is not in [${0.98 * want}, ${10 * want}]`);

let fixed, streaming, fast;
before(async () => {
  [fixed, streaming, fast] = await Promise.all([
    selfTestServer(['--delay', '50ms']),
    selfTestServer(['--delay', '60ms', '--chunks', '12', '--chunk-interval', '25ms']),
    selfTestServer([]),
  ]);
});
after(() => { fixed.stop(); streaming.stop(); fast.stop(); });

test('closed loop: p50 latency measures an injected 50 ms delay; Little\'s law holds', timing, () => {
  const r = bench(['--base-url', fixed.url, '--no-stream', '--concurrency', '1,8', '--duration', '2s', '--warmup', '300ms']);
  assert.equal(r.code, 0, r.stderr);
  for (const s of r.json.steps) {
    measures(s.e2e_ms.p50, 50, `p50 at concurrency ${s.load}`);
    assert.equal(s.ok, s.requests);
    // Little's law: req/s x mean latency = concurrency (an identity of the accounting, not a speed)
    const little = s.req_s * s.e2e_ms.mean / 1000;
    assert.ok(Math.abs(little - s.load) <= 0.25 * s.load, `req/s x mean latency = ${little} at concurrency ${s.load}`);
  }
});

test('open loop: rate R sends about R requests/s over 10 s, Poisson arrivals', timing, () => {
  const r = bench(['--base-url', fast.url, '--no-stream', '--rate', '400', '--duration', '10s', '--warmup', '0']);
  assert.equal(r.code, 0, r.stderr);
  const s = r.json.steps[0];
  // the schedule's count (Poisson: +-1.6% is one sigma); a generator that falls behind still sends late arrivals
  assert.ok(Math.abs(s.requests - 4000) <= 0.2 * 4000, `requests sent in 10 s at 400/s: ${s.requests}`);
  assert.equal(s.ok, s.requests);
});

test('streaming: TTFT, time per output token and chunk gaps measure the injected ones', timing, () => {
  const r = bench(['--base-url', streaming.url, '--concurrency', '4', '--duration', '2s', '--warmup', '300ms']);
  assert.equal(r.code, 0, r.stderr);
  const s = r.json.steps[0];
  measures(s.ttft_ms.p50, 60, 'TTFT p50');
  measures(s.tpot_ms.p50, 25, 'TPOT p50');
  measures(s.itl_ms.p50, 25, 'inter-chunk gap p50');
  measures(s.e2e_ms.p50, 60 + 11 * 25, 'e2e p50');
  assert.equal(s.output_tokens_mean, 12); // from the usage chunk
});

test('against autoglm serve: token accounting from usage, one bucket per request, 404s counted', async () => {
  const srv = await startServer();
  try {
    const r = bench(['--base-url', srv.url, '--model', 'llama2', '--concurrency', '1,2', '--requests', '6',
      '--input-tokens', '16', '--output-tokens', '8', '--ignore-eos', '--csv', path.join(dir, 'out.csv'),
      '--report', path.join(dir, 'serve.html')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(readFileSync(path.join(dir, 'serve.html'), 'utf8'),
      /<th>versions<\/th><td>autoglm bench (\d+\.\d+\.\d+); target: autoglm\/\1<\/td>/);
    assert.match(r.stdout, /\| concurrency \| req\/s \| output tok\/s \| p50 latency ms \| p99 latency ms \| p99 TTFT ms \| p99 TPOT ms \| error rate \| goodput req\/s \|/);
    for (const s of r.json.steps) {
      assert.equal(s.requests, 6);
      assert.equal(s.ok, 6);
      assert.ok(s.input_tokens_mean >= 8, `prompt tokens from usage: ${s.input_tokens_mean}`);
      assert.ok(s.output_tokens_mean > 0 && s.output_tokens_mean <= 8);
      assert.ok(s.ttft_ms.p50 > 0 && s.ttft_ms.p50 <= s.e2e_ms.p50);
    }
    assert.equal(readFileSync(path.join(dir, 'out.csv'), 'utf8').trim().split('\n').length, 3);
    for (const coding of ['gzip', 'zstd']) { // coded request bodies, decoded by the server
      const z = bench(['--base-url', srv.url, '--model', 'llama2', '--concurrency', '2', '--requests', '4', '--output-tokens', '2',
        '--compress', coding]);
      assert.equal(z.code, 0, z.stderr);
      assert.equal(z.json.steps[0].ok, 4, JSON.stringify(z.json.steps[0]));
    }
    const bad = bench(['--base-url', srv.url, '--model', 'nope', '--concurrency', '2', '--requests', '4']);
    assert.equal(bad.code, 0);
    const s = bad.json.steps[0];
    assert.deepEqual([s.requests, s.ok, s.http_errors, s.statuses], [4, 0, 4, { 404: 4 }]);
    assert.match(bad.stdout, /4 HTTP errors \(404 x4\)/);
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('a dead target: every request is a connection error, none lost', () => {
  const r = bench(['--url', 'http://127.0.0.1:1/', '--concurrency', '2', '--requests', '5']);
  assert.equal(r.code, 0, r.stderr);
  const s = r.json.steps[0];
  assert.equal(s.requests, 5);
  assert.equal(s.connection_errors, 5);
  assert.equal(s.ok, 0);
});

test('baselines: the same run compares clean; a regression past the tolerance exits 3', () => {
  const base = path.join(dir, 'base.json');
  const r = bench(['--base-url', fixed.url, '--no-stream', '--concurrency', '2', '--requests', '20', '--save-baseline', base]);
  assert.equal(r.code, 0, r.stderr);
  const doctored = JSON.parse(readFileSync(base, 'utf8'));
  const same = bench(['--base-url', fixed.url, '--no-stream', '--concurrency', '2', '--requests', '20', '--compare', base, '--tolerance', '50%']);
  assert.equal(same.code, 0, same.stdout);
  doctored.steps[0].req_s *= 10; // the baseline was ten times faster
  doctored.steps[0].e2e_ms.p99 /= 10;
  writeFileSync(base, JSON.stringify(doctored));
  const worse = bench(['--base-url', fixed.url, '--no-stream', '--concurrency', '2', '--requests', '20', '--compare', base]);
  assert.equal(worse.code, 3, worse.stdout);
  assert.match(worse.stdout, /req\/s .* REGRESSED/);
  assert.match(worse.stdout, /p99 latency .* REGRESSED/);
});

test('the HTML report: one file, the run\'s parameters, each table once as HTML, charts', () => {
  const out = path.join(dir, 'report.html');
  const r = bench(['--base-url', streaming.url, '--concurrency', '1,2', '--requests', '8', '--report', out, '--slo', 'ttft=2s,tpot=500ms']); // 30x and 20x the injected times
  assert.equal(r.code, 0, r.stderr);
  const html = readFileSync(out, 'utf8');
  assert.equal((html.match(/<svg/g) || []).length, 4);
  assert.doesNotMatch(html, /<script|<link|src=/);
  assert.match(html, /Latency CDF per step/);
  assert.match(r.stdout, /highest load within the SLOs: concurrency 2/);
  assert.doesNotMatch(html, /<pre|\| req\/s \||\|--:\|/, 'a table printed as Markdown text');
  // params, summary, four distributions: six tables, each metric's summary header once
  assert.equal((html.match(/<table/g) || []).length, 6);
  assert.equal((html.match(/<th>p99 TTFT ms<\/th>/g) || []).length, 1);
  const param = (name) => new RegExp(`<th>${name}</th><td>([^<]*)</td>`).exec(html)?.[1];
  assert.equal(param('target'), streaming.url);
  assert.equal(param('sweep'), 'concurrency 1, 2 (2 steps)');
  assert.match(param('workload'), /^chat, model autoglm-tiny, ~128 input tokens .*max 64 output tokens, streamed, seed 1$/);
  assert.equal(param('each step'), '8 requests measured after 0 ms warm-up, timeout 60 s, HTTP/1.1, a connection per request in flight');
  assert.equal(param('SLOs'), 'p99 TTFT &le; 2000 ms, p99 TPOT &le; 500 ms');
  assert.match(param('started'), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.match(param('duration'), /^\d+\.\d s$/);
  assert.match(param('versions'), /^autoglm bench \d+\.\d+\.\d+; target: \(no Server header\)$/);
  assert.match(html, /<td>highest within SLOs<\/td><\/tr>/);
  assert.equal((html.match(/stroke-dasharray/g) || []).length, 3, 'the SLO limit marked on the three load charts');
});

// Debian's chromium, when installed (scripts/install-deps installs it): the report renders with no console
// message at all (the page has no script, so any message is an error: a malformed SVG attribute, say).
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
test('the HTML report opens in headless Chromium without console errors', { skip: !CHROMIUM && 'no Chromium here' }, () => {
  const out = path.join(dir, 'report-chromium.html'), png = path.join(dir, 'report.png');
  assert.equal(bench(['--base-url', streaming.url, '--concurrency', '1,2,4', '--requests', '8', '--report', out]).code, 0);
  const run = (file) => spawnSync(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', '--enable-logging=stderr',
    '--v=0', `--screenshot=${png}`, '--window-size=1280,2000', `file://${file}`], { encoding: 'utf8', timeout: 120000 });
  const r = run(out);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stderr.split('\n').filter((l) => /CONSOLE/.test(l)), []);
  assert.ok(statSync(png).size > 10000, 'a screenshot of the page');
  // the check itself: a page with a malformed SVG attribute is caught
  const broken = path.join(dir, 'broken.html');
  writeFileSync(broken, readFileSync(out, 'utf8').replace(/points="[^"]*"/, 'points="NaN,1"'));
  assert.match(run(broken).stderr, /CONSOLE.*Expected number/);
});

test('--self-test-server --port N listens on N (a regression: --port was once read as --connections)', async () => {
  const free = await new Promise((resolve) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); }); });
  const t = await selfTestServer([], free);
  assert.equal(t.url, `http://127.0.0.1:${free}`);
  t.stop();
});

test('bad flags are one-line usage errors (exit 2)', () => {
  for (const [args, msg] of [
    [['--concurrency', '1'], /needs exactly one of --base-url URL and --url URL/],
    [['--url', 'http://x/', '--concurrency', '1', '--rate', '2', '--requests', '1'], /exactly one of --concurrency/],
    [['--url', 'http://x/', '--concurrency', '1'], /exactly one of --duration/],
    [['--url', 'ftp://x/', '--concurrency', '1', '--requests', '1'], /--url must be http\[s\]:\/\/HOST/],
    [['--url', 'http://x/', '--connections', '2', '--concurrency', '1', '--requests', '1'], /--connections needs --http2/],
    [['--url', 'https://x/', '--insecure', '--cacert', 'c.pem', '--concurrency', '1', '--requests', '1'], /exclude each other/],
    [['--url', 'http://x/', '--concurrency', '0', '--requests', '1'], /--concurrency needs a list/],
    [['--url', 'http://x/', '--concurrency', '1', '--duration', '5parsecs'], /--duration needs a duration/],
    [['--url', 'http://x/', '--rate', '1', '--requests', '1', '--slo', 'ttft=fast'], /--slo needs/],
  ]) {
    const r = spawnSync(BIN, ['bench', ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
});

test('--dataset: requests from a JSONL file of OpenAI bodies; a bad line is a one-line error', () => {
  const data = path.join(dir, 'reqs.jsonl');
  writeFileSync(data, [
    JSON.stringify({ model: 'x', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
    '',
    JSON.stringify({ prompt: 'once upon', max_tokens: 2, stream: false }),
  ].join('\n'));
  const r = bench(['--base-url', streaming.url, '--dataset', data, '--concurrency', '2', '--requests', '6']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.json.steps[0].ok, 6);
  assert.equal(r.json.steps[0].output_tokens_mean, 12); // both were streamed, as the run asks
  writeFileSync(data, '{"prompt": "a"}\n[1, 2]\n');
  const bad = bench(['--base-url', streaming.url, '--dataset', data, '--concurrency', '1', '--requests', '1']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /reqs.jsonl:2: not a JSON object/);
});

test('Ctrl-C prints what was measured so far and exits 0', async () => {
  const proc = spawn(BIN, ['bench', '--base-url', fixed.url, '--no-stream', '--concurrency', '4,8', '--duration', '60s',
    '--warmup', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { err += d; });
  await new Promise((r) => setTimeout(r, 1500));
  proc.kill('SIGINT');
  const code = await new Promise((r) => proc.on('exit', r));
  assert.equal(code, 0, err);
  assert.match(err, /step 1\/2, concurrency 4: .* ok \(interrupted\)/);
  assert.match(out, /^\| 4 \| /m);
  assert.doesNotMatch(out, /^\| 8 \| /m); // the sweep stopped there
});

// autoglm chaos: the fault-injection proxy between a client and a loopback echo
// server or the real server.  Each check is bounded from the side the fault
// guarantees (added latency at least the asked value and under 1.5x it,
// bandwidth never above the asked rate), so a loaded machine cannot fail it:
// latency, bandwidth, an injected 503 with Retry-After at the asked rate,
// faults changed through the admin API applying from the next connection,
// reset, stall and drop giving the client the error they should, counters
// in Prometheus text, and one-line usage errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, startServer } from './server.mjs';

// Start the proxy in front of port `up`; resolves with its port, its admin URL and stop() (SIGINT -> exit code).
function chaos(up, args = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ['chaos', '--listen', '127.0.0.1:0', '--upstream', `127.0.0.1:${up}`, '--admin', '127.0.0.1:0',
      ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    const exited = new Promise((res) => proc.on('exit', (code, sig) => res(code ?? sig)));
    proc.stderr.on('data', (d) => {
      log += d;
      const p = /proxy listening on [^:]+:(\d+)/.exec(log), a = /admin API on [^:]+:(\d+)/.exec(log);
      if (p && a) resolve({ port: Number(p[1]), admin: `http://127.0.0.1:${a[1]}`, log: () => log,
        stop: async () => { proc.kill('SIGINT'); return exited; } });
    });
    proc.on('exit', (code) => reject(new Error(`chaos exited ${code}: ${log}`)));
  });
}

// A connection to the proxy that sends `bytes` and resolves when `want` bytes came back (or it ended):
// { ms, got, error, ended }.
function exchange(port, bytes, want = bytes.length, { sock } = {}) {
  return new Promise((resolve) => {
    const s = sock ?? net.connect(port, '127.0.0.1');
    const t0 = performance.now();
    let got = 0, done = false;
    const finish = (extra) => { if (!done) { done = true; s.removeAllListeners('data'); resolve({ ms: performance.now() - t0, got, ...extra }); } };
    s.on('data', (d) => { got += d.length; if (got >= want) finish({}); });
    s.once('error', (e) => finish({ error: e.code }));
    s.once('close', () => finish({ ended: true }));
    s.write(bytes);
  });
}
const open = (port) => new Promise((resolve) => { const s = net.connect(port, '127.0.0.1', () => resolve(s)); });

let echo, echoPort, srv;
before(async () => {
  echo = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
  await new Promise((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = echo.address().port;
  srv = await startServer(['--ctx', '512']);
});
after(async () => {
  echo.close();
  assert.equal(await srv.stop(), 0, srv.log());
});

test('--latency: a round trip through the proxy takes at least the latency and under 1.5x it, to echo and to autoglm serve', async () => {
  const c = await chaos(echoPort, ['--latency', '100ms']); // downstream only: once per round trip
  const s = await open(c.port);
  const times = [];
  for (let i = 0; i < 5; i++) times.push((await exchange(c.port, Buffer.from('ping'), 4, { sock: s })).ms);
  s.destroy();
  for (const t of times) assert.ok(t >= 99, `${t} ms is under the latency`);
  assert.ok(times.sort((a, b) => a - b)[2] < 150, `median ${times[2]} ms is not under 1.5x`);
  assert.equal(await c.stop(), 0, c.log());

  const both = await chaos(srv.port, ['--latency', '100ms,both']); // a request up, an answer down
  const t0 = performance.now();
  const r = await fetch(`http://127.0.0.1:${both.port}/health`);
  const ms = performance.now() - t0;
  assert.equal(r.status, 200);
  assert.ok(ms >= 199 && ms < 450, `${ms} ms for a request with 100 ms each way (connect included)`);
  assert.equal(await both.stop(), 0, both.log());
});

test('--bandwidth: 120 KB come back no faster than 40 KB/s', async () => {
  const c = await chaos(echoPort, ['--bandwidth', '40KB']);
  const r = await exchange(c.port, Buffer.alloc(120000, 'x'));
  assert.equal(r.got, 120000);
  const burst = 40000 / 50; // the bucket holds 1/50 s of rate
  assert.ok(r.ms >= (120000 - burst) / 40, `${r.ms} ms: faster than the rate`);
  assert.equal(await c.stop(), 0, c.log());
});

test('--http-error 503:0.5 --retry-after 3: about half of 400 requests are 503 with Retry-After, the rest answered', async () => {
  const c = await chaos(srv.port, ['--http-error', '503:0.5', '--retry-after', '3']);
  const json = path.join(mkdtempSync(path.join(tmpdir(), 'ag-chaos-')), 'run.json');
  const b = spawnSync(BIN, ['bench', '--url', `http://127.0.0.1:${c.port}/health`, '--concurrency', '4', '--requests', '400',
    '--json', json], { encoding: 'utf8', timeout: 120000 });
  assert.equal(b.status, 0, b.stderr);
  const s = JSON.parse(readFileSync(json, 'utf8')).steps[0];
  const n503 = s.statuses['503'] ?? 0;
  assert.equal(s.ok + n503, 400, JSON.stringify(s));
  assert.ok(n503 >= 160 && n503 <= 240, `${n503} of 400 were 503`);
  let r;
  do r = await fetch(`http://127.0.0.1:${c.port}/health`); while (r.status !== 503);
  assert.equal(r.headers.get('retry-after'), '3');
  assert.equal((await r.json()).error.code, 503);
  const m = await (await fetch(`${c.admin}/metrics`)).text();
  assert.ok(Number(/^autoglm_chaos_faults_total\{fault="http_error"\} (\d+)$/m.exec(m)[1]) >= n503 + 1);
  execFileSync('promtool', ['check', 'metrics'], { input: m });
  assert.equal(await c.stop(), 0, c.log());
});

// autoglm bench --retries is the lab's naive client (bench/lab): every attempt it makes must reach the proxy,
// so what the proxy counted and what bench reports add up exactly.
test('bench --retries: each 503 or timeout is sent again, and the proxy saw every attempt', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ag-chaos-'));
  const run = (port, args) => {
    const json = path.join(dir, `${port}.json`);
    const b = spawnSync(BIN, ['bench', '--url', `http://127.0.0.1:${port}/health`, '--concurrency', '4', '--json', json,
      ...args], { encoding: 'utf8', timeout: 120000 });
    assert.equal(b.status, 0, b.stderr);
    return JSON.parse(readFileSync(json, 'utf8')).steps[0];
  };
  const fired = async (c, kind) =>
    Number(new RegExp(`^autoglm_chaos_faults_total\\{fault="${kind}"\\} (\\d+)$`, 'm').exec(await (await fetch(`${c.admin}/metrics`)).text())[1]);
  let c = await chaos(srv.port, ['--http-error', '503:0.5']);
  let s = run(c.port, ['--requests', '400', '--retries', '3']);
  const n503 = s.statuses['503'] ?? 0;
  assert.equal(s.ok + n503, 400, JSON.stringify(s));
  assert.ok(n503 <= 60, `${n503} of 400 were 503 after 3 retries (about 25 expected)`);
  assert.ok(s.retries >= 250 && s.retries <= 450, `${s.retries} retries (about 350 expected)`);
  assert.equal(await fired(c, 'http_error'), n503 + s.retries);
  assert.equal(await c.stop(), 0, c.log());
  c = await chaos(srv.port, ['--http-delay', '600ms:1']);
  s = run(c.port, ['--requests', '8', '--timeout', '200ms', '--retries', '2']);
  assert.equal(s.timeouts, 8, JSON.stringify(s));
  assert.equal(s.retries, 16);
  assert.equal(await fired(c, 'http_delay'), 24);
  assert.equal(await c.stop(), 0, c.log());
});

test('--http-delay 200ms:1: each keep-alive request goes up 200 ms late, and is counted', async () => {
  const c = await chaos(srv.port, ['--http-delay', '200ms:1']);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const get = () => new Promise((resolve, reject) => {
    const t0 = performance.now();
    http.get(`http://127.0.0.1:${c.port}/health`, { agent }, (r) => { r.resume(); r.on('end', () => resolve([r.statusCode, performance.now() - t0])); })
      .on('error', reject);
  });
  for (let i = 0; i < 3; i++) { // one connection: each request draws on its own
    const [status, ms] = await get();
    assert.equal(status, 200);
    assert.ok(ms >= 199 && ms < 450, `${ms} ms`);
  }
  agent.destroy();
  const m = await (await fetch(`${c.admin}/metrics`)).text();
  assert.match(m, /^autoglm_chaos_faults_total\{fault="http_delay"\} 3$/m);
  assert.equal(await c.stop(), 0, c.log());
});

test('HTTP faults read pipelined requests with bodies at any split: every byte goes up in order, each request draws', { timeout: 20000 }, async () => {
  const c = await chaos(echoPort, ['--http-delay', '1ms:1']);
  const reqs = 'POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello worldGET /b HTTP/1.1\r\nHost: x\r\n\r\n' +
    'PUT /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz';
  const bytes = Buffer.from(reqs);
  for (const split of [1, 7, 40, 64, 80, bytes.length]) { // one write, or two at each split point
    const s = await open(c.port);
    const back = [];
    const done = new Promise((resolve) => s.on('data', (d) => { back.push(d); if (Buffer.concat(back).length >= bytes.length) resolve(); }));
    s.write(bytes.subarray(0, split));
    if (split < bytes.length) setTimeout(() => s.write(bytes.subarray(split)), 5);
    await done;
    assert.equal(Buffer.concat(back).toString(), reqs, `split at ${split}`);
    s.destroy();
  }
  const m = await (await fetch(`${c.admin}/metrics`)).text();
  assert.match(m, /^autoglm_chaos_faults_total\{fault="http_delay"\} 18$/m); // 3 requests x 6 connections
  assert.equal(await c.stop(), 0, c.log());
});

test('the admin API: faults read back as set, a change applies from the next connection, a bad one is a 400', async () => {
  const c = await chaos(echoPort);
  assert.deepEqual(await (await fetch(`${c.admin}/faults`)).json(), {});
  const before = await open(c.port); // drawn with no faults
  const put = await fetch(`${c.admin}/faults`, { method: 'PUT', body: JSON.stringify({ latency: '120ms,up', jitter: '20ms,up', slice: 1000 }) });
  assert.equal(put.status, 200);
  assert.deepEqual(await put.json(), { latency: '120ms,up,p=1', jitter: '20ms,up,p=1', slice: '1000,down,p=1' });
  assert.ok((await exchange(c.port, Buffer.from('a'), 1, { sock: before })).ms < 100, 'the old connection kept its faults');
  const fresh = await exchange(c.port, Buffer.from('b'), 1);
  assert.ok(fresh.ms >= 99 && fresh.ms < 210, `${fresh.ms} ms on a new connection (120 ± 20 ms asked)`);
  before.destroy();
  const bad = await fetch(`${c.admin}/faults`, { method: 'PUT', body: '{"latency": "soon"}' });
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /latency 'soon': expected DURATION/);
  assert.equal((await fetch(`${c.admin}/faults`, { method: 'DELETE' })).status, 200);
  assert.deepEqual(await (await fetch(`${c.admin}/faults`)).json(), {});
  assert.equal((await fetch(`${c.admin}/nope`)).status, 404);
  assert.equal(await c.stop(), 0, c.log());
});

test('--reset-after-bytes, --stall and --drop-connections give the client a reset, silence then an end, a reset', async () => {
  const r = await chaos(echoPort, ['--reset-after-bytes', '1000']);
  const reset = await exchange(r.port, Buffer.alloc(5000, 'y'));
  // no more than 1000 bytes pass, then the connection is gone (Node reports the RST as ECONNRESET, or as a plain
  // close when it lands after the last read); the proxy counts the reset
  assert.ok(reset.got <= 1000 && (reset.error === 'ECONNRESET' || reset.ended), JSON.stringify(reset));
  const m = await (await fetch(`${r.admin}/metrics`)).text();
  assert.match(m, /^autoglm_chaos_faults_total\{fault="reset"\} 1$/m);
  assert.equal(await r.stop(), 0, r.log());

  const st = await chaos(echoPort, ['--stall', '300ms']);
  const stalled = await exchange(st.port, Buffer.from('hello'));
  assert.equal(stalled.got, 0);
  // closed unread, the client's bytes turn the close into a reset (Linux sends RST for unread data)
  assert.ok((stalled.ended || stalled.error === 'ECONNRESET') && stalled.ms >= 299, JSON.stringify(stalled));
  assert.equal(await st.stop(), 0, st.log());

  const d = await chaos(echoPort, ['--drop-connections', '1']);
  const dropped = await exchange(d.port, Buffer.from('hello'));
  assert.equal(dropped.got, 0);
  assert.ok(dropped.error === 'ECONNRESET' || dropped.ended, JSON.stringify(dropped));
  assert.equal(await d.stop(), 0, d.log());
});

test('bad flags are one-line usage errors (exit 2)', () => {
  for (const [args, msg] of [
    [['--listen', '127.0.0.1:0'], /needs --listen HOST:PORT and --upstream HOST:PORT/],
    [['--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:9', '--latency', 'soon'], /latency 'soon': expected DURATION/],
    [['--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:9', '--http-error', '200:0.5'], /http-error '200:0.5'/],
    [['--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:9', '--latency', '5ms,sideways'], /latency '5ms,sideways'/],
    [['--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:9', '--http-delay', '5ms'], /http-delay '5ms': expected DURATION:P/],
    [['--listen', '127.0.0.1:0', '--upstream', '127.0.0.1:9', '--warp', '9'], /unknown option '--warp'/],
    [['--listen', 'nowhere', '--upstream', '127.0.0.1:9'], /--listen needs HOST:PORT/],
  ]) {
    const r = spawnSync(BIN, ['chaos', ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
});

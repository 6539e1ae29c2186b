// HTTP/2 (h2c by prior knowledge) on the same listener as HTTP/1.1, with real
// clients: Node's http2 (nghttp2 inside), curl --http2-prior-knowledge, nghttp
// and h2load; and hand-made frames for the limits and the known floods
// (SETTINGS, PING, rapid reset, empty DATA), each of which must end the
// connection and never the server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startServer, postJSON, sseEvents, health, waitFor, BIN, MODEL_NAME, EOS } from './server.mjs';

const { NGHTTP2_CANCEL } = http2.constants;

// One request on a session: resolves with { status, headers, body } (body as text).
function h2request(session, headers, body) {
  return new Promise((resolve, reject) => {
    const req = session.request(headers);
    let text = '', head;
    req.setEncoding('utf8');
    req.on('response', (h) => { head = h; });
    req.on('data', (d) => { text += d; });
    req.on('end', () => resolve({ status: head[':status'], headers: head, body: text }));
    req.on('error', reject);
    req.end(body);
  });
}
const post = (session, path, obj, extra = {}) =>
  h2request(session, { ':method': 'POST', ':path': path, 'content-type': 'application/json', ...extra }, JSON.stringify(obj));
const get = (session, path, extra = {}) => h2request(session, { ':method': 'GET', ':path': path, ...extra });
const connect = (url) => new Promise((resolve, reject) => {
  const s = http2.connect(url);
  s.once('connect', () => resolve(s));
  s.once('error', reject);
});
const longStream = (maxTokens) => ({
  model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: maxTokens, stream: true, logit_bias: { [EOS]: -100 },
});

// ---- hand-made frames (RFC 9113 §4.1) and header blocks (RFC 7541: static indices and plain literals) ----
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const T = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8 };
function frame(type, flags, id, payload = Buffer.alloc(0)) {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type, h[4] = flags;
  h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
}
const lit = (index, value) => Buffer.concat([Buffer.from([index, value.length]), Buffer.from(value)]); // no indexing
function headerBlock(method, path, extra = []) {
  return Buffer.concat([Buffer.from([method === 'GET' ? 0x82 : 0x83, 0x86]), lit(0x04, path), lit(0x01, 'x'),
    ...extra.map(([n, v]) => Buffer.concat([Buffer.from([0x00, n.length]), Buffer.from(n), Buffer.from([v.length]), Buffer.from(v)]))]);
}
const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };

// A raw HTTP/2 client: frames the server sent so far, and whether it closed.
function rawH2(port, { read = true } = {}) {
  const s = net.connect(port, '127.0.0.1');
  const st = { socket: s, frames: [], closed: false, buf: Buffer.alloc(0) };
  if (!read) s.pause();
  s.on('data', (d) => {
    st.buf = Buffer.concat([st.buf, d]);
    while (st.buf.length >= 9) {
      const len = st.buf.readUIntBE(0, 3);
      if (st.buf.length < 9 + len) break;
      st.frames.push({ type: st.buf[3], flags: st.buf[4], id: st.buf.readUInt32BE(5) & 0x7fffffff, payload: st.buf.subarray(9, 9 + len) });
      st.buf = st.buf.subarray(9 + len);
    }
  });
  s.on('close', () => { st.closed = true; });
  s.on('error', () => { st.closed = true; });
  st.ready = new Promise((r) => s.on('connect', r));
  st.send = (b) => new Promise((r) => { if (s.destroyed) r(); else s.write(b, () => r()); });
  st.goaway = () => st.frames.find((f) => f.type === T.GOAWAY);
  return st;
}

let srv, srv1; // one server for most tests; a second with small limits
before(async () => {
  [srv, srv1] = await Promise.all([
    startServer(['--ctx', '4096', '--cache-mb', '8']),
    startServer(['--ctx', '4096', '--http2-max-streams', '4', '--max-body-bytes', '4096', '--max-header-bytes', '2048',
      '--read-timeout', '1s']),
  ]);
});
after(async () => {
  assert.equal(await srv.stop(), 0, srv.log());
  assert.equal(await srv1.stop(), 0, srv1.log());
});

test('h2c by prior knowledge: same bodies, statuses and headers as HTTP/1.1 on the same port', async () => {
  const s = await connect(srv.url);
  try {
    const h = await get(s, '/health');
    assert.equal(h.status, 200);
    assert.equal(JSON.parse(h.body).status, 'ok');
    assert.match(h.headers['server'], /^autoglm\/\d+\.\d+\.\d+$/);
    assert.match(h.headers['x-trace-id'], /^[0-9a-f]{32}$/);
    assert.match(h.headers['traceparent'], /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    const body = { model: MODEL_NAME, prompt: 'same over both', max_tokens: 6, temperature: 0 };
    const one = await postJSON(srv.url, '/v1/completions', body);
    const two = await post(s, '/v1/completions', body);
    assert.equal(two.status, 200);
    assert.equal(two.headers['content-type'], 'application/json');
    assert.equal(two.headers['x-cache'], 'HIT-L1'); // the cache is shared by both protocols
    assert.equal(one.headers.get('x-cache'), 'MISS');
    const a = one.json, b = JSON.parse(two.body);
    assert.deepEqual(b.choices, a.choices);
    assert.deepEqual(b.usage, a.usage);
    assert.equal(Number(two.headers['content-length']), Buffer.byteLength(two.body));
    // errors: the same OpenAI error JSON
    for (const [path, payload, status] of [['/v1/completions', { model: 'nope', prompt: 'x' }, 404],
      ['/v1/completions', { model: MODEL_NAME, prompt: 'x', max_tokens: -1 }, 400], ['/v1/nothing', {}, 404]]) {
      const h1 = await postJSON(srv.url, path, payload), h2r = await post(s, path, payload);
      assert.equal(h2r.status, status);
      assert.equal(h1.status, status);
      assert.deepEqual(JSON.parse(h2r.body), h1.json);
    }
    const m = await get(s, '/v1/models');
    assert.deepEqual(JSON.parse(m.body).data.map((d) => d.id), [MODEL_NAME]);
    const head = await h2request(s, { ':method': 'HEAD', ':path': '/health' });
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
  } finally {
    s.close();
  }
});

test('SSE over an HTTP/2 stream: the same events as over HTTP/1.1, then [DONE]', async () => {
  const s = await connect(srv.url);
  try {
    const body = { model: MODEL_NAME, prompt: 'stream me', max_tokens: 8, temperature: 0, stream: true,
      stream_options: { include_usage: true } };
    const r = await post(s, '/v1/completions', body, { 'cache-control': 'no-store' });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/event-stream');
    const ev = sseEvents(r.body);
    assert.equal(ev.at(-1), '[DONE]');
    const text = (evs) => evs.filter((e) => e !== '[DONE]' && e.choices.length).map((e) => e.choices[0].text).join('');
    const h1 = await fetch(srv.url + '/v1/completions', { method: 'POST', body: JSON.stringify(body),
      headers: { 'content-type': 'application/json', 'cache-control': 'no-store' } });
    const ev1 = sseEvents(await h1.text());
    assert.equal(text(ev), text(ev1));
    assert.deepEqual(ev.at(-2).usage, ev1.at(-2).usage);
  } finally {
    s.close();
  }
});

test('many streams multiplexed on one connection each get their own answer', async () => {
  const s = await connect(srv.url);
  try {
    const rs = await Promise.all(Array.from({ length: 40 }, (_, i) =>
      post(s, '/v1/completions', { model: MODEL_NAME, prompt: `stream number ${i}`, max_tokens: 4, temperature: 0 })));
    for (const [i, r] of rs.entries()) {
      assert.equal(r.status, 200, r.body);
      const j = JSON.parse(r.body);
      assert.equal(j.usage.completion_tokens, 4, `stream ${i}`);
    }
  } finally {
    s.close();
  }
});

test('RST_STREAM cancels the generation as a disconnect does; the connection serves on', async () => {
  const s = await connect(srv.url);
  try {
    const req = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
    req.end(JSON.stringify(longStream(4000)));
    await new Promise((r) => req.once('data', r));
    assert.ok(await waitFor(async () => (await health(srv.url)).requests_running === 1, 2000));
    req.close(NGHTTP2_CANCEL);
    const after = await waitFor(async () => { const h = await health(srv.url); return h.requests_running === 0 && h.kv_blocks_used === 0 && h; }, 3000);
    assert.ok(after, 'the generation kept running after RST_STREAM');
    assert.equal((await get(s, '/health')).status, 200);
    const m = await (await fetch(srv.url + '/metrics')).text();
    assert.match(m, /^autoglm_request_success_total\{finished_reason="abort"\} [1-9]/m);
  } finally {
    s.close();
  }
});

test('curl, nghttp and h2load speak to it; /metrics counts requests by protocol', async () => {
  const c = JSON.parse(execFileSync('curl', ['-s', '--http2-prior-knowledge', `${srv.url}/health`], { encoding: 'utf8' }));
  assert.equal(c.status, 'ok');
  const v = execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_version}', '--http2-prior-knowledge', `${srv.url}/v1/models`], { encoding: 'utf8' });
  assert.equal(v, '2');
  const n = execFileSync('nghttp', ['-nv', `${srv.url}/health`], { encoding: 'utf8' });
  assert.match(n, /recv HEADERS frame/);
  assert.match(n, /:status: 200/);
  const before = await (await fetch(srv.url + '/metrics')).text();
  const count = (t, p) => Number(new RegExp(`^autoglm_http_requests_total\\{route="/health",status="200",protocol="${p}"\\} (\\S+)$`, 'm').exec(t)?.[1] ?? 0);
  const hl = execFileSync('h2load', ['-n', '200', '-c', '2', '-m', '10', `${srv.url}/health`], { encoding: 'utf8' });
  assert.match(hl, /200 succeeded, 0 failed, 0 errored/);
  const after = await (await fetch(srv.url + '/metrics')).text();
  assert.equal(count(after, 'h2') - count(before, 'h2'), 200);
  assert.equal(count(after, 'http/1.1'), count(before, 'http/1.1'));
  execFileSync('promtool', ['check', 'metrics'], { input: after });
});

test('limits: a header list or a body over the limit gets 431 or 413, a stalled upload 408; the session goes on', async () => {
  const s = await connect(srv1.url);
  try {
    const big = await get(s, '/health', { 'x-big': 'y'.repeat(3000) });
    assert.equal(big.status, 431);
    assert.equal(JSON.parse(big.body).error.type, 'invalid_request_error');
    const body = await post(s, '/v1/completions', { model: MODEL_NAME, prompt: 'z'.repeat(5000) });
    assert.equal(body.status, 413);
    // a stream whose body never ends: 408 after --read-timeout
    const stalled = await new Promise((resolve, reject) => {
      const req = s.request({ ':method': 'POST', ':path': '/v1/completions' });
      req.write('{"model":');
      let status;
      req.on('response', (h) => { status = h[':status']; });
      req.on('data', () => {});
      req.on('end', () => resolve(status));
      req.on('close', () => resolve(status));
      req.on('error', reject);
    });
    assert.equal(stalled, 408);
    assert.equal((await get(s, '/health')).status, 200);
  } finally {
    s.close();
  }
});

test('--http2-max-streams: the server says so in SETTINGS and refuses streams beyond it', async () => {
  const c = rawH2(srv1.port);
  await c.ready;
  await c.send(Buffer.concat([PREFACE, frame(T.SETTINGS, 0, 0)]));
  assert.ok(await waitFor(() => c.frames.some((f) => f.type === T.SETTINGS && !(f.flags & 1)), 2000));
  const settings = c.frames.find((f) => f.type === T.SETTINGS && !(f.flags & 1)).payload;
  const values = new Map();
  for (let i = 0; i + 6 <= settings.length; i += 6) values.set(settings.readUInt16BE(i), settings.readUInt32BE(i + 2));
  assert.equal(values.get(3), 4); // MAX_CONCURRENT_STREAMS
  assert.equal(values.get(2), 0); // ENABLE_PUSH
  await c.send(frame(T.SETTINGS, 1, 0)); // ACK
  const body = Buffer.from(JSON.stringify(longStream(2000)));
  const frames = [];
  for (let i = 0; i < 6; i++) {
    const id = 1 + 2 * i;
    frames.push(frame(T.HEADERS, 4, id, headerBlock('POST', '/v1/completions')), frame(T.DATA, 1, id, body));
  }
  await c.send(Buffer.concat(frames));
  // streams 9 and 11 are over the limit: refused (RST_STREAM REFUSED_STREAM), or the connection ends in PROTOCOL_ERROR
  const refused = (id) => c.frames.some((f) => f.type === T.RST_STREAM && f.id === id && f.payload.readUInt32BE(0) === 7);
  const verdict = await waitFor(() => (refused(9) && refused(11)) || (c.goaway() && c.goaway().payload.readUInt32BE(4) === 1), 3000);
  assert.ok(verdict, JSON.stringify(c.frames.map((f) => [f.type, f.id])));
  c.socket.destroy();
  assert.ok(await waitFor(async () => (await health(srv1.url)).requests_running === 0, 3000));
});

// The floods: each sends frames that cost the server work and give it nothing, from a client that may not even
// read.  The connection must end (GOAWAY or close) within a bounded time, and the server must answer others.
async function flood(build, { read = true, expectCode } = {}) {
  const c = rawH2(srv.port, { read });
  await c.ready;
  await c.send(Buffer.concat([PREFACE, frame(T.SETTINGS, 0, 0)]));
  for (let i = 0; i < 40 && !c.closed && !(read && c.goaway()); i++) await c.send(build(i));
  const ended = await waitFor(() => c.closed || (read && c.goaway()), 10000);
  assert.ok(ended, 'the flood did not end the connection');
  if (expectCode !== undefined && c.goaway()) assert.equal(c.goaway().payload.readUInt32BE(4), expectCode);
  c.socket.destroy();
  const h = await health(srv.url);
  assert.equal(h.status, 'ok');
  return c;
}

test('a PING flood from a client that does not read ends its connection, not the server', async () => {
  await flood(() => Buffer.concat(Array.from({ length: 2000 }, () => frame(T.PING, 0, 0, Buffer.alloc(8)))), { read: false });
});

test('a SETTINGS flood from a client that does not read ends its connection', async () => {
  await flood(() => Buffer.concat(Array.from({ length: 2000 }, () => frame(T.SETTINGS, 0, 0, Buffer.from([0, 4, 0, 1, 0, 0])))), { read: false });
});

test('rapid reset (HEADERS then RST_STREAM, over and over) ends the connection', async () => {
  let id = 1;
  await flood(() => Buffer.concat(Array.from({ length: 200 }, () => {
    const f = Buffer.concat([frame(T.HEADERS, 5, id, headerBlock('GET', '/health')), frame(T.RST_STREAM, 0, id, u32(8))]);
    id += 2;
    return f;
  })));
  assert.ok(await waitFor(async () => (await health(srv.url)).requests_running === 0, 3000));
});

test('a flood of empty DATA frames ends the connection with ENHANCE_YOUR_CALM', async () => {
  const open = frame(T.HEADERS, 4, 1, headerBlock('POST', '/v1/completions'));
  let first = true;
  await flood(() => {
    const f = Buffer.concat([first ? open : Buffer.alloc(0), ...Array.from({ length: 500 }, () => frame(T.DATA, 0, 1))]);
    first = false;
    return f;
  }, { expectCode: 0xb });
});

test('a broken preface or garbage after it ends that connection only', async () => {
  for (const bytes of [Buffer.from('PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n'), Buffer.concat([PREFACE, Buffer.from('not a frame at all, no')])]) {
    const c = rawH2(srv.port);
    await c.ready;
    await c.send(bytes);
    assert.ok(await waitFor(() => c.closed || c.goaway(), 3000));
    c.socket.destroy();
  }
  assert.equal((await health(srv.url)).status, 'ok');
});

// autoglm bench as an HTTP/2 client: its requests are streams over --connections, and the server's own counters
// say so (curl reads /metrics on a connection of its own, which the accepted count includes).
function benchH2(url, args) {
  const json = path.join(mkdtempSync(path.join(tmpdir(), 'ag-h2bench-')), 'run.json');
  const r = spawnSync(BIN, ['bench', '--base-url', url, '--model', MODEL_NAME, '--http2', ...args, '--json', json], { encoding: 'utf8', timeout: 120000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(readFileSync(json, 'utf8'));
}
function counts(url) { // one connection, counted in what it reads
  const t = execFileSync('curl', ['-s', `${url}/metrics`], { encoding: 'utf8' });
  const v = (re) => Number(re.exec(t)?.[1] ?? 0);
  return { conns: v(/^autoglm_http_connections_accepted_total (\S+)$/m),
    chats: v(/^autoglm_http_requests_total\{route="\/v1\/chat\/completions",status="200",protocol="h2"\} (\S+)$/m) };
}

test('autoglm bench --http2: 12 streams over 2 connections to a server that allows 4 each; every request answered', () => {
  const before = counts(srv1.url);
  const run = benchH2(srv1.url, ['--connections', '2', '--concurrency', '12', '--requests', '36', '--output-tokens', '4']);
  const s = run.steps[0];
  assert.equal(s.requests, 36);
  assert.equal(s.ok, 36, JSON.stringify(s));
  assert.ok(s.ttft_ms.p50 > 0, 'streamed: a time to first token');
  assert.match(run.each_step, /HTTP\/2 over 2 connections/);
  const after = counts(srv1.url);
  assert.equal(after.chats - before.chats, 36);
  assert.equal(after.conns - before.conns, 2 + 1);
});

test('autoglm bench --http2 --timeout: a late stream is reset (the server cancels it), the connection serves on', async () => {
  const before = counts(srv.url);
  const run = benchH2(srv.url, ['--concurrency', '2', '--requests', '4', '--output-tokens', '3000', '--ignore-eos',
    '--timeout', '300ms']);
  const s = run.steps[0];
  assert.equal(s.timeouts, 4, JSON.stringify(s));
  assert.equal(s.connection_errors + s.protocol_errors, 0);
  assert.equal(counts(srv.url).conns - before.conns, 1 + 1);
  assert.ok(await waitFor(async () => (await health(srv.url)).requests_running === 0, 5000), 'a reset stream kept generating');
});

test('autoglm bench --http2: streams a server refuses unprocessed (REFUSED_STREAM) are sent again, not errors', async () => {
  // a Node h2c server that refuses its first `limit` streams before reading them, then answers
  let refused = 0, limit = 20;
  const h2 = http2.createServer();
  h2.on('stream', (stream) => {
    stream.on('error', () => {}); // Node reports the refusal it sent as the stream's error
    if (refused < limit) { refused++; stream.close(http2.constants.NGHTTP2_REFUSED_STREAM); return; }
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.end('ok');
  });
  await new Promise((r) => h2.listen(0, '127.0.0.1', r));
  const dir = mkdtempSync(path.join(tmpdir(), 'ag-h2-refused-'));
  const run = async (requests) => { // spawned, not spawnSync: this process's own loop serves the h2 server meanwhile
    const bench = spawn(BIN, ['bench', '--url', `http://127.0.0.1:${h2.address().port}/`, '--http2', '--concurrency', '4',
      '--requests', String(requests), '--json', path.join(dir, 'run.json')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    bench.stderr.on('data', (d) => { err += d; });
    assert.equal(await new Promise((r) => bench.on('exit', r)), 0, err);
    return JSON.parse(readFileSync(path.join(dir, 'run.json'), 'utf8')).steps[0];
  };
  let s = await run(40);
  assert.equal(s.ok, 40, JSON.stringify(s));
  assert.equal(s.protocol_errors, 0);
  assert.equal(refused, 20);
  assert.equal(s.refused_resent, 20, 'each refusal was sent again, and counted');
  // a server that refuses everything: each request is resent 8 times (LG_MAX_REFUSALS), then a protocol error
  refused = 0, limit = Infinity;
  s = await run(10);
  await new Promise((r) => h2.close(r));
  assert.equal(s.protocol_errors, 10, JSON.stringify(s));
  assert.equal(s.refused_resent, 80);
  assert.equal(refused, 90);
});

test('drain: GOAWAY on SIGTERM, the stream in flight finishes, exit 0', async () => {
  const d = await startServer(['--ctx', '4096', '--drain-timeout', '20s']);
  const s = await connect(d.url);
  let goaway = false;
  s.on('goaway', () => { goaway = true; });
  s.on('error', () => {});
  const done = new Promise((resolve, reject) => {
    const req = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (x) => { text += x; });
    req.on('end', () => resolve(text));
    req.on('error', reject);
    req.end(JSON.stringify({ ...longStream(150), stream_options: { include_usage: true } }));
  });
  assert.ok(await waitFor(async () => (await health(d.url)).requests_running === 1, 2000));
  d.proc.kill('SIGTERM');
  const text = await done;
  const ev = sseEvents(text);
  assert.equal(ev.at(-1), '[DONE]');
  assert.equal(ev.at(-2).usage.completion_tokens, 150); // all of it, not cut at the drain
  assert.ok(goaway, 'no GOAWAY before the end');
  assert.equal(await d.exited, 0, d.log());
  s.destroy();
});

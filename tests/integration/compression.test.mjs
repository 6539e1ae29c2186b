// Content codings end to end: JSON answers in gzip or zstd as Accept-Encoding
// asks (q-values, Vary, --compress-min-bytes), cached answers coded on their
// way out, event streams in zstd only and flushed per event (the first event
// decodes while the generation still runs), the same over HTTP/2; request
// bodies in gzip or zstd, 415 for other codings, 413 for a decompression bomb
// and 400 for a body that does not decode.  Decoded with curl (--compressed),
// Node's zlib and the zstd command.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import http2 from 'node:http2';
import zlib from 'node:zlib';
import { startServer, health, waitFor, MODEL_NAME, EOS } from './server.mjs';

let srv, small;
before(async () => {
  [srv, small] = await Promise.all([
    startServer(['--ctx', '4096', '--cache-mb', '8']),
    startServer(['--compress-min-bytes', '0']),
  ]);
});
after(async () => {
  assert.equal(await srv.stop(), 0, srv.log());
  assert.equal(await small.stop(), 0, small.log());
});

const unzstd = (buf) => execFileSync('zstd', ['-d', '-c', '-q'], { input: buf });
const big = (prompt, extra = {}) => ({ model: MODEL_NAME, prompt, max_tokens: 200, temperature: 0, logit_bias: { [EOS]: -100 }, ...extra });

// A raw request: status, headers, and the body's bytes as sent (not decoded).
async function rawPost(url, path, body, headers = {}) {
  const r = await fetch(url + path, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  return { status: r.status, headers: r.headers, bytes: Buffer.from(await r.arrayBuffer()) };
}
// fetch decodes gzip itself; curl shows what was on the wire.
function curlRaw(args) {
  const out = execFileSync('curl', ['-s', '-D', '-', ...args], { maxBuffer: 1 << 24 });
  const at = out.indexOf('\r\n\r\n');
  const head = out.subarray(0, at).toString('latin1');
  const headers = Object.fromEntries(head.split('\r\n').slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { status: Number(head.split(' ')[1]), headers, body: out.subarray(at + 4) };
}

test('JSON answers in the coding Accept-Encoding prefers, with Vary; the same text once decoded', () => {
  const body = JSON.stringify(big('compress this answer'));
  const url = `${srv.url}/v1/completions`;
  const plain = curlRaw([url, '-d', body, '-H', 'cache-control: no-store']);
  assert.equal(plain.headers['content-encoding'], undefined);
  assert.equal(plain.headers['vary'], 'Accept-Encoding');
  const text = JSON.parse(plain.body).choices[0].text;
  const gz = curlRaw([url, '-d', body, '-H', 'accept-encoding: gzip', '-H', 'cache-control: no-store']);
  assert.equal(gz.headers['content-encoding'], 'gzip');
  assert.equal(Number(gz.headers['content-length']), gz.body.length);
  assert.equal(JSON.parse(zlib.gunzipSync(gz.body)).choices[0].text, text);
  const zs = curlRaw([url, '-d', body, '-H', 'accept-encoding: gzip;q=0.5, zstd', '-H', 'cache-control: no-store']);
  assert.equal(zs.headers['content-encoding'], 'zstd');
  assert.equal(JSON.parse(unzstd(zs.body)).choices[0].text, text);
  const none = curlRaw([url, '-d', body, '-H', 'accept-encoding: zstd;q=0, gzip;q=0, br', '-H', 'cache-control: no-store']);
  assert.equal(none.headers['content-encoding'], undefined);
  // curl --compressed decodes what it asked for (it offers zstd too)
  const c = JSON.parse(execFileSync('curl', ['-s', '--compressed', url, '-d', body, '-H', 'cache-control: no-store'], { encoding: 'utf8' }));
  assert.equal(c.choices[0].text, text);
});

test('below --compress-min-bytes nothing is coded; at 0 even small answers are', () => {
  const h = curlRaw([`${srv.url}/health`, '-H', 'accept-encoding: gzip']);
  assert.equal(h.headers['content-encoding'], undefined);
  const s = curlRaw([`${small.url}/health`, '-H', 'accept-encoding: gzip']);
  assert.equal(s.headers['content-encoding'], 'gzip');
  assert.equal(JSON.parse(zlib.gunzipSync(s.body)).status, 'ok');
  const m = curlRaw([`${small.url}/metrics`, '-H', 'accept-encoding: gzip']); // not JSON: never coded
  assert.equal(m.headers['content-encoding'], undefined);
});

test('cache hits are coded as each client asks, from one stored answer', () => {
  const body = JSON.stringify(big('cached and coded'));
  const url = `${srv.url}/v1/completions`;
  const first = curlRaw([url, '-d', body]);
  assert.equal(first.headers['x-cache'], 'MISS');
  const text = JSON.parse(first.body).choices[0].text;
  for (const [ae, dec] of [['gzip', zlib.gunzipSync], ['zstd', unzstd], ['identity', (b) => b]]) {
    const r = curlRaw([url, '-d', body, '-H', `accept-encoding: ${ae}`]);
    assert.equal(r.headers['x-cache'], 'HIT-L1');
    assert.equal(r.headers['content-encoding'], ae === 'identity' ? undefined : ae);
    assert.equal(JSON.parse(dec(r.body)).choices[0].text, text);
  }
  const viaCurl = JSON.parse(execFileSync('curl', ['-s', '--compressed', url, '-d', body], { encoding: 'utf8' }));
  assert.equal(viaCurl.choices[0].text, text); // curl's own decoders read the joined forms too
});

test('event streams: zstd when asked, each event flushed as it is made; gzip is not used for streams', async () => {
  const body = JSON.stringify({ ...big('a long stream'), max_tokens: 3000, stream: true });
  const gz = curlRaw([`${srv.url}/v1/completions`, '-d', JSON.stringify({ ...big('short'), max_tokens: 4, stream: true }),
    '-H', 'accept-encoding: gzip']);
  assert.equal(gz.headers['content-encoding'], undefined);
  // curl decodes zstd as it arrives: its first event must show while the generation still runs
  const curl = spawn('curl', ['-s', '-N', '--compressed', '-H', 'accept-encoding: zstd', `${srv.url}/v1/completions`, '-d', body]);
  let out = '';
  const first = new Promise((resolve) => curl.stdout.on('data', (d) => { out += d; if (out.includes('"text"')) resolve(); }));
  await first;
  const h = await health(srv.url);
  assert.equal(h.requests_running, 1, 'the first event came only after the generation ended');
  curl.kill();
  assert.ok(await waitFor(async () => (await health(srv.url)).requests_running === 0, 3000));
  // a whole short stream decodes to events ending in [DONE]
  const whole = curlRaw([`${srv.url}/v1/completions`, '-d', JSON.stringify({ ...big('short'), max_tokens: 4, stream: true }),
    '-H', 'accept-encoding: zstd']);
  assert.equal(whole.headers['content-encoding'], 'zstd');
  assert.match(unzstd(whole.body).toString(), /data: \[DONE\]\n\n$/);
});

test('over HTTP/2 the same codings apply', async () => {
  const s = http2.connect(srv.url);
  try {
    const r = await new Promise((resolve, reject) => {
      const req = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', 'accept-encoding': 'gzip' });
      const parts = [];
      let head;
      req.on('response', (hh) => { head = hh; });
      req.on('data', (d) => parts.push(d));
      req.on('end', () => resolve({ head, body: Buffer.concat(parts) }));
      req.on('error', reject);
      req.end(JSON.stringify(big('h2 coded', { max_tokens: 300 }))); // well over --compress-min-bytes
    });
    assert.equal(r.head['content-encoding'], 'gzip');
    assert.equal(r.head['vary'], 'Accept-Encoding');
    assert.equal(JSON.parse(zlib.gunzipSync(r.body)).usage.completion_tokens, 300);
    // a zstd event stream reset mid-way: its coder goes with the stream (the server's exit checks for leaks)
    const req = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json', 'accept-encoding': 'zstd' });
    req.end(JSON.stringify({ ...big('h2 zstd stream'), max_tokens: 3000, stream: true }));
    const head = await new Promise((resolve) => req.once('response', resolve));
    assert.equal(head['content-encoding'], 'zstd');
    await new Promise((resolve) => req.once('data', resolve));
    req.close(http2.constants.NGHTTP2_CANCEL);
    assert.ok(await waitFor(async () => (await health(srv.url)).requests_running === 0, 3000));
  } finally {
    s.close();
  }
});

test('request bodies: gzip and zstd decoded; other codings 415; a bomb 413; a broken body 400', async () => {
  const json = JSON.stringify({ model: MODEL_NAME, prompt: 'a coded request', max_tokens: 3, temperature: 0 });
  const plain = await rawPost(srv.url, '/v1/completions', json, { 'cache-control': 'no-store' });
  const want = JSON.parse(plain.bytes).choices;
  for (const [coding, bytes] of [['gzip', zlib.gzipSync(json)], ['zstd', execFileSync('zstd', ['-c', '-q'], { input: json })]]) {
    const r = await rawPost(srv.url, '/v1/completions', bytes, { 'content-encoding': coding, 'cache-control': 'no-store' });
    assert.equal(r.status, 200, r.bytes.toString());
    assert.deepEqual(JSON.parse(r.bytes).choices, want);
  }
  const br = await rawPost(srv.url, '/v1/completions', zlib.brotliCompressSync(json), { 'content-encoding': 'br' });
  assert.equal(br.status, 415);
  assert.equal(br.headers.get('accept-encoding'), 'gzip, zstd');
  assert.equal(JSON.parse(br.bytes).error.code, 'unsupported_content_encoding');
  const bomb = zlib.gzipSync(Buffer.alloc(64 << 20)); // 64 MiB of zeros in about 64 KiB, over the 8 MiB limit
  assert.ok(bomb.length < 1 << 20);
  const b = await rawPost(srv.url, '/v1/completions', bomb, { 'content-encoding': 'gzip' });
  assert.equal(b.status, 413);
  const bad = await rawPost(srv.url, '/v1/completions', Buffer.from('not gzip at all'), { 'content-encoding': 'gzip' });
  assert.equal(bad.status, 400);
  assert.equal((await health(srv.url)).status, 'ok');
});

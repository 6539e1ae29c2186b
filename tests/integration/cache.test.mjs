// The response cache (L1) through the real server: which requests it serves,
// under which key, the X-Cache/Age headers, request controls, tenants,
// namespaces, TTL, the admin endpoints and metrics; and HTTP caching (Cache-Control, ETag, If-None-Match).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { startServer, postJSON, sseEvents, waitFor, parseResponses, MODEL_NAME } from './server.mjs';

let srv, plain;
before(async () => {
  [srv, plain] = await Promise.all([
    startServer(['--cache-mb', '8', '--api-key', 'tenant-a', '--api-key', 'tenant-b', '--admin-key', 'root']),
    startServer(['--cache-mb', '8']),
  ]);
});
after(async () => {
  assert.equal(await srv.stop(), 0, srv.log());
  assert.equal(await plain.stop(), 0, plain.log());
});

const A = { authorization: 'Bearer tenant-a' }, B = { authorization: 'Bearer tenant-b' };
let uniq = 0;
// A fresh greedy completion request (a prompt no other test uses).
const fresh = (extra = {}) => ({ model: MODEL_NAME, prompt: `cache test ${++uniq}`, max_tokens: 6, temperature: 0, ...extra });
const xcache = (r) => r.headers.get('x-cache');

test('a greedy request misses, then hits with the same answer, an Age header and a new id', async () => {
  const body = fresh();
  const a = await postJSON(srv.url, '/v1/completions', body, A);
  const b = await postJSON(srv.url, '/v1/completions', body, A);
  assert.equal(xcache(a), 'MISS');
  assert.equal(xcache(b), 'HIT-L1');
  assert.match(b.headers.get('age'), /^\d+$/);
  assert.equal(b.json.choices[0].text, a.json.choices[0].text);
  assert.deepEqual(b.json.usage, a.json.usage);
  assert.notEqual(b.json.id, a.json.id);
});

test('HTTP caching: a deterministic answer is private with max-age and a weak ETag, the same on a hit and without a cache; sampled answers and streams say no-store', async () => {
  const body = fresh({ cache: { ttl: 120 } });
  const a = await postJSON(srv.url, '/v1/completions', body, A);
  const b = await postJSON(srv.url, '/v1/completions', body, A);
  assert.equal(xcache(b), 'HIT-L1');
  assert.equal(a.headers.get('cache-control'), 'private, max-age=120');
  assert.match(a.headers.get('etag'), /^W\/"[0-9a-f]{16}"$/);
  assert.equal(b.headers.get('etag'), a.headers.get('etag'), 'the tag covers the content, not the id');
  assert.notEqual(b.json.id, a.json.id);
  // the same answer from a server without a cache and without keys: the same tag (the tenant is not in it)
  const c = await postJSON(plain.url, '/v1/completions', { ...body, cache: undefined }, { 'cache-control': 'no-store' });
  assert.equal(c.json.choices[0].text, a.json.choices[0].text);
  assert.equal(c.headers.get('etag'), a.headers.get('etag'));
  assert.equal(c.headers.get('cache-control'), 'private, max-age=3600');
  // a seed makes a sampled request deterministic; without one it is no-store, with no tag
  assert.match((await postJSON(srv.url, '/v1/completions', fresh({ temperature: 1, seed: 3 }), A)).headers.get('cache-control'), /^private, max-age=\d+$/);
  const sampled = await postJSON(srv.url, '/v1/completions', fresh({ temperature: 1 }), A);
  assert.equal(sampled.headers.get('cache-control'), 'no-store');
  assert.equal(sampled.headers.get('etag'), null);
  const stream = await fetch(srv.url + '/v1/completions', { method: 'POST', headers: { ...A, 'content-type': 'application/json' },
    body: JSON.stringify(fresh({ stream: true })) });
  await stream.text();
  assert.equal(stream.headers.get('cache-control'), 'no-store');
  assert.equal(stream.headers.get('x-accel-buffering'), 'no'); // a proxy passes the events on unbuffered
  assert.equal(stream.headers.get('etag'), null);
});

test('If-None-Match naming the answer\'s ETag is 412 (RFC 9110 13.1.2: not 304 for a POST); another tag gets the answer', async () => {
  const body = fresh();
  const a = await postJSON(srv.url, '/v1/completions', body, A);
  const tag = a.headers.get('etag');
  for (const inm of [tag, `"other", ${tag}`, tag.slice(2), '*']) { // weak comparison: W/ or not, in a list
    const r = await postJSON(srv.url, '/v1/completions', body, { ...A, 'if-none-match': inm });
    assert.equal(r.status, 412, inm);
    assert.equal(r.json.error.code, 'precondition_failed');
    assert.equal(r.headers.get('etag'), tag);
  }
  const miss = await postJSON(srv.url, '/v1/completions', fresh(), { ...A, 'if-none-match': tag }); // another answer
  assert.equal(miss.status, 200);
  const other = await postJSON(srv.url, '/v1/completions', body, { ...A, 'if-none-match': 'W/"0000000000000000"' });
  assert.equal(other.status, 200);
  assert.equal(other.json.choices[0].text, a.json.choices[0].text);
});

test('--cache-public: deterministic answers say public', async () => {
  const pub = await startServer(['--cache-public']);
  try {
    const r = await postJSON(pub.url, '/v1/completions', fresh());
    assert.equal(r.headers.get('cache-control'), 'public, max-age=3600');
  } finally {
    assert.equal(await pub.stop(), 0, pub.log());
  }
});

test('equivalent JSON spellings meet in one entry (the key is over prompt tokens and parameters)', async () => {
  const body = fresh();
  await postJSON(srv.url, '/v1/completions', body, A);
  const respelled = `{ "temperature" : 0.0, "max_tokens": 6,\n "prompt": ${JSON.stringify(body.prompt)}, "model": "${MODEL_NAME}" }`;
  const r = await fetch(srv.url + '/v1/completions', { method: 'POST', headers: { ...A, 'content-type': 'application/json' }, body: respelled });
  assert.equal(r.headers.get('x-cache'), 'HIT-L1');
  const other = await postJSON(srv.url, '/v1/completions', { ...body, max_tokens: 5 }, A);
  assert.equal(xcache(other), 'MISS'); // a parameter that changes output is part of the key
});

test('streamed and whole answers share an entry; a hit replays the stream in the same chunk shape', async () => {
  const body = { model: MODEL_NAME, messages: [{ role: 'user', content: `stream ${++uniq}` }], max_tokens: 6, temperature: 0 };
  const whole = await postJSON(srv.url, '/v1/chat/completions', body, A);
  assert.equal(xcache(whole), 'MISS');
  const r = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', headers: { ...A, 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }) });
  assert.equal(r.headers.get('x-cache'), 'HIT-L1');
  assert.equal(r.headers.get('content-type'), 'text/event-stream');
  const ev = sseEvents(await r.text());
  assert.equal(ev.at(-1), '[DONE]');
  assert.equal(ev[0].choices[0].delta.role, 'assistant');
  assert.equal(ev.filter((e) => e !== '[DONE]' && e.choices.length).map((e) => e.choices[0].delta.content ?? '').join(''),
    whole.json.choices[0].message.content);
  assert.equal(ev.at(-3).choices[0].finish_reason, whole.json.choices[0].finish_reason);
  assert.deepEqual(ev.at(-2).usage, whole.json.usage);
  // and the other way: stored by a stream, served whole
  const body2 = { ...body, messages: [{ role: 'user', content: `stream ${++uniq}` }] };
  const s2 = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', headers: { ...A, 'content-type': 'application/json' },
    body: JSON.stringify({ ...body2, stream: true }) });
  assert.equal(s2.headers.get('x-cache'), 'MISS');
  const streamed = sseEvents(await s2.text()).filter((e) => e !== '[DONE]').map((e) => e.choices[0]?.delta?.content ?? '').join('');
  const w2 = await postJSON(srv.url, '/v1/chat/completions', body2, A);
  assert.equal(xcache(w2), 'HIT-L1');
  assert.equal(w2.json.choices[0].message.content, streamed);
});

test('sampling without a seed is never served from the cache; with a seed it is', async () => {
  const body = fresh({ temperature: 0.9 });
  for (let i = 0; i < 3; i++) assert.equal(xcache(await postJSON(srv.url, '/v1/completions', body, A)), 'BYPASS');
  const seeded = fresh({ temperature: 0.9, seed: 7 });
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', seeded, A)), 'MISS');
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', seeded, A)), 'HIT-L1');
  const lp = fresh({ logprobs: 2 }); // log-probabilities are not cached
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', lp, A)), 'BYPASS');
});

test('Cache-Control: no-cache skips the lookup (and refreshes); no-store keeps the answer out', async () => {
  const body = fresh();
  await postJSON(srv.url, '/v1/completions', body, A);
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', body, { ...A, 'cache-control': 'no-cache' })), 'BYPASS');
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', body, A)), 'HIT-L1');
  const unstored = fresh();
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', unstored, { ...A, 'cache-control': 'no-store' })), 'MISS');
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', unstored, A)), 'MISS');
});

test('tenants never read each other\'s answers; namespaces and TTL from the body', async () => {
  const body = fresh();
  await postJSON(srv.url, '/v1/completions', body, A);
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', body, B)), 'MISS');
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', body, B)), 'HIT-L1');
  const ns = { ...body, cache: { namespace: 'team-x' } };
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', ns, A)), 'MISS');
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', ns, A)), 'HIT-L1');
  const short = fresh({ cache: { ttl: 1 } });
  await postJSON(srv.url, '/v1/completions', short, A);
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', short, A)), 'HIT-L1');
  await new Promise((r) => setTimeout(r, 1200));
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', short, A)), 'MISS'); // expired
  const bad = await postJSON(srv.url, '/v1/completions', fresh({ cache: { namespace: 5 } }), A);
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.param, 'cache.namespace');
});

test('DELETE /v1/cache needs the admin key, and can drop one namespace', async () => {
  const body = fresh();
  const inX = { ...body, cache: { namespace: 'x' } };
  await postJSON(srv.url, '/v1/completions', body, A);
  await postJSON(srv.url, '/v1/completions', inX, A);
  assert.equal((await fetch(srv.url + '/v1/cache', { method: 'DELETE', headers: A })).status, 401);
  assert.equal((await fetch(plain.url + '/v1/cache', { method: 'DELETE' })).status, 403); // no --admin-key
  const del = await fetch(srv.url + '/v1/cache?namespace=x', { method: 'DELETE', headers: { authorization: 'Bearer root' } });
  assert.equal(del.status, 200);
  assert.equal((await del.json()).deleted, 1);
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', inX, A)), 'MISS');
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', body, A)), 'HIT-L1');
  await fetch(srv.url + '/v1/cache', { method: 'DELETE', headers: { authorization: 'Bearer root' } });
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', body, A)), 'MISS');
});

test('/v1/cache/stats and /metrics count hits, misses and bypasses (promtool-clean)', async () => {
  const before = (await (await fetch(plain.url + '/v1/cache/stats')).json()).l1;
  const body = fresh();
  await postJSON(plain.url, '/v1/completions', body);
  await postJSON(plain.url, '/v1/completions', body);
  await postJSON(plain.url, '/v1/completions', fresh({ temperature: 1 }));
  const stats = await (await fetch(plain.url + '/v1/cache/stats')).json();
  assert.equal(stats.l1.hits - before.hits, 1);
  assert.equal(stats.l1.misses - before.misses, 1);
  assert.ok(stats.bypass >= 1);
  assert.ok(stats.l1.entries >= 1 && stats.l1.bytes > 0 && stats.l1.max_bytes === 8 << 20);
  const metrics = await (await fetch(plain.url + '/metrics')).text();
  assert.match(metrics, new RegExp(`autoglm_cache_hits_total\\{tier="l1"\\} ${stats.l1.hits}\\n`));
  execFileSync('promtool', ['check', 'metrics'], { input: metrics });
});

test('single flight: 50 concurrent identical requests make one generation', async () => {
  const tokens = async () => {
    const m = await (await fetch(plain.url + '/metrics')).text();
    return Number(/^autoglm_generation_tokens_total (\d+)/m.exec(m)[1]);
  };
  const before = await tokens();
  const body = fresh({ max_tokens: 32, logit_bias: { 2: -100 } }); // no early end: every generation is 32 tokens
  const rs = await Promise.all(Array.from({ length: 50 }, () => postJSON(plain.url, '/v1/completions', body)));
  const texts = new Set(rs.map((r) => r.json.choices[0].text));
  assert.equal(texts.size, 1);
  assert.deepEqual([...new Set(rs.map(xcache))].sort(), ['HIT-L1', 'MISS']);
  assert.equal(rs.filter((r) => xcache(r) === 'MISS').length, 1);
  assert.equal(await tokens() - before, 32); // one generation's tokens, not fifty
});

test('a leader whose client leaves still answers its followers', async () => {
  const body = fresh({ max_tokens: 1500, logit_bias: { 2: -100 } }); // long enough to still run at the abort
  const ctl = new AbortController();
  const leader = fetch(plain.url + '/v1/completions', { method: 'POST', signal: ctl.signal,
    headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }).catch(() => null);
  await new Promise((r) => setTimeout(r, 30));
  const follower = postJSON(plain.url, '/v1/completions', body);
  await new Promise((r) => setTimeout(r, 20));
  ctl.abort();
  await leader;
  const f = await follower;
  assert.equal(f.status, 200);
  assert.equal(f.json.usage.completion_tokens, 1500);
  assert.equal(xcache(f), 'HIT-L1');
  const logged = (re) => waitFor(() => re.test(plain.log())); // log lines reach us a moment after the responses
  assert.ok(await logged(/status=499 .*cache=miss/), plain.log()); // the leader's client left...
  assert.ok(await logged(/status=200 .*cache=coalesced/), plain.log()); // ...its follower was answered
});

// The bytes of a whole response after its opening (id, object, created): what a hit sends from the shared value.
const rest = (text) => text.slice(text.indexOf(',"model":'));

test('hits send the generated bytes from one shared value: intact for a slow reader after the entry is deleted', async () => {
  const body = fresh({ n: 4, max_tokens: 1000, logit_bias: { 2: -100 } }); // about 20 KB of answer
  const miss = await postJSON(srv.url, '/v1/completions', body, A);
  assert.equal(xcache(miss), 'MISS');
  const chat = { model: MODEL_NAME, messages: [{ role: 'user', content: `shared ${++uniq}` }], max_tokens: 8, temperature: 0 };
  const chatMiss = await postJSON(srv.url, '/v1/chat/completions', chat, A);
  const chatHit = await postJSON(srv.url, '/v1/chat/completions', chat, A);
  assert.equal(rest(chatHit.text), rest(chatMiss.text)); // the chat shape too
  // 1000 pipelined hits (20 MB) to a client that does not read: most of them wait in the server's
  // write queue, holding the value, while the admin drops the entry.
  const l1hits = async () => (await (await fetch(srv.url + '/v1/cache/stats', { headers: A })).json()).l1.hits;
  const hits = 1000, before = await l1hits();
  const json = JSON.stringify(body);
  const req = `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tenant-a\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(json)}\r\n\r\n${json}`;
  const sock = net.connect(srv.port, '127.0.0.1');
  sock.pause();
  await new Promise((r) => sock.on('connect', r));
  sock.write(req.repeat(hits));
  assert.ok(await waitFor(async () => await l1hits() - before === hits, 20000), 'the server did not answer every pipelined request');
  const del = await fetch(srv.url + '/v1/cache', { method: 'DELETE', headers: { authorization: 'Bearer root' } });
  assert.equal(del.status, 200);
  assert.equal(xcache(await postJSON(srv.url, '/v1/completions', { ...body, max_tokens: 3 }, A)), 'MISS'); // reuse freed memory
  const want = rest(miss.text), last = Buffer.from(want.slice(-64)); // every response ends with these bytes
  let got = Buffer.alloc(0), done;
  const all = new Promise((r) => { done = r; });
  sock.on('data', (d) => {
    got = Buffer.concat([got, d]);
    // the heads make the stream longer than hits x body: count whole responses once it could be complete
    if (got.length >= hits * want.length && got.subarray(-last.length).equals(last) &&
        parseResponses(got.toString('latin1')).length >= hits) done();
  });
  sock.resume();
  await Promise.race([all, new Promise((r) => setTimeout(r, 30000).unref())]);
  sock.destroy();
  const res = parseResponses(got.toString('latin1'));
  assert.equal(res.length, hits);
  for (const r of res) {
    assert.equal(r.headers['x-cache'], 'HIT-L1');
    assert.equal(rest(r.body), want);
  }
  assert.equal(new Set(res.map((r) => JSON.parse(r.body).id)).size, hits); // each its own id
});

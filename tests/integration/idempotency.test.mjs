// Idempotency-Key: a request retried with its key is answered from the first attempt's generation, finished or
// in flight, and costs no generation of its own; the key with another body is a 422; a keyed generation whose
// client left goes on for --idempotency-grace, for the retry, and is cancelled when none comes.  The count of
// generations comes from the server's own metrics (autoglm_request_success_total), not from timing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, MODEL_NAME, sseEvents } from './server.mjs';

let srv, small;
before(async () => {
  srv = await startServer(['--api-key', 'tenant-a', '--api-key', 'tenant-b', '--idempotency-grace', '600ms']);
  small = await startServer(['--idempotency-max-keys', '2', '--idempotency-ttl', '400ms']);
});
after(async () => {
  assert.equal(await srv.stop(), 0, srv.log());
  assert.equal(await small.stop(), 0, small.log());
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// temperature 1: sampled, so a second generation would almost surely differ
const post = (s, body, { key, tenant = 'tenant-a', signal } = {}) => fetch(`${s.url}/v1/completions`, {
  method: 'POST', signal,
  headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${tenant}`, ...(key ? { 'Idempotency-Key': key } : {}) },
  body: JSON.stringify({ model: MODEL_NAME, prompt: 'Once upon a time', temperature: 1, ...body }),
});
const metrics = async (s) => {
  const t = await (await fetch(`${s.url}/metrics`)).text();
  const get = (re) => Number(re.exec(t)?.[1] ?? NaN);
  return {
    generated: get(/^autoglm_request_success_total\{finished_reason="length"\} (\S+)$/m),
    aborted: get(/^autoglm_request_success_total\{finished_reason="abort"\} (\S+)$/m),
    running: get(/^autoglm_num_requests_running (\S+)$/m),
    idem: Object.fromEntries([...t.matchAll(/^autoglm_idempotency_requests_total\{result="(\w+)"\} (\S+)$/gm)].map((m) => [m[1], Number(m[2])])),
  };
};
const text = async (r) => (await r.json()).choices[0].text;
// tokens, ignore_eos: about two seconds of generation on the fixture (ASan's build is about eight times slower)
const LONG = process.env.AUTOGLM_SANITIZED === '1' ? 500 : 4000;

test('a finished answer is replayed: same text, Idempotent-Replayed, no second generation', async () => {
  const m0 = await metrics(srv);
  const a = await post(srv, { max_tokens: 16 }, { key: 'replay-1' });
  assert.equal(a.status, 200);
  assert.equal(a.headers.get('idempotent-replayed'), null);
  const first = await text(a);
  const b = await post(srv, { max_tokens: 16 }, { key: 'replay-1' });
  assert.equal(b.status, 200);
  assert.equal(b.headers.get('idempotent-replayed'), 'true');
  assert.equal(await text(b), first);
  const m1 = await metrics(srv);
  assert.equal(m1.generated - m0.generated, 1);
  assert.equal(m1.idem.new - m0.idem.new, 1);
  assert.equal(m1.idem.replayed - m0.idem.replayed, 1);
  // without a key, the same request generates again (and, sampled, says something else)
  await text(await post(srv, { max_tokens: 16 }));
  assert.equal((await metrics(srv)).generated - m1.generated, 1);
});

test('a streamed answer is replayed as a stream of the same text', async () => {
  const body = { max_tokens: 12, stream: true };
  const join = (t) => sseEvents(t).filter((e) => e !== '[DONE]').map((e) => e.choices[0]?.text ?? '').join('');
  const first = join(await (await post(srv, body, { key: 'stream-1' })).text());
  const r = await post(srv, body, { key: 'stream-1' });
  assert.equal(r.headers.get('idempotent-replayed'), 'true');
  assert.match(r.headers.get('content-type'), /text\/event-stream/);
  const again = await r.text();
  assert.equal(join(again), first);
  assert.ok(again.endsWith('data: [DONE]\n\n'));
});

test('the key with another body is a 422; keys are per tenant', async () => {
  assert.equal((await post(srv, { max_tokens: 4 }, { key: 'conflict-1' })).status, 200);
  const r = await post(srv, { max_tokens: 5 }, { key: 'conflict-1' });
  assert.equal(r.status, 422);
  const e = (await r.json()).error;
  assert.equal(e.code, 'idempotency_key_reused');
  // another tenant's request with the same key is its own
  const other = await post(srv, { max_tokens: 5 }, { key: 'conflict-1', tenant: 'tenant-b' });
  assert.equal(other.status, 200);
  assert.equal(other.headers.get('idempotent-replayed'), null);
});

test('a request while its key generates waits for that generation (one generation, two answers)', async () => {
  const m0 = await metrics(srv);
  const body = { max_tokens: LONG, ignore_eos: true };
  const first = post(srv, body, { key: 'inflight-1' });
  await sleep(200);
  const second = await post(srv, body, { key: 'inflight-1' });
  assert.equal(second.headers.get('idempotent-replayed'), 'true');
  assert.equal(await text(second), await text(await first));
  const m1 = await metrics(srv);
  assert.equal(m1.generated - m0.generated, 1);
  assert.equal(m1.idem.joined - m0.idem.joined, 1);
});

test('a retry after the client gave up gets the generation that went on without it', async () => {
  const m0 = await metrics(srv);
  const body = { max_tokens: LONG, ignore_eos: true };
  const ac = new AbortController();
  const gaveUp = post(srv, body, { key: 'orphan-1', signal: ac.signal }).catch((e) => e);
  await sleep(150);
  ac.abort(); // as a client does at its first-byte timeout: the connection closes
  assert.equal((await gaveUp).name, 'AbortError');
  await sleep(200); // its backoff, shorter than the grace
  const r = await post(srv, body, { key: 'orphan-1' });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('idempotent-replayed'), 'true');
  const j = await r.json();
  assert.equal(j.usage.completion_tokens, LONG);
  const m1 = await metrics(srv);
  assert.equal(m1.generated - m0.generated, 1);
  assert.equal(m1.aborted - m0.aborted, 0);
});

test('a keyed generation whose client left and never came back is cancelled after the grace', async () => {
  const m0 = await metrics(srv);
  const ac = new AbortController();
  const gaveUp = post(srv, { max_tokens: LONG, ignore_eos: true }, { key: 'orphan-2', signal: ac.signal }).catch((e) => e);
  await sleep(150);
  ac.abort();
  await gaveUp;
  await sleep(250);
  assert.equal((await metrics(srv)).running, 1, 'still generating within the grace');
  let m1;
  for (let i = 0; i < 50; i++) { // the grace (600 ms) and the timer's period; the generation alone takes seconds
    m1 = await metrics(srv);
    if (m1.aborted > m0.aborted) break;
    await sleep(100);
  }
  assert.equal(m1.aborted - m0.aborted, 1);
  assert.equal(m1.running, 0);
  // the key has no answer: its next request generates
  const r = await post(srv, { max_tokens: 8, ignore_eos: true }, { key: 'orphan-2' });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('idempotent-replayed'), null);
});

test('a bad Idempotency-Key is a 400 naming the header', async () => {
  for (const k of ['a'.repeat(256), 'with space', 'tab\there']) {
    const r = await post(srv, { max_tokens: 4 }, { key: k });
    assert.equal(r.status, 400, JSON.stringify(k));
    assert.equal((await r.json()).error.code, 'invalid_idempotency_key');
  }
});

test('limits: --idempotency-max-keys evicts the oldest answer, --idempotency-ttl forgets answers', async () => {
  const p = (key, n) => post(small, { max_tokens: n, ignore_eos: true }, { key, tenant: 'x' });
  for (const k of ['k1', 'k2', 'k3']) assert.equal((await p(k, 4)).status, 200); // k3 evicts k1
  assert.equal((await p('k1', 5)).status, 200, 'k1 was forgotten: another body is a new request');
  assert.equal((await p('k3', 5)).status, 422, 'k3 is remembered');
  await sleep(500);
  assert.equal((await p('k3', 5)).status, 200, 'past the ttl, k3 was forgotten');
  // every remembered key still generating: a new key is served without one
  const running = [p('r1', LONG), p('r2', LONG)];
  await sleep(100);
  const m0 = await metrics(small);
  assert.equal((await p('r3', 4)).status, 200);
  assert.equal((await metrics(small)).idem.untracked - m0.idem.untracked, 1);
  await Promise.all(running);
});

test('--idempotency-mb bounds the kept answers: at 0 none is kept, and a request in flight is still joined', async () => {
  const s0 = await startServer(['--idempotency-mb', '0']);
  try {
    const m0 = await metrics(s0);
    const body = { max_tokens: LONG, ignore_eos: true };
    const first = post(s0, body, { key: 'mb-1', tenant: 'x' });
    await sleep(150);
    const joined = await post(s0, body, { key: 'mb-1', tenant: 'x' });
    assert.equal(joined.headers.get('idempotent-replayed'), 'true');
    assert.equal(await text(joined), await text(await first));
    const m1 = await metrics(s0);
    assert.equal(m1.generated - m0.generated, 1);
    // finished, the answer was not kept: the key is free again (another body is a new request, not a 422)
    const again = await post(s0, { max_tokens: 4 }, { key: 'mb-1', tenant: 'x' });
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('idempotent-replayed'), null);
  } finally {
    assert.equal(await s0.stop(), 0, s0.log());
  }
});

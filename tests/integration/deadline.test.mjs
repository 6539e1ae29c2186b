// Deadline propagation: X-Request-Timeout-Ms: T makes the engine stop a generation T ms after the request's
// first byte, queued or running, and free its KV blocks; the answer is a 504 (or, in a stream, an error event).
// Bounds come from the guaranteed side: never before T, and the KV cache empty again once it is answered.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, MODEL_NAME } from './server.mjs';

let srv;
before(async () => { srv = await startServer(['--max-seqs', '1']); });
after(async () => { assert.equal(await srv.stop(), 0, srv.log()); });

const post = (body, headers = {}) => fetch(`${srv.url}/v1/completions`, {
  method: 'POST', headers: { 'Content-Type': 'application/json', ...headers },
  body: JSON.stringify({ model: MODEL_NAME, prompt: 'Once upon a time', ignore_eos: true, ...body }),
});
const metric = async (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await (await fetch(`${srv.url}/metrics`)).text())[1]);
const LONG = 4000; // seconds of generation on the fixture (ignore_eos): it runs until something stops it

test('a long generation stops at its deadline: 504 deadline_exceeded, not before it, and its KV blocks freed', async () => {
  const t0 = performance.now();
  const r = await post({ max_tokens: LONG }, { 'X-Request-Timeout-Ms': '300' });
  const ms = performance.now() - t0;
  assert.equal(r.status, 504);
  const e = (await r.json()).error;
  assert.equal(e.code, 'deadline_exceeded');
  assert.match(e.message, /X-Request-Timeout-Ms: 300/);
  assert.ok(ms >= 299 && ms < 3000, `${ms} ms`);
  assert.equal(await metric('autoglm_num_requests_running'), 0);
  assert.equal(await metric('autoglm_kv_cache_usage_ratio'), 0);
});

test('in a stream, the deadline ends it with an error event after the tokens so far', async () => {
  const r = await post({ max_tokens: LONG, stream: true }, { 'X-Request-Timeout-Ms': '300' });
  assert.equal(r.status, 200);
  const events = (await r.text()).split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  assert.equal(events.at(-1), '[DONE]');
  const last = JSON.parse(events.at(-2));
  assert.equal(last.error.code, 'deadline_exceeded');
  assert.ok(events.length > 3, 'tokens were streamed before the deadline');
});

test('a request still queued at its deadline gets its 504 without ever running', async () => {
  // --max-seqs 1: the first request holds the only slot.  It streams, so its first event says it runs (a fixed
  // sleep raced it: on a loaded machine the second request could reach the server first and take the slot).
  // The second then waits in the queue past its 50 ms deadline, a small part of the first's 4,000 tokens
  // (about 1.8 s on the 2-core CI machine) or its own 1.5 s deadline.
  const first = await post({ max_tokens: LONG, stream: true }, { 'X-Request-Timeout-Ms': '1500' });
  assert.equal(first.status, 200);
  const events = first.body.getReader();
  assert.equal((await events.read()).done, false);
  const t0 = performance.now();
  const r = await post({ max_tokens: 8 }, { 'X-Request-Timeout-Ms': '50' });
  const ms = performance.now() - t0;
  assert.equal(r.status, 504);
  assert.equal((await r.json()).error.code, 'deadline_exceeded');
  assert.ok(ms >= 49 && ms < 1500, `${ms} ms`);
  while (!(await events.read()).done); /* the first runs on to its own deadline or its last token */
});

test('a deadline that is not reached changes nothing', async () => {
  const r = await post({ max_tokens: 4 }, { 'X-Request-Timeout-Ms': '60000' });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).choices[0].finish_reason, 'length');
});

test('a bad X-Request-Timeout-Ms is a 400 naming the header', async () => {
  for (const v of ['0', 'abc', '-5', '1.5', '86400001', '']) {
    const r = await post({ max_tokens: 4 }, { 'X-Request-Timeout-Ms': v });
    assert.equal(r.status, 400, `'${v}'`);
    assert.match((await r.json()).error.message, /X-Request-Timeout-Ms/);
  }
});

// Allocation-failure injection on the running server (SQLite's discipline): for N = 1, 2, ... the loop thread's
// N-th try-allocation after arming fails while a scripted set of requests runs (chat, streamed chat, a cache
// miss and a hit, several prompts with n and logprobs, bad JSON, tokenize, metrics).  Every answer must be the
// normal one, a 503/413 error, or a closed connection; never a hang; the server must answer /health after each
// N and exit 0 at the end (under ASan: no crash, no leak).  The walk ends at the first N that the script's
// allocations no longer reach.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MODEL_NAME, startServer } from './server.mjs';

const MAX_N = 5000; // far above what the script allocates: reaching it means the walk never ended

async function call(url, route, body, init = {}) {
  try {
    const r = await fetch(url + route, {
      method: body === undefined ? 'GET' : 'POST', headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(20000), ...init,
    });
    return { status: r.status, text: await r.text() };
  } catch (e) {
    if (e.name === 'TimeoutError') throw new Error(`${route} hung`);
    return { status: 0, text: String(e) }; // the connection was closed: an allowed answer to a failed allocation
  }
}

test('every try-allocation on the loop can fail: answers stay well-formed, the server keeps serving', async () => {
  const srv = await startServer(['--fault-injection', '--cache-mb', '4']);
  const seen = new Map();
  let n = 1, walked = 0;
  try {
    for (; n <= MAX_N; n++) {
      const armed = await call(srv.url, `/debug/fail-alloc?n=${n}`, '');
      assert.equal(armed.status, 200, armed.text);
      if (n > 1 && JSON.parse(armed.text).failed === 0) break; // the previous N reached no allocation
      const script = [
        ['/v1/chat/completions', { model: MODEL_NAME, messages: [{ role: 'user', content: `hi ${n}` }], max_tokens: 3, temperature: 0 }, 200],
        ['/v1/chat/completions', { model: MODEL_NAME, messages: [{ role: 'user', content: 'same' }], max_tokens: 3, temperature: 0 }, 200],
        ['/v1/chat/completions', { model: MODEL_NAME, messages: [{ role: 'user', content: 'stream' }], max_tokens: 3, stream: true, stream_options: { include_usage: true } }, 200],
        ['/v1/completions', { model: MODEL_NAME, prompt: ['a b c', 'd e'], n: 2, max_tokens: 2, logprobs: 2, stop: ['zz'], logit_bias: { 5: 1 } }, 200],
        ['/v1/completions', '{"model": "llama2", "prompt": [1, 2', 400],
        ['/tokenize', { prompt: 'tokenize me' }, 200],
        ['/metrics', undefined, 200],
      ];
      for (const [route, body, ok] of script) {
        const r = await call(srv.url, route, body);
        assert.ok([ok, 503, 413, 0].includes(r.status), `N=${n} ${route}: ${r.status} ${r.text}`);
        if (r.status === 503) assert.equal(typeof JSON.parse(r.text).error.message, 'string');
        seen.set(r.status, (seen.get(r.status) || 0) + 1);
      }
      walked++;
    }
    await call(srv.url, '/debug/fail-alloc?n=0', '');
    assert.ok(n <= MAX_N, `the walk did not end by N=${MAX_N}`);
    assert.ok(walked > 20, `only ${walked} allocation points were reached`);
    assert.ok(seen.get(503) > 0, 'some failure was answered 503');
    const h = await call(srv.url, '/health');
    assert.equal(h.status, 200);
    const m = (await call(srv.url, '/metrics')).text;
    assert.match(m, /^autoglm_internal_errors_total 0(\.0)?$/m);
    console.log(`# NOTE fault injection: N = 1..${walked} tried, answers by status ${JSON.stringify(Object.fromEntries(seen))}`);
  } finally {
    assert.equal(await srv.stop(), 0, srv.log().slice(-4000));
  }
});

test('without --fault-injection the debug route does not exist', async () => {
  const srv = await startServer();
  try {
    assert.equal((await call(srv.url, '/debug/fail-alloc?n=1', '')).status, 404);
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

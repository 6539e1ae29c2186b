// serve --slo over the real binary: bad SLO strings are one-line usage errors; under load with a TPOT target
// every request completes (prompts are never starved), the controller's state is in /metrics (promtool-clean)
// and its moves are logged; under steady load the budget holds (at its floor for a target no machine meets, at
// the whole step for one every machine meets); a request that cannot get its first token within the TTFT target is refused with
// 429 and a Retry-After computed from the queue.  Nothing here depends on how fast the machine is: the targets
// are either met by any machine or by none.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { BIN, MODEL, startServer, waitFor } from './server.mjs';

const metric = (text, name) => {
  const m = new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
};
const PROMPT = 'The quick brown fox jumps over the lazy dog. '.repeat(30); // about 300 tokens

test('bad --slo values are one-line usage errors', () => {
  for (const bad of ['tpot=fast', 'speed=1s', 'e2e=1s', 'tpot=0ms', 'ttft=1s,', '']) {
    const r = spawnSync(BIN, ['serve', '--model', MODEL, '--slo', bad], { encoding: 'utf8' });
    assert.equal(r.status, 2, bad);
    assert.match(r.stderr, /^autoglm serve: --slo needs ttft=D,tpot=D/, bad);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
});

test('a TPOT target: every request completes, the budget is in /metrics and its moves are logged', async () => {
  // 1 us per output token is beyond any CPU (a step's fixed cost alone is more): the budget falls to its floor
  // and stays there, and prompts still progress 16 rows a step
  const srv = await startServer(['--slo', 'ttft=60s,tpot=1us', '--max-seqs', '8', '--max-batch-tokens', '256']);
  try {
    const one = (i) => fetch(`${srv.url}/v1/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'llama2', prompt: `${i} ${PROMPT}`, max_tokens: 24, ignore_eos: true, temperature: 0 }),
    }).then(async (r) => ({ status: r.status, body: await r.json() }));
    const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => one(i)));
    for (const r of rs) {
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.usage.completion_tokens, 24);
    }
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    execFileSync('promtool', ['check', 'metrics'], { input: text });
    assert.equal(metric(text, 'autoglm_autotune_target_seconds{slo="tpot"}'), 0.000001);
    assert.equal(metric(text, 'autoglm_autotune_target_seconds{slo="ttft"}'), 60);
    const budget = metric(text, 'autoglm_autotune_prompt_budget_tokens'); // moving to the floor, one KV block
    assert.ok(budget >= 16 && budget < 64, `budget ${budget}`);
    assert.ok(metric(text, 'autoglm_autotune_step_seconds') > 0);
    assert.ok(metric(text, 'autoglm_autotune_prompt_rate_tokens_per_second') > 0);
    assert.ok(metric(text, 'autoglm_autotune_model_seconds{term="per_prompt_row"}') > 0);
    assert.ok(metric(text, 'autoglm_autotune_adjustments_total') >= 1);
    assert.equal(metric(text, 'autoglm_autotune_refusals_total'), 0);
    assert.equal(metric(text, 'autoglm_queued_prompt_tokens'), 0);
    await waitFor(() => /autotune: prompt budget moved/.test(srv.log()), 5000);
    assert.match(srv.log(), /autotune: prompt budget moved.*prompt_budget=\d+.*tpot_target_ms=0\.001\b/);
    // steady load again: the budget holds at its floor (it may finish the last tenth of its way there)
    const moves = metric(text, 'autoglm_autotune_adjustments_total');
    for (const r of await Promise.all(Array.from({ length: 12 }, (_, i) => one(i + 12)))) assert.equal(r.status, 200);
    const again = await (await fetch(`${srv.url}/metrics`)).text();
    assert.ok(metric(again, 'autoglm_autotune_adjustments_total') - moves <= 2, again);
    assert.ok(metric(again, 'autoglm_autotune_prompt_budget_tokens') < 17);
  } finally {
    await srv.stop();
  }
});

test('a TPOT target any machine meets: the budget stays the whole step, never moved', async () => {
  const srv = await startServer(['--slo', 'tpot=10s', '--max-seqs', '8', '--max-batch-tokens', '256']);
  try {
    const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => fetch(`${srv.url}/v1/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'llama2', prompt: `${i} ${PROMPT}`, max_tokens: 16, ignore_eos: true }),
    })));
    for (const r of rs) assert.equal(r.status, 200);
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    assert.equal(metric(text, 'autoglm_autotune_prompt_budget_tokens'), 256);
    assert.equal(metric(text, 'autoglm_autotune_adjustments_total'), 0);
  } finally {
    await srv.stop();
  }
});

test('without --slo the model is still measured, and nothing is refused for time', async () => {
  const srv = await startServer([]);
  try {
    const r = await fetch(`${srv.url}/v1/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'llama2', prompt: PROMPT, max_tokens: 8, ignore_eos: true }),
    });
    assert.equal(r.status, 200);
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    assert.ok(metric(text, 'autoglm_autotune_prompt_rate_tokens_per_second') > 0);
    assert.equal(metric(text, 'autoglm_autotune_prompt_budget_tokens'), 512);
    assert.doesNotMatch(text, /autoglm_autotune_target_seconds\{/);
  } finally {
    await srv.stop();
  }
});

test('a TTFT target that the line cannot meet: 429 with a computed Retry-After; with nothing ahead, admitted', async () => {
  const srv = await startServer(['--slo', 'ttft=1ms', '--max-seqs', '1']);
  const post = (body, signal) => fetch(`${srv.url}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, signal,
    body: JSON.stringify({ model: 'llama2', prompt: PROMPT, ignore_eos: true, temperature: 0, ...body }),
  });
  try {
    // A holds the one slot for up to 3000 steps; its prompt measured the rates
    const ac = new AbortController();
    const a = await post({ max_tokens: 3000, stream: true }, ac.signal);
    assert.equal(a.status, 200);
    // its second token: the engine publishes the admission estimates after each step, and the first token
    // is sent before that step's publication; the second comes from the next step, after it
    const reader = a.body.getReader(), dec = new TextDecoder();
    for (let seen = ''; (seen.match(/^data: \{/gm) ?? []).length < 2;) seen += dec.decode((await reader.read()).value);
    // B would wait for A's slot: far more than 1 ms at any speed
    const b = await post({ max_tokens: 2 });
    assert.equal(b.status, 429);
    assert.match(b.headers.get('retry-after'), /^[1-9][0-9]*$/);
    const err = await b.json();
    assert.equal(err.error.code, 'rate_limit_exceeded');
    assert.match(err.error.message, /time-to-first-token target \(1 ms\) cannot be met: a slot frees in about \d+ ms and \d+ prompt tokens are ahead at \d+ tokens\/s/);
    ac.abort();
    await waitFor(async () => metric(await (await fetch(`${srv.url}/metrics`)).text(), 'autoglm_num_requests_running') === 0);
    // nothing ahead: admitted however long its prompt takes
    const c = await post({ max_tokens: 2 });
    assert.equal(c.status, 200);
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    assert.equal(metric(text, 'autoglm_autotune_refusals_total'), 1);
  } finally {
    await srv.stop();
  }
});

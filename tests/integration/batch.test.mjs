// The Batch API (docs/batch.md) through the official OpenAI SDK, unmodified, against real
// servers sharing a real redis-server (appendonly yes, appendfsync always): a 50-request
// batch completes with one output line per custom_id; a cancel mid-way gives `cancelled`
// with partial output; kill -9 of the serving process mid-batch, then a second replica,
// finishes the batch with every custom_id exactly once; Redis killed (-9) mid-batch and
// restarted loses nothing acknowledged; malformed uploads are 400s naming the line;
// another API key's objects are 404s; Idempotency-Key replays a create; no Redis is a 501.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, waitFor, MODEL_NAME, EOS } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const requireFixtures = createRequire(path.join(here, '../fixtures/package.json'));
const { default: OpenAI, toFile } = await import(requireFixtures.resolve('openai'));
const SANITIZED = process.env.AUTOGLM_SANITIZED === '1'; // ASan runs the forward pass ~8x slower: smaller batches

const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});

let redisPort, redisDir, redis, a, none;
function startRedis() {
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--dir', redisDir, '--save', '',
    '--appendonly', 'yes', '--appendfsync', 'always', '--maxmemory-policy', 'noeviction'], { stdio: 'ignore' });
  return waitFor(() => { try { return execFileSync('redis-cli', ['-p', String(redisPort), 'ping'], { encoding: 'utf8' }).trim() === 'PONG'; } catch { return false; } });
}
const killRedis = () => new Promise((r) => { redis.on('exit', r); redis.kill('SIGKILL'); });
// db: a test whose replicas must be the only ones to claim its requests uses a Redis database of its own
const replica = (extra = [], db = 0) => startServer(['--redis-url', `redis://127.0.0.1:${redisPort}/${db}`,
  '--api-key', 'sk-a', '--api-key', 'sk-b', '--batch-claim-idle', '1s', ...extra]);
// requests delivered to a worker and not yet written, in database db
const pendingIn = (db) => Number(execFileSync('redis-cli', ['-p', String(redisPort), '-n', String(db), 'xpending', 'autoglm:jobs', 'autoglm'],
  { encoding: 'utf8' }).split('\n')[0]);
/*
 * Waits until replica srv has finished `done` requests of batch id and holds
 * some unacknowledged in db, then stops it (SIGSTOP) there: a look at the
 * stream and a kill after it race the replica, which can acknowledge what it
 * held in between (a kill test then tests nothing); a stopped one cannot.
 */
async function stopHolding(srv, db, id, done) {
  return waitFor(async () => {
    if ((await sdk(srv).batches.retrieve(id)).request_counts.completed < done) return false;
    srv.proc.kill('SIGSTOP');
    if (pendingIn(db) > 0) return true;
    srv.proc.kill('SIGCONT');
    return false;
  }, 60000);
}
const sdk = (srv, key = 'sk-a') => new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: key, maxRetries: 0 });

before(async () => {
  redisPort = await freePort();
  redisDir = fs.mkdtempSync(path.join(os.tmpdir(), 'autoglm-batch-'));
  assert.ok(await startRedis(), 'redis-server did not start');
  [a, none] = await Promise.all([replica(['--batch-workers', '4']), startServer(['--api-key', 'sk-a'])]);
});
after(async () => {
  for (const s of [a, none]) assert.equal(await s.stop(), 0, s.log());
  await killRedis();
  fs.rmSync(redisDir, { recursive: true, force: true });
});

// n request lines; long: EOS banned so each runs to max_tokens (time to cancel or kill mid-batch)
function jsonl(n, { prefix = 'req', long = false, url = '/v1/chat/completions' } = {}) {
  const lines = [];
  for (let i = 0; i < n; i++) {
    const body = url === '/v1/completions'
      ? { model: MODEL_NAME, prompt: `batch ${prefix} ${i}`, max_tokens: long ? 128 : 6, temperature: 0 }
      : { model: MODEL_NAME, messages: [{ role: 'user', content: `batch ${prefix} ${i}` }], max_tokens: long ? 128 : 6, temperature: 0 };
    if (long) body.logit_bias = { [EOS]: -100 };
    lines.push(JSON.stringify({ custom_id: `${prefix}-${i}`, method: 'POST', url, body }));
  }
  return lines.join('\n') + '\n';
}

async function submit(client, text, endpoint = '/v1/chat/completions', opts) {
  const file = await client.files.create({ file: await toFile(Buffer.from(text), 'in.jsonl'), purpose: 'batch' });
  assert.equal(file.status, 'processed');
  return client.batches.create({ input_file_id: file.id, endpoint, completion_window: '24h' }, opts);
}

async function settle(client, id, ms = 60000) {
  let b;
  assert.ok(await waitFor(async () => {
    b = await client.batches.retrieve(id);
    return ['completed', 'cancelled', 'expired', 'failed'].includes(b.status);
  }, ms), `batch ${id} did not finish: ${JSON.stringify(b)}`);
  return b;
}

async function lines(client, fileId) {
  if (!fileId) return [];
  const text = await (await client.files.content(fileId)).text();
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

// every custom_id of 0..n-1 exactly once across output and error lines
function exactlyOnce(rows, n, prefix) {
  const ids = rows.map((r) => r.custom_id).sort();
  assert.equal(new Set(ids).size, ids.length, 'a custom_id appears twice');
  assert.deepEqual(ids, Array.from({ length: n }, (_, i) => `${prefix}-${i}`).sort());
}

test('a 50-request batch completes: 50 output lines, one per custom_id, OpenAI line shapes', async () => {
  const client = sdk(a);
  const n = SANITIZED ? 12 : 50;
  const created = await submit(client, jsonl(n, { prefix: 'fifty' }));
  assert.equal(created.object, 'batch');
  assert.equal(created.status, 'in_progress');
  assert.equal(created.request_counts.total, n);
  const b = await settle(client, created.id);
  assert.equal(b.status, 'completed', JSON.stringify(b));
  assert.deepEqual(b.request_counts, { total: n, completed: n, failed: 0 });
  assert.equal(b.error_file_id, null);
  assert.ok(b.completed_at >= b.created_at && b.usage.output_tokens > 0, JSON.stringify(b));
  const out = await lines(client, b.output_file_id);
  exactlyOnce(out, n, 'fifty');
  for (const row of out) {
    assert.match(row.id, /^batch_req_/);
    assert.equal(row.error, null);
    assert.equal(row.response.status_code, 200);
    assert.equal(row.response.body.object, 'chat.completion');
    assert.equal(row.response.request_id, row.response.body.id);
  }
  const file = await client.files.retrieve(b.output_file_id);
  assert.equal(file.purpose, 'batch_output');
  const metrics = await (await fetch(`${a.url}/metrics`)).text();
  assert.match(metrics, /autoglm_batch_requests_total\{state="completed"\} \d+/);
  assert.match(metrics, /autoglm_batch_queue_depth\{state="waiting"\} \d+/);
});

test('requests that fail are error lines with their status; the batch still completes', async () => {
  const client = sdk(a);
  const text = jsonl(3, { prefix: 'mixed', url: '/v1/completions' }) +
    JSON.stringify({ custom_id: 'mixed-3', method: 'POST', url: '/v1/completions', body: { model: MODEL_NAME, prompt: 'x', max_tokens: -5 } }) + '\n';
  const b = await settle(client, (await submit(client, text, '/v1/completions')).id);
  assert.equal(b.status, 'completed');
  assert.deepEqual(b.request_counts, { total: 4, completed: 3, failed: 1 });
  const errs = await lines(client, b.error_file_id);
  assert.equal(errs.length, 1);
  assert.equal(errs[0].custom_id, 'mixed-3');
  assert.equal(errs[0].response.status_code, 400);
  assert.equal(errs[0].response.body.error.type, 'invalid_request_error');
  exactlyOnce([...errs, ...(await lines(client, b.output_file_id))], 4, 'mixed');
});

test('cancel mid-way: cancelling, then cancelled with the partial output', async () => {
  const srv = await replica(['--batch-workers', '1'], 1);
  try {
    const client = sdk(srv);
    const n = SANITIZED ? 8 : 30;
    const created = await submit(client, jsonl(n, { prefix: 'cancel', long: true }));
    assert.ok(await waitFor(async () => (await client.batches.retrieve(created.id)).request_counts.completed >= 1, 60000));
    const c = await client.batches.cancel(created.id);
    assert.ok(['cancelling', 'cancelled'].includes(c.status), c.status);
    const b = await settle(client, created.id);
    assert.equal(b.status, 'cancelled');
    assert.ok(b.cancelled_at >= b.cancelling_at);
    const out = await lines(client, b.output_file_id);
    assert.ok(out.length >= 1 && out.length < n, `${out.length} of ${n} ran`);
    assert.equal(out.length, b.request_counts.completed);
    assert.equal(new Set(out.map((r) => r.custom_id)).size, out.length);
    const again = await client.batches.cancel(created.id); // cancelling a cancelled batch changes nothing
    assert.equal(again.status, 'cancelled');
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('kill -9 of the serving process mid-batch: a second replica finishes it, every custom_id exactly once', async () => {
  const first = await replica(['--batch-workers', '2'], 2);
  const n = SANITIZED ? 8 : 30;
  const created = await submit(sdk(first), jsonl(n, { prefix: 'kill', long: true }));
  assert.ok(await stopHolding(first, 2, created.id, 2));
  first.proc.kill('SIGKILL'); // while it holds requests
  await first.exited;
  const second = await replica(['--batch-workers', '2'], 2);
  const done = (await sdk(second).batches.retrieve(created.id)).request_counts.completed;
  assert.ok(done < n, 'the batch finished before the kill: nothing was tested');
  try {
    const b = await settle(sdk(second), created.id, 120000);
    assert.equal(b.status, 'completed', JSON.stringify(b));
    assert.deepEqual(b.request_counts, { total: n, completed: n, failed: 0 });
    exactlyOnce(await lines(sdk(second), b.output_file_id), n, 'kill');
    console.log(`# kill -9 after ${done} of ${n} results; the second replica finished the batch, ${n} lines, each custom_id once`);
  } finally {
    assert.equal(await second.stop(), 0, second.log());
  }
});

test('Redis killed (-9) mid-batch and restarted: nothing acknowledged is lost, the batch completes', async () => {
  const client = sdk(a);
  const n = SANITIZED ? 8 : 24;
  const created = await submit(client, jsonl(n, { prefix: 'redis', long: true }));
  assert.ok(await waitFor(async () => (await client.batches.retrieve(created.id)).request_counts.completed >= 1, 60000));
  const before = await client.batches.retrieve(created.id);
  await killRedis();
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(await startRedis(), 'redis-server did not restart');
  const b = await settle(client, created.id, 120000);
  assert.equal(b.status, 'completed', JSON.stringify(b));
  assert.ok(b.request_counts.completed >= before.request_counts.completed);
  assert.deepEqual(b.request_counts, { total: n, completed: n, failed: 0 });
  exactlyOnce(await lines(client, b.output_file_id), n, 'redis');
  // the earlier batches and files survived the restart too
  const listed = [];
  for await (const x of client.batches.list({ limit: 2 })) listed.push(x.id);
  assert.ok(listed.length >= 3 && new Set(listed).size === listed.length, JSON.stringify(listed));
});

test('malformed uploads are 400s that name the line', async () => {
  const client = sdk(a);
  const good = jsonl(2, { prefix: 'bad' }).split('\n').filter(Boolean);
  const cases = [
    [`${good[0]}\n{"custom_id": broken\n`, /line 2: invalid JSON/],
    [`${good[0]}\n${good[0]}\n`, /line 2: custom_id "bad-0" is used by an earlier line/],
    [`${good[0]}\n${good[1].replace('/v1/chat/completions', '/v1/embeddings')}\n`, /line 2: url must be/],
    [`${good[1].replace('"temperature":0', '"temperature":0,"stream":true')}\n`, /line 1: a batch request cannot stream/],
    ['\n\n', /no requests/],
  ];
  for (const [text, want] of cases) {
    await assert.rejects(client.files.create({ file: await toFile(Buffer.from(text), 'bad.jsonl'), purpose: 'batch' }),
      (e) => e.status === 400 && want.test(e.message), String(want));
  }
  await assert.rejects(client.files.create({ file: await toFile(Buffer.from(good[0]), 'x.jsonl'), purpose: 'fine-tune' }),
    (e) => e.status === 400 && /purpose 'batch'/.test(e.message));
  // a file of chat requests given to a completions batch: its first line is named
  const file = await client.files.create({ file: await toFile(Buffer.from(good.join('\n')), 'chat.jsonl'), purpose: 'batch' });
  await assert.rejects(client.batches.create({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' }),
    (e) => e.status === 400 && /line 1: url \/v1\/chat\/completions differs/.test(e.message));
  await assert.rejects(client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '1h' }),
    (e) => e.status === 400 && /completion_window/.test(e.message));
  const r = await fetch(`${a.url}/v1/files`, { method: 'POST', headers: { authorization: 'Bearer sk-a', 'content-type': 'multipart/form-data; boundary=zz' },
    body: '--zz\r\nContent-Disposition: form-data; name="file"\r\n\r\nnever closed' });
  assert.equal(r.status, 400);
  assert.match((await r.json()).error.message, /malformed multipart body/);
});

test("another API key's files and batches are 404s, and its lists leave them out", async () => {
  const mine = sdk(a, 'sk-a'), theirs = sdk(a, 'sk-b');
  const b = await submit(mine, jsonl(1, { prefix: 'tenant' }));
  await assert.rejects(theirs.batches.retrieve(b.id), (e) => e.status === 404);
  await assert.rejects(theirs.batches.cancel(b.id), (e) => e.status === 404);
  await assert.rejects(theirs.files.retrieve(b.input_file_id), (e) => e.status === 404);
  await assert.rejects(theirs.files.content(b.input_file_id), (e) => e.status === 404);
  await assert.rejects(theirs.files.delete(b.input_file_id), (e) => e.status === 404);
  await assert.rejects(theirs.batches.create({ input_file_id: b.input_file_id, endpoint: '/v1/chat/completions', completion_window: '24h' }),
    (e) => e.status === 404);
  for await (const x of theirs.batches.list()) assert.notEqual(x.id, b.id);
  for await (const f of theirs.files.list()) assert.notEqual(f.id, b.input_file_id);
  const done = await settle(mine, b.id);
  assert.equal(done.status, 'completed');
  // deleting a file: gone for its owner too
  const f = await mine.files.create({ file: await toFile(Buffer.from(jsonl(1, { prefix: 'del' })), 'd.jsonl'), purpose: 'batch' });
  assert.deepEqual(await mine.files.delete(f.id), { id: f.id, object: 'file', deleted: true });
  await assert.rejects(mine.files.retrieve(f.id), (e) => e.status === 404);
});

test('Idempotency-Key: a replayed create answers the first one\'s object; none makes a new one', async () => {
  const client = sdk(a);
  const file = await client.files.create({ file: await toFile(Buffer.from(jsonl(1, { prefix: 'idem' })), 'i.jsonl'), purpose: 'batch' });
  const params = { input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { run: 'one' } };
  const key = `k-${Date.now()}`;
  const first = await client.batches.create(params, { headers: { 'Idempotency-Key': key } });
  const again = await client.batches.create(params, { headers: { 'Idempotency-Key': key } });
  assert.equal(again.id, first.id);
  assert.deepEqual(first.metadata, { run: 'one' });
  const other = await client.batches.create(params);
  assert.notEqual(other.id, first.id);
  await settle(client, first.id);
  await settle(client, other.id);
});

test('without Redis the endpoints answer 501 naming the flag; list pages follow after and limit', async () => {
  const r = await fetch(`${none.url}/v1/batches`, { headers: { authorization: 'Bearer sk-a' } });
  assert.equal(r.status, 501);
  assert.match((await r.json()).error.message, /--redis-url/);
  const page = await sdk(a).batches.list({ limit: 1 });
  assert.equal(page.data.length, 1);
  assert.equal(page.has_more, true);
  const next = await (await fetch(`${a.url}/v1/batches?limit=1&after=${page.data[0].id}`, { headers: { authorization: 'Bearer sk-a' } })).json();
  assert.notEqual(next.data[0].id, page.data[0].id);
  const bad = await fetch(`${a.url}/v1/batches?limit=101`, { headers: { authorization: 'Bearer sk-a' } });
  assert.equal(bad.status, 400);
});

test('--max-file-bytes: a larger upload is a 413', async () => {
  const small = await replica(['--max-file-bytes', '1000', '--batch-workers', '0']);
  try {
    await assert.rejects(sdk(small).files.create({ file: await toFile(Buffer.from(jsonl(20)), 'big.jsonl'), purpose: 'batch' }),
      (e) => e.status === 413 && /--max-file-bytes/.test(e.message));
    const ok = await sdk(small).files.create({ file: await toFile(Buffer.from(jsonl(1)), 'ok.jsonl'), purpose: 'batch' });
    assert.equal(ok.status, 'processed');
  } finally {
    assert.equal(await small.stop(), 0, small.log());
  }
});

test('--batch-window: requests not run by the window\'s end are batch_expired error lines; the batch is expired', async () => {
  const srv = await replica(['--batch-workers', '1', '--batch-window', '1s'], 3);
  try {
    const client = sdk(srv);
    const n = SANITIZED ? 20 : 150; // more than one worker runs in the window (a few seconds' worth)
    const created = await submit(client, jsonl(n, { prefix: 'expire', long: true }));
    assert.equal(created.expires_at - created.created_at, 1);
    const b = await settle(client, created.id, 60000);
    assert.equal(b.status, 'expired', JSON.stringify(b));
    assert.ok(b.expired_at >= b.expires_at);
    const out = await lines(client, b.output_file_id), errs = await lines(client, b.error_file_id);
    assert.ok(errs.length >= 1, 'nothing expired: the window was too long to test');
    for (const e of errs) {
      assert.equal(e.response, null);
      assert.equal(e.error.code, 'batch_expired');
    }
    assert.deepEqual(b.request_counts, { total: n, completed: out.length, failed: errs.length });
    exactlyOnce([...out, ...errs], n, 'expire');
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('--batch-max-deliveries: a request whose worker died holding it too often goes to the error file', async () => {
  const first = await replica(['--batch-workers', '2', '--batch-max-deliveries', '1'], 4);
  const n = SANITIZED ? 6 : 16;
  const created = await submit(sdk(first), jsonl(n, { prefix: 'poison', long: true }));
  assert.ok(await stopHolding(first, 4, created.id, 1));
  first.proc.kill('SIGKILL'); // the requests it held were delivered once: claiming one again passes the limit
  await first.exited;
  const second = await replica(['--batch-workers', '2', '--batch-max-deliveries', '1'], 4);
  try {
    assert.ok((await sdk(second).batches.retrieve(created.id)).request_counts.completed < n, 'finished before the kill');
    const b = await settle(sdk(second), created.id, 120000);
    assert.equal(b.status, 'completed', JSON.stringify(b));
    const out = await lines(sdk(second), b.output_file_id), errs = await lines(sdk(second), b.error_file_id);
    assert.ok(errs.length >= 1, JSON.stringify(b));
    for (const e of errs) assert.equal(e.error.code, 'max_deliveries_exceeded');
    assert.deepEqual(b.request_counts, { total: n, completed: out.length, failed: errs.length });
    exactlyOnce([...out, ...errs], n, 'poison');
    const metrics = await (await fetch(`${second.url}/metrics`)).text();
    assert.match(metrics, new RegExp(`autoglm_batch_requests_total\\{state="poisoned"\\} ${errs.length}`));
  } finally {
    assert.equal(await second.stop(), 0, second.log());
  }
});

test('SIGTERM mid-batch: the drain finishes and writes the requests it holds, exits 0; another replica does the rest', async () => {
  const first = await replica(['--batch-workers', '2'], 5);
  const n = SANITIZED ? 6 : 20;
  const created = await submit(sdk(first), jsonl(n, { prefix: 'drain', long: true }));
  assert.ok(await waitFor(async () => (await sdk(first).batches.retrieve(created.id)).request_counts.completed >= 1 && pendingIn(5) > 0, 60000));
  assert.equal(await first.stop(), 0, first.log());
  assert.equal(pendingIn(5), 0, 'the drained replica left requests pending');
  const second = await replica(['--batch-workers', '2'], 5);
  try {
    const b = await settle(sdk(second), created.id, 120000);
    assert.equal(b.status, 'completed');
    exactlyOnce(await lines(sdk(second), b.output_file_id), n, 'drain');
  } finally {
    assert.equal(await second.stop(), 0, second.log());
  }
});

test('an upload over HTTP/2 may pass --max-body-bytes up to --max-file-bytes, as over HTTP/1.1; other routes may not', async () => {
  const srv = await replica(['--max-body-bytes', '4096', '--batch-workers', '0']);
  const http2 = await import('node:http2');
  const session = http2.connect(srv.url);
  const h2 = (headers, body) => new Promise((resolve, reject) => {
    const req = session.request(headers);
    let status = 0, text = '';
    req.on('response', (h) => { status = h[':status']; });
    req.on('data', (d) => { text += d; });
    req.on('end', () => resolve({ status, text }));
    req.on('error', reject);
    req.end(body);
  });
  try {
    const file = jsonl(80, { prefix: 'h2' });
    assert.ok(file.length > 8192);
    const body = `--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--b\r\nContent-Disposition: form-data; ` +
      `name="file"; filename="h2.jsonl"\r\n\r\n${file}\r\n--b--\r\n`;
    const up = await h2({ ':method': 'POST', ':path': '/v1/files', authorization: 'Bearer sk-a', 'content-type': 'multipart/form-data; boundary=b' }, body);
    assert.equal(up.status, 200, up.text);
    assert.equal(JSON.parse(up.text).bytes, file.length);
    const big = await h2({ ':method': 'POST', ':path': '/v1/completions', authorization: 'Bearer sk-a', 'content-type': 'application/json' },
      JSON.stringify({ model: MODEL_NAME, prompt: 'x'.repeat(8000) }));
    assert.equal(big.status, 413);
    assert.equal((await sdk(srv).files.create({ file: await toFile(Buffer.from(file), 'h1.jsonl'), purpose: 'batch' })).bytes, file.length);
  } finally {
    session.close();
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

// The response cache's Redis tier with a real redis-server (Debian's) on a free
// loopback port: fill and promotion across two servers sharing it, Redis
// killed mid-test and restarted (no error to clients, reconnection seen),
// Redis stalled by DEBUG SLEEP (requests stay within the timeout), and
// write-through.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import net from 'node:net';
import { startServer, postJSON, waitFor, MODEL_NAME } from './server.mjs';

const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});

let port, redis, a, b, wt;
function startRedis() {
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--enable-debug-command', 'local'],
    { stdio: 'ignore' });
  return waitFor(() => { try { return execFileSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).trim() === 'PONG'; } catch { return false; } });
}
const stopRedis = () => new Promise((r) => { redis.on('exit', r); redis.kill('SIGKILL'); });

before(async () => {
  port = await freePort();
  assert.ok(await startRedis(), 'redis-server did not start');
  const url = `redis://127.0.0.1:${port}`;
  [a, b, wt] = await Promise.all([
    startServer(['--cache-mb', '8', '--redis-url', url, '--redis-timeout-ms', '100', '--admin-key', 'root']),
    startServer(['--cache-mb', '8', '--redis-url', url, '--redis-timeout-ms', '100']),
    startServer(['--cache-mb', '8', '--redis-url', url, '--cache-policy', 'write-through']),
  ]);
  await waitFor(async () => (await stats(a)).l2.connected && (await stats(b)).l2.connected && (await stats(wt)).l2.connected);
});
after(async () => {
  for (const s of [a, b, wt]) assert.equal(await s.stop(), 0, s.log());
  await stopRedis();
});

const stats = async (s) => (await fetch(s.url + '/v1/cache/stats')).json();
let uniq = 0;
const fresh = () => ({ model: MODEL_NAME, prompt: `redis test ${++uniq}`, max_tokens: 6, temperature: 0 });
const xcache = (r) => r.headers.get('x-cache');

test('one server fills Redis, another reads it (HIT-L2) and promotes it into its own L1', async () => {
  const body = fresh();
  const first = await postJSON(a.url, '/v1/completions', body);
  assert.equal(xcache(first), 'MISS');
  await waitFor(async () => (await stats(a)).l2.sets >= 1);
  const keys = execFileSync('redis-cli', ['-p', String(port), 'keys', 'autoglm:rc:*'], { encoding: 'utf8' });
  assert.ok(keys.trim().split('\n').length >= 1);
  const second = await postJSON(b.url, '/v1/completions', body);
  assert.equal(xcache(second), 'HIT-L2');
  assert.equal(second.json.choices[0].text, first.json.choices[0].text);
  assert.equal(xcache(await postJSON(b.url, '/v1/completions', body)), 'HIT-L1');
});

test('write-through: the value is in Redis before the answer completes', async () => {
  const body = fresh();
  const r = await postJSON(wt.url, '/v1/completions', body);
  assert.equal(xcache(r), 'MISS');
  const n = Number(execFileSync('redis-cli', ['-p', String(port), 'dbsize'], { encoding: 'utf8' }));
  assert.ok(n >= 2);
  assert.equal(xcache(await postJSON(a.url, '/v1/completions', body)), 'HIT-L2'); // without waiting
});

test('Redis stalled (DEBUG SLEEP): requests still answer within the timeout', async () => {
  const sleeper = spawn('redis-cli', ['-p', String(port), 'debug', 'sleep', '1.5'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 200));
  const t0 = Date.now();
  const r = await postJSON(a.url, '/v1/completions', fresh());
  const took = Date.now() - t0;
  assert.equal(r.status, 200);
  assert.equal(xcache(r), 'MISS');
  assert.ok(took < 1000, `took ${took} ms with Redis asleep for 1.5 s`);
  const st = await stats(a);
  assert.ok(st.l2.timeouts >= 1, JSON.stringify(st));
  await new Promise((res) => sleeper.on('exit', res));
});

test('Redis killed, then restarted: no error reaches clients, and the server reconnects', async () => {
  await stopRedis();
  for (let i = 0; i < 8; i++) {
    const r = await postJSON(a.url, '/v1/completions', fresh());
    assert.equal(r.status, 200);
    assert.equal(xcache(r), 'MISS');
  }
  const down = await stats(a);
  assert.equal(down.l2.connected, false);
  const metrics = await (await fetch(a.url + '/metrics')).text();
  assert.match(metrics, /^autoglm_cache_redis_connected 0$/m);
  assert.ok(await startRedis());
  assert.ok(await waitFor(async () => (await stats(a)).l2.connected, 8000), 'no reconnection within 8 s');
  assert.ok((await stats(a)).l2.reconnects > down.l2.reconnects - 1);
  const body = fresh();
  await postJSON(a.url, '/v1/completions', body);
  assert.ok(await waitFor(async () => (await stats(a)).l2.sets > down.l2.sets));
  assert.equal(xcache(await postJSON(b.url, '/v1/completions', body)), 'HIT-L2'); // the tier works again
});

test('DELETE /v1/cache drops a namespace from Redis too, or everything', async () => {
  const redisKeys = () => execFileSync('redis-cli', ['-p', String(port), '--scan', '--pattern', 'autoglm:rc:*'], { encoding: 'utf8' })
    .split('\n').filter(Boolean);
  const inX = { ...fresh(), cache: { namespace: 'x' } }, plainBody = fresh();
  await postJSON(a.url, '/v1/completions', inX);
  await postJSON(a.url, '/v1/completions', plainBody);
  assert.ok(await waitFor(async () => redisKeys().length >= 2));
  const before = redisKeys().length;
  const admin = { authorization: 'Bearer root' };
  const del = await fetch(a.url + '/v1/cache?namespace=x', { method: 'DELETE', headers: admin });
  assert.equal((await del.json()).redis, 'deleting');
  assert.ok(await waitFor(() => redisKeys().length === before - 1), redisKeys().join('\n'));
  assert.equal(xcache(await postJSON(b.url, '/v1/completions', inX)), 'MISS'); // gone from the shared tier
  assert.equal(xcache(await postJSON(b.url, '/v1/completions', plainBody)), 'HIT-L2'); // the other namespace stays
  await fetch(a.url + '/v1/cache', { method: 'DELETE', headers: admin });
  assert.ok(await waitFor(() => redisKeys().length === 0), redisKeys().join('\n'));
});

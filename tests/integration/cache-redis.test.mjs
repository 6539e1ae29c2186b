// The response cache's Redis tier with a real redis-server (Debian's) on a free
// loopback port: fill and promotion across two servers sharing it, Redis
// killed mid-test and restarted (no error to clients, reconnection seen),
// Redis stalled by DEBUG SLEEP (requests stay within the timeout),
// write-through, Redis as the only tier, and Redis's AUTH (password, ACL user).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import net from 'node:net';
import { startServer, postJSON, waitFor, raw, parseResponses, MODEL_NAME, BIN, MODEL } from './server.mjs';

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

// The bytes of a whole response after its opening (id, object, created): what a hit sends from the shared value.
const rest = (r) => r.text.slice(r.text.indexOf(',"model":'));

test('Redis alone (--cache-mb 0): hits come from Redis each time, byte for byte the generated answer', async () => {
  const only = await startServer(['--cache-mb', '0', '--redis-url', `redis://127.0.0.1:${port}`]);
  try {
    await waitFor(async () => (await stats(only)).l2.connected);
    const body = { ...fresh(), n: 3 };
    const miss = await postJSON(only.url, '/v1/completions', body);
    assert.equal(xcache(miss), 'MISS');
    await waitFor(async () => (await stats(only)).l2.sets >= 1);
    for (let i = 0; i < 2; i++) { // no L1 to promote into: HIT-L2 every time
      const hit = await postJSON(only.url, '/v1/completions', body);
      assert.equal(xcache(hit), 'HIT-L2');
      assert.equal(rest(hit), rest(miss));
      assert.notEqual(hit.json.id, miss.json.id);
    }
    const st = await stats(only);
    assert.equal(st.l1, null);
    assert.equal(st.l2.hits, 2);
    const metrics = await (await fetch(only.url + '/metrics')).text();
    assert.match(metrics, /^autoglm_cache_hits_total\{tier="l2"\} 2$/m);
    assert.doesNotMatch(metrics, /tier="l1"/);
    execFileSync('promtool', ['check', 'metrics'], { input: metrics });
  } finally {
    assert.equal(await only.stop(), 0, only.log());
  }
});

test('Redis AUTH: a password or an ACL user from the URL; wrong credentials read as misses, with the refusal in the stats', async () => {
  const authPort = await freePort();
  const secured = spawn('redis-server', ['--port', String(authPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--requirepass', 'sesame', '--user', 'alice', 'on', '>wonder', '~autoglm:*', '+@all'], { stdio: 'ignore' });
  const servers = [];
  try {
    assert.ok(await waitFor(() => { try { return execFileSync('redis-cli', ['-p', String(authPort), '-a', 'sesame', '--no-auth-warning', 'ping'], { encoding: 'utf8' }).trim() === 'PONG'; } catch { return false; } }));
    const url = (cred) => `redis://${cred}@127.0.0.1:${authPort}`;
    servers.push(...await Promise.all([':sesame', 'alice:wonder', ':wrong'].map((c) => startServer(['--cache-mb', '0', '--redis-url', url(c)]))));
    const [byPassword, byUser, wrong] = servers;
    for (const s of servers) await waitFor(async () => (await stats(s)).l2.connected);
    const body = fresh();
    assert.equal(xcache(await postJSON(byPassword.url, '/v1/completions', body)), 'MISS');
    await waitFor(async () => (await stats(byPassword)).l2.sets >= 1);
    assert.equal(xcache(await postJSON(byUser.url, '/v1/completions', body)), 'HIT-L2');
    const r = await postJSON(wrong.url, '/v1/completions', body);
    assert.equal(r.status, 200);
    assert.equal(xcache(r), 'MISS');
    const st = await stats(wrong);
    assert.match(st.l2.last_error, /WRONGPASS|NOAUTH/, JSON.stringify(st));
    assert.equal(st.l2.hits, 0);
  } finally {
    for (const s of servers) assert.equal(await s.stop(), 0, s.log());
    secured.kill('SIGKILL');
  }
});

test('rediss:// (TLS) is refused at start with one line that says why', () => {
  let out = '', code = 0;
  try {
    execFileSync(BIN, ['serve', '--model', MODEL, '--port', '0', '--redis-url', 'rediss://127.0.0.1:6380'], { encoding: 'utf8', stdio: 'pipe' });
  } catch (e) { code = e.status; out = e.stderr; }
  assert.notEqual(code, 0);
  assert.match(out, /TLS \(rediss:\/\/\) needs hiredis 1\.0/);
});

// Regression (issue 18): a choice k > 0 refused at --max-queue after a Redis miss left the exchange linked to the
// connection, so the cancelled choices' events wrote SSE into the next request on it (or freed memory, under ASan).
// Since the engine takes a request's choices all or none (ag_engine_submit_many), 8 choices against a queue of 1
// are refused whole (400: they can never fit), with nothing half-started; the next request must still get a clean
// answer on the same connection.
test('n > 1 refused after a Redis miss (more choices than the queue takes): the pipelined next request gets a clean answer', async () => {
  const s = await startServer(['--cache-mb', '8', '--redis-url', `redis://127.0.0.1:${port}`, '--max-queue', '1', '--max-seqs', '1']);
  try {
    await waitFor(async () => (await stats(s)).l2.connected);
    for (const stream of [true, false]) {
      const big = JSON.stringify({ model: MODEL_NAME, prompt: `refused ${stream} ${++uniq}`, n: 8, max_tokens: 48,
        temperature: 0, ignore_eos: true, stream });
      const small = JSON.stringify({ model: MODEL_NAME, prompt: 'after', max_tokens: 4, temperature: 0 });
      const req = (b) => `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`;
      const text = await raw(s.port, [req(big) + req(small)], { idle: 1500 });
      const res = parseResponses(text);
      assert.equal(res.length, 2, text);
      assert.equal(res[0].status, 400, text);
      assert.match(JSON.parse(res[0].body).error.message, /8 prompts at once is more than the queue takes \(1\)/);
      assert.equal(res[1].status, 200, text); // nothing of the refused request holds the queue's place
      assert.equal(JSON.parse(res[1].body).object, 'text_completion');
      assert.doesNotMatch(text, /data: /, 'no SSE chunk of the refused request reached the connection');
    }
    const m = await (await fetch(s.url + '/metrics')).text();
    assert.match(m, /^autoglm_internal_errors_total 0(\.0)?$/m);
    assert.equal((await fetch(s.url + '/health')).status, 200);
  } finally {
    assert.equal(await s.stop(), 0, s.log());
  }
});

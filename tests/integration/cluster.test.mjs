// deploy/cluster/run: autoglm replicas behind Debian's nginx, sharing a real redis-server (docs/scale-out.md).
// The cluster comes up on free ports and prints its endpoints; one replica's answer is a HIT-L2 at another;
// least_conn spreads requests and session routing keeps a session on one replica; draining a replica under a
// steady `autoglm bench` load fails no request, and `add` brings one back; a killed replica is routed around;
// the edge cache answers repeated deterministic requests without the origin but never sampled ones, streams
// or another key's, keeps large bodies apart, and leaves If-None-Match to the origin (412); `down` leaves
// nothing running.  Skipped, with the reason, without nginx or redis-server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, MODEL, MODEL_NAME, EOS, postJSON, waitFor } from './server.mjs';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const RUN = path.join(ROOT, 'deploy/cluster/run');
const has = (cmd) => spawnSync('sh', ['-c', `PATH=$PATH:/usr/sbin command -v ${cmd}`]).status === 0;
const missing = ['nginx', 'redis-server', 'redis-cli', 'curl'].filter((c) => !has(c));
const skip = missing.length ? `needs ${missing.join(', ')} (scripts/install-deps installs them)` : false;

const dirs = [];
function cluster(args) {
  const dir = mkdtempSync(path.join(tmpdir(), 'ag-cluster-'));
  dirs.push(dir);
  const env = { ...process.env, AUTOGLM_CLUSTER_DIR: dir, AUTOGLM_BIN: BIN };
  const run = (...a) => spawnSync(RUN, a, { env, encoding: 'utf8', timeout: 180000 });
  const r = run('up', ...args);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  const url = (kind) => lines.filter((l) => l.startsWith(kind + ' ')).map((l) => l.split(' ')[1]);
  return { dir, run, lines, balancer: url('balancer')[0], replicas: url('replica'), redis: url('redis')[0],
    pid: (k) => Number(readFileSync(path.join(dir, `replica-${k}.pid`), 'utf8')) };
}

// A port P with P+1 and P+2 free (the edge, the HTTP/2 balancer), below the ephemeral range where outgoing
// connections take ports at any time; the script finds the replicas' and Redis's from P+10.
const bindable = (p) => new Promise((resolve) => {
  const s = net.createServer().once('error', () => resolve(false)).listen(p, '127.0.0.1', () => s.close(() => resolve(true)));
});
async function freePort() {
  for (;;) {
    const p = 20000 + 10 * Math.floor(Math.random() * 1200);
    if (await bindable(p) && await bindable(p + 1) && await bindable(p + 2)) return p;
  }
}

const body = (extra = {}) => ({ model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 8, temperature: 0, ...extra });
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };

let c;
before(async () => { if (!skip) c = cluster(['--replicas', '2', '--port', String(await freePort()), '--model', MODEL, '--', '--threads', '1']); });
after(() => {
  for (const d of dirs) {
    if (existsSync(path.join(d, 'state'))) spawnSync(RUN, ['down'], { env: { ...process.env, AUTOGLM_CLUSTER_DIR: d } });
    rmSync(d, { recursive: true, force: true });
  }
});

test('up prints the balancer, the edge, each replica and Redis; status says each is ok', { skip }, () => {
  assert.match(c.balancer, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.deepEqual(c.lines.map((l) => l.split(' ')[0]), ['balancer', 'balancer-h2', 'edge', 'replica', 'replica', 'redis']);
  assert.equal(c.replicas.length, 2);
  assert.match(c.redis, /^redis:\/\/127\.0\.0\.1:\d+$/);
  const s = c.run('status');
  assert.equal(s.status, 0, s.stderr);
  assert.match(s.stdout, /^balancer http:\S+ ok \(least_conn\)\nedge http:\S+ ok\nreplica 1 http:\S+ ok\nreplica 2 http:\S+ ok\nredis redis:\S+ ok\n$/);
  const again = spawnSync(RUN, ['up', '--replicas', '1', '--port', '1'], { env: { ...process.env, AUTOGLM_CLUSTER_DIR: c.dir }, encoding: 'utf8' });
  assert.equal(again.status, 1);
  assert.match(again.stderr, /^cluster: a cluster is up in .* \(run down first\)\n$/);
});

test('the balancer speaks HTTP/2 (h2c by prior knowledge) on its second port, streams included', { skip }, () => {
  const h2 = c.lines.find((l) => l.startsWith('balancer-h2 ')).split(' ')[1];
  const r = spawnSync('curl', ['-s', '--http2-prior-knowledge', '-N', '-w', '\n%{http_version} %{http_code}', h2 + '/v1/completions',
    '-H', 'content-type: application/json', '-d', JSON.stringify(body({ stream: true }))], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /data: \[DONE\]\n\n\n2 200$/);
});

test('bad arguments are one-line errors', { skip }, () => {
  const env = { ...process.env, AUTOGLM_CLUSTER_DIR: path.join(tmpdir(), 'ag-cluster-none') };
  for (const [args, msg] of [
    [['up', '--replicas', '0', '--port', '9000'], /--replicas needs a whole number from 1/],
    [['up', '--replicas', '2', '--port', 'x'], /--port needs a port number/],
    [['up', '--replicas', '2', '--port', '9000', '--routing', 'random'], /--routing is least_conn or session/],
    [['up', '--replicas', '2', '--port', '9000', '--model', '/nope.gguf'], /\/nope.gguf: no such model file/],
    [['status'], /no cluster in .* \(run up first\)/],
  ]) {
    const r = spawnSync(RUN, args, { env, encoding: 'utf8' });
    assert.equal(r.status, 1, args.join(' '));
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test('replicas share the Redis tier: an answer made at one is a HIT-L2 at the other', { skip }, async () => {
  const b = body({ prompt: 'shared tier ' + Date.now() });
  const first = await postJSON(c.replicas[0], '/v1/completions', b);
  assert.equal(first.headers.get('x-cache'), 'MISS');
  const second = await waitFor(async () => {
    const r = await postJSON(c.replicas[1], '/v1/completions', b); // the fill is written after the answer
    return r.headers.get('x-cache') === 'HIT-L2' ? r : null;
  }, 5000);
  assert.ok(second, 'a HIT-L2 at the second replica');
  assert.equal(second.json.choices[0].text, first.json.choices[0].text);
});

test('least_conn spreads concurrent requests over both replicas', { skip }, async () => {
  const rs = await Promise.all(Array.from({ length: 16 }, (_, i) =>
    postJSON(c.balancer, '/v1/completions', body({ prompt: `spread ${i}`, max_tokens: 32, logit_bias: { [EOS]: -100 } }))));
  assert.ok(rs.every((r) => r.status === 200));
  const used = new Set(rs.map((r) => r.headers.get('x-autoglm-upstream')));
  assert.deepEqual([...used].sort(), c.replicas.map((u) => u.slice(7)).sort());
});

test('drain under a steady load: no request fails; add brings a replica back', { skip }, async () => {
  const out = path.join(c.dir, 'bench.json');
  const bench = spawn(BIN, ['bench', '--base-url', c.balancer, '--model', MODEL_NAME, '--api', 'completions',
    '--concurrency', '6', '--duration', '6s', '--warmup', '0', '--input-tokens', '16', '--output-tokens', '24',
    '--ignore-eos', '--json', out], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  bench.stderr.on('data', (d) => { err += d; });
  const done = new Promise((r) => bench.on('exit', r));
  await new Promise((r) => setTimeout(r, 1500));
  const pid = c.pid(1);
  const d = c.run('drain', '1');
  assert.equal(d.status, 0, d.stderr);
  assert.equal(d.stdout, 'replica 1 draining\n');
  assert.ok(await waitFor(() => !alive(pid), 20000), 'replica 1 exits once drained');
  assert.equal(await done, 0, err);
  const step = JSON.parse(readFileSync(out, 'utf8')).steps[0];
  console.log(`# NOTE drain under load: ${step.requests} requests, ${step.ok} ok, ${step.http_errors} HTTP errors, ` +
    `${step.connection_errors} connection errors, ${step.timeouts} timeouts`);
  assert.ok(step.requests >= 6, JSON.stringify(step));
  assert.equal(step.ok, step.requests, JSON.stringify(step));
  assert.equal(step.http_errors + step.connection_errors + step.timeouts + step.protocol_errors, 0);
  assert.match(c.run('status').stdout, /replica 1 http:\S+ down\n/);
  const a = c.run('add');
  assert.equal(a.status, 0, a.stderr);
  assert.match(a.stdout, /^replica http:\/\/127\.0\.0\.1:\d+\n$/);
  assert.match(c.run('status').stdout, /replica 1 http:\S+ ok\nreplica 2 http:\S+ ok\n/);
  const back = await waitFor(async () => {
    const rs = await Promise.all(Array.from({ length: 8 }, (_, i) =>
      postJSON(c.balancer, '/v1/completions', body({ prompt: `back ${i}`, max_tokens: 32, logit_bias: { [EOS]: -100 } }))));
    assert.ok(rs.every((r) => r.status === 200));
    return rs.some((r) => r.headers.get('x-autoglm-upstream') === a.stdout.trim().split('http://')[1]);
  }, 10000);
  assert.ok(back, 'the new replica serves');
});

test('a killed replica is routed around', { skip }, async () => {
  process.kill(c.pid(2), 'SIGKILL');
  await waitFor(() => !alive(c.pid(2)), 5000);
  for (let i = 0; i < 8; i++) {
    const r = await postJSON(c.balancer, '/v1/completions', body({ prompt: `around ${i}` }));
    assert.equal(r.status, 200, r.text);
    assert.notEqual(r.headers.get('x-autoglm-upstream'), c.replicas[1].slice(7));
  }
});

test('session routing: each X-Session-ID stays on one replica, sessions use both; X-Prefix-Key sent back does the same', { skip }, async () => {
  const s = cluster(['--replicas', '2', '--port', String(await freePort()), '--model', MODEL, '--routing', 'session',
    '--', '--threads', '1']);
  const seen = new Map();
  for (let i = 0; i < 12; i++) {
    for (let turn = 0; turn < 3; turn++) {
      const r = await postJSON(s.balancer, '/v1/completions', body({ prompt: `session ${i} turn ${turn}` }), { 'x-session-id': `user-${i}` });
      assert.equal(r.status, 200, r.text);
      const up = r.headers.get('x-autoglm-upstream');
      if (!seen.has(i)) seen.set(i, up);
      assert.equal(up, seen.get(i), `session ${i} moved`);
    }
  }
  assert.equal(new Set(seen.values()).size, 2, 'twelve sessions hash onto both replicas');

  // without X-Session-ID: a conversation's answers say one X-Prefix-Key (its first 64 prompt tokens), and turns
  // that send it back stay on one replica
  const keys = new Set();
  for (let i = 0; i < 6; i++) {
    const system = `You are assistant number ${i}. ` + 'Answer in the words of the old books, briefly and kindly, always. '.repeat(6);
    const messages = [{ role: 'system', content: system }];
    let key = null, up = null;
    for (let turn = 0; turn < 4; turn++) {
      messages.push({ role: 'user', content: `question ${turn}` });
      const r = await postJSON(s.balancer, '/v1/chat/completions', { model: MODEL_NAME, messages, max_tokens: 4, temperature: 0 },
        key ? { 'x-prefix-key': key } : {});
      assert.equal(r.status, 200, r.text);
      const k = r.headers.get('x-prefix-key');
      assert.match(k, /^[0-9a-f]{16}$/);
      if (key) assert.equal(k, key, 'the key of a conversation does not change');
      if (turn === 1) up = r.headers.get('x-autoglm-upstream');
      if (turn > 1) assert.equal(r.headers.get('x-autoglm-upstream'), up, `conversation ${i} moved`);
      key = k;
      messages.push({ role: 'assistant', content: r.json.choices[0].message.content });
    }
    keys.add(key);
  }
  assert.equal(keys.size, 6, 'each system prompt has its own key');
  const down = s.run('down');
  assert.equal(down.status, 0, down.stderr);
});

// ---- the edge (deploy/edge/edge.conf.in) --------------------------------------------------------------

// GET on a connection of its own that closes after it (fetch would keep it open, and a draining replica waits
// out its --drain-linger for open connections)
const getOnce = (url) => new Promise((resolve, reject) => {
  http.get(url, { agent: false }, (r) => { let b = ''; r.on('data', (d) => { b += d; }); r.on('end', () => resolve(b)); }).on('error', reject);
});

// requests to /v1/completions the replicas answered, from their own /metrics
async function originCount(replicas) {
  let n = 0;
  for (const u of replicas) {
    const text = await getOnce(u + '/metrics');
    for (const m of text.matchAll(/^autoglm_http_requests_total\{route="\/v1\/completions",[^}]*\} (\d+)/gm)) n += Number(m[1]);
  }
  return n;
}

test('edge: a repeated deterministic request is answered without the origin; never a sampled one, a stream, or another key\'s', { skip }, async () => {
  const e = cluster(['--replicas', '2', '--port', String(await freePort()), '--model', MODEL, '--',
    '--threads', '1', '--api-key', 'key-a', '--api-key', 'key-b']);
  const edge = e.lines.find((l) => l.startsWith('edge ')).split(' ')[1];
  const A = { authorization: 'Bearer key-a' }, B = { authorization: 'Bearer key-b' };
  const det = body({ prompt: 'edge ' + Date.now(), max_tokens: 12 });

  const first = await postJSON(edge, '/v1/completions', det, A);
  assert.equal(first.status, 200, first.text);
  assert.equal(first.headers.get('x-edge-cache'), 'MISS');
  assert.equal(first.headers.get('cache-control'), 'public, max-age=3600');
  assert.match(first.headers.get('etag'), /^W\/"[0-9a-f]{16}"$/);
  let before = await originCount(e.replicas);
  const again = await postJSON(edge, '/v1/completions', det, A);
  assert.equal(again.headers.get('x-edge-cache'), 'HIT');
  assert.equal(again.text, first.text);
  assert.equal(await originCount(e.replicas), before, 'the origin was not asked');

  // another API key: its own entry, never key-a's
  const other = await postJSON(edge, '/v1/completions', det, B);
  assert.equal(other.status, 200);
  assert.equal(other.headers.get('x-edge-cache'), 'MISS');
  assert.equal(await originCount(e.replicas), before + 1);
  assert.equal((await postJSON(edge, '/v1/completions', det, { authorization: 'Bearer nope' })).status, 401);

  // sampled: no-store, asked of the origin every time; a stream: passed through, never kept
  for (const [b, what] of [[{ ...det, temperature: 1 }, 'sampled'], [{ ...det, stream: true }, 'stream']]) {
    before = await originCount(e.replicas);
    for (let i = 0; i < 2; i++) {
      const r = await postJSON(edge, '/v1/completions', b, A);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('cache-control'), 'no-store', what);
      assert.notEqual(r.headers.get('x-edge-cache'), 'HIT', what);
    }
    assert.equal(await originCount(e.replicas), before + 2, what);
  }

  // two large bodies (past nginx's default 16 KB body buffer) that differ only in their prompt: two entries
  const pad = 'x'.repeat(20 * 1024);
  const big1 = await postJSON(edge, '/v1/completions', { ...det, prompt: 'big one', user: pad }, A);
  const big2 = await postJSON(edge, '/v1/completions', { ...det, prompt: 'big two', user: pad }, A);
  assert.equal(big1.status, 200, big1.text);
  assert.equal(big2.headers.get('x-edge-cache'), 'MISS');
  assert.notEqual(big2.json.choices[0].text, big1.json.choices[0].text);
  const big1again = await postJSON(edge, '/v1/completions', { ...det, prompt: 'big one', user: pad }, A);
  assert.equal(big1again.headers.get('x-edge-cache'), 'HIT');
  assert.equal(big1again.json.choices[0].text, big1.json.choices[0].text);
  // a body of 30,000 bytes or more passes uncached (its key would not fit nginx's buffer), and is answered
  for (let i = 0; i < 2; i++) {
    const huge = await postJSON(edge, '/v1/completions', { ...det, prompt: 'huge', user: 'y'.repeat(40 * 1024) }, A);
    assert.equal(huge.status, 200, huge.text);
    assert.equal(huge.headers.get('x-edge-cache'), null);
  }

  // If-None-Match naming the answer's ETag: 412 for a POST (RFC 9110 13.1.2), from the origin; another tag: 200
  const etag = first.headers.get('etag');
  const cond = await postJSON(edge, '/v1/completions', det, { ...A, 'if-none-match': etag });
  assert.equal(cond.status, 412, cond.text);
  assert.equal(cond.json.error.code, 'precondition_failed');
  assert.equal(cond.headers.get('etag'), etag);
  const stale = await postJSON(edge, '/v1/completions', det, { ...A, 'if-none-match': 'W/"0000000000000000"' });
  assert.equal(stale.status, 200);
  assert.equal(e.run('down').status, 0);
});

test('down stops nginx, the replicas and Redis', { skip }, async () => {
  const pids = ['nginx.pid', 'redis.pid', 'replica-1.pid'].map((f) => Number(readFileSync(path.join(c.dir, f), 'utf8')));
  const r = c.run('down');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'down\n');
  for (const pid of pids) assert.ok(await waitFor(() => !alive(pid), 5000), `pid ${pid} still runs`);
  await assert.rejects(fetch(c.balancer + '/health'));
  assert.equal(spawnSync('redis-cli', ['-u', c.redis, 'ping']).status === 0 && execFileSync('redis-cli', ['-u', c.redis, 'ping']).toString().trim() === 'PONG', false);
});

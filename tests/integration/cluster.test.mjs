// deploy/cluster/run: autoglm replicas behind Debian's nginx, sharing a real redis-server (docs/scale-out.md).
// The cluster comes up on free ports and prints its endpoints; one replica's answer is a HIT-L2 at another;
// least_conn spreads requests and session routing keeps a session on one replica; draining a replica under a
// steady `autoglm bench` load fails no request, and `add` brings one back; a killed replica is routed around;
// `down` leaves nothing running.  Skipped, with the reason, without nginx or redis-server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
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

async function freePort() {
  // a port with the next 40 free too: the script puts the replicas and Redis after it
  for (;;) {
    const p = await new Promise((resolve) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const q = s.address().port; s.close(() => resolve(q)); }); });
    if (p < 60000) return p;
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

test('up prints the balancer, each replica and Redis; status says each is ok', { skip }, () => {
  assert.match(c.balancer, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(c.replicas.length, 2);
  assert.match(c.redis, /^redis:\/\/127\.0\.0\.1:\d+$/);
  const s = c.run('status');
  assert.equal(s.status, 0, s.stderr);
  assert.match(s.stdout, /^balancer http:\S+ ok \(least_conn\)\nreplica 1 http:\S+ ok\nreplica 2 http:\S+ ok\nredis redis:\S+ ok\n$/);
  const again = spawnSync(RUN, ['up', '--replicas', '1', '--port', '1'], { env: { ...process.env, AUTOGLM_CLUSTER_DIR: c.dir }, encoding: 'utf8' });
  assert.equal(again.status, 1);
  assert.match(again.stderr, /^cluster: a cluster is up in .* \(run down first\)\n$/);
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

test('session routing: each X-Session-ID stays on one replica, and sessions use both', { skip }, async () => {
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
  const down = s.run('down');
  assert.equal(down.status, 0, down.stderr);
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

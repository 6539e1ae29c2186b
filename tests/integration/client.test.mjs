// libautoglm's client, through `autoglm complete --verbose` and through `autoglm chaos`: the decision table's
// rows against injected faults (attempts made, waits within their bounds), what the server saw, deadlines
// reaching the server, and the installed library (make install's files, pkg-config) built into a program.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { BIN, startServer, MODEL_NAME } from './server.mjs';

const SANITIZED = process.env.AUTOGLM_SANITIZED === '1';

function chaos(up, args = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ['chaos', '--listen', '127.0.0.1:0', '--upstream', `127.0.0.1:${up}`, '--admin', '127.0.0.1:0',
      ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    proc.stderr.on('data', (d) => {
      log += d;
      const p = /proxy listening on [^:]+:(\d+)/.exec(log), a = /admin API on [^:]+:(\d+)/.exec(log);
      if (p && a) resolve({ port: Number(p[1]), admin: `http://127.0.0.1:${a[1]}`,
        stop: () => new Promise((r) => { proc.on('exit', r); proc.kill('SIGINT'); }) });
    });
    proc.on('exit', (code) => reject(new Error(`chaos exited ${code}: ${log}`)));
  });
}

// autoglm complete, with its attempts read back from --verbose: [{ n, outcome, status, seconds, wait }]
function complete(port, args) {
  const t0 = performance.now();
  const r = spawnSync(BIN, ['complete', '--base-url', `http://127.0.0.1:${port}`, '--model', MODEL_NAME, '-p', 'Once',
    '--max-tokens', '8', '--verbose', ...args], { encoding: 'utf8', timeout: 60000 });
  const attempts = [...r.stderr.matchAll(/^autoglm complete: attempt (\d+): ([a-z ]+?)(?: (\d{3}))? after ([\d.]+) s \[([^\]]*)\](.*)$/gm)]
    .map((m) => ({ n: Number(m[1]), outcome: m[2], status: Number(m[3] ?? 0), seconds: Number(m[4]), rule: m[5],
      wait: /retry in ([\d.]+) s/.test(m[6]) ? Number(/retry in ([\d.]+) s/.exec(m[6])[1]) : null }));
  return { ...r, attempts, ms: performance.now() - t0 };
}

const served = async (url) => {
  const m = await (await fetch(`${url}/metrics`)).text();
  return [...m.matchAll(/^autoglm_http_requests_total\{route="\/v1\/completions"[^}]*\} (\S+)$/gm)].reduce((n, x) => n + Number(x[1]), 0);
};

let srv;
before(async () => { srv = await startServer(); });
after(async () => { assert.equal(await srv.stop(), 0, srv.log()); });

test('ok: one attempt, the text on stdout', async () => {
  const r = complete(srv.port, []);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.attempts.length, 1);
  assert.equal(r.attempts[0].outcome, 'ok');
  assert.ok(r.stdout.trim().length > 0);
  const s = complete(srv.port, ['--stream', '--chat']);
  assert.equal(s.status, 0, s.stderr);
  assert.ok(s.stdout.trim().length > 0);
});

test('503 with Retry-After: each retry waits what the server asked, then the call fails with its message', async () => {
  const c = await chaos(srv.port, ['--http-error', '503:1', '--retry-after', '1']);
  const r = complete(c.port, []);
  await c.stop();
  assert.equal(r.status, 1);
  assert.deepEqual(r.attempts.map((a) => [a.outcome, a.status, a.wait]), [['http status', 503, 1], ['http status', 503, 1],
    ['http status', 503, null]]);
  assert.ok(r.ms >= 2000, `${r.ms} ms`);
  assert.match(r.stderr, /injected by autoglm chaos \(gave up after 2 retries \(max_retries\)\) after 3 attempts/);
});

test('500: backoff with full jitter, within [0, 0.5 s] then [0, 1 s]; --retries sets the count', async () => {
  const c = await chaos(srv.port, ['--http-error', '500:1']);
  const r = complete(c.port, []);
  const one = complete(c.port, ['--retries', '0']);
  await c.stop();
  assert.equal(r.attempts.length, 3);
  assert.ok(r.attempts[0].wait >= 0 && r.attempts[0].wait <= 0.5, JSON.stringify(r.attempts));
  assert.ok(r.attempts[1].wait >= 0 && r.attempts[1].wait <= 1.0, JSON.stringify(r.attempts));
  assert.equal(one.attempts.length, 1);
});

test('a 4xx fails at once and costs the server exactly one request', async () => {
  const before = await served(srv.url);
  const r = spawnSync(BIN, ['complete', '--base-url', srv.url, '--model', 'no-such-model', '-p', 'x', '--verbose'],
    { encoding: 'utf8', timeout: 30000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /attempt 1: http status 404 .*\[4xx: fail at once\]/);
  assert.doesNotMatch(r.stderr, /attempt 2/);
  assert.equal(await served(srv.url), before + 1);
});

test('no connection, and no answer (a stall): retried after backoff, each timeout at least the first-byte timeout', async () => {
  const refused = complete(1, ['--retries', '1']);
  assert.deepEqual(refused.attempts.map((a) => a.outcome), ['connect error', 'connect error']);
  const c = await chaos(srv.port, ['--stall', '10s']);
  const r = complete(c.port, ['--first-byte-timeout', '300ms', '--retries', '1']);
  await c.stop();
  assert.deepEqual(r.attempts.map((a) => a.outcome), ['timeout', 'timeout']);
  for (const a of r.attempts) assert.ok(a.seconds >= 0.299, JSON.stringify(a));
});

test('a stream that broke after delivering text is not retried: the error says how much arrived', async () => {
  const c = await chaos(srv.port, ['--reset-after-bytes', '1500']);
  const r = complete(c.port, ['--stream', '--max-tokens', '200']);
  await c.stop();
  assert.equal(r.status, 1);
  assert.equal(r.attempts.length, 1, r.stderr);
  assert.equal(r.attempts[0].outcome, 'stream broken');
  assert.match(r.stderr, /bytes of text delivered/);
  assert.ok(r.stdout.trim().length > 0, 'the text that arrived was printed');
});

test('the total timeout reaches the server as X-Request-Timeout-Ms: it stops generating', async () => {
  const metric = async (re) => Number(re.exec(await (await fetch(`${srv.url}/metrics`)).text())[1]);
  const ABORT = /^autoglm_request_success_total\{finished_reason="abort"\} (\S+)$/m, RUNNING = /^autoglm_num_requests_running (\S+)$/m;
  // an earlier test's cut stream may still be ending on a loaded machine: count from a server at rest
  for (let i = 0; i < 250 && await metric(RUNNING) !== 0; i++) await new Promise((res) => setTimeout(res, 20));
  await new Promise((res) => setTimeout(res, 100)); // and its finish event has reached the loop's counters
  const aborted = await metric(ABORT);
  // temperature 0: greedy runs the whole 4000 tokens on the fixture; a sampled answer may end early at EOS
  const r = complete(srv.port, ['--timeout', '400ms', '--max-tokens', '4000', '--temperature', '0', '--retries', '0']);
  assert.equal(r.status, 1);
  assert.ok(r.ms >= 399 && r.ms < 5000, `${r.ms} ms`);
  assert.match(r.stderr, /attempt 1: (deadline|http status 504)/);
  // the generation (4000 tokens: seconds of work) ended at the deadline: nothing runs, one more abort
  for (let i = 0; i < 50 && await metric(RUNNING) !== 0; i++) await new Promise((res) => setTimeout(res, 20));
  assert.equal(await metric(RUNNING), 0);
  assert.equal(await metric(ABORT), aborted + 1);
});

test('retries carry one Idempotency-Key: attempts that timed out cost the server one generation', async () => {
  const t = async () => await (await fetch(`${srv.url}/metrics`)).text();
  const num = (text, re) => [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  const DONE = /^autoglm_request_success_total\{finished_reason="(?:stop|length)"\} (\S+)$/gm;
  const ABORT = /^autoglm_request_success_total\{finished_reason="abort"\} (\S+)$/gm;
  const KEYED = /^autoglm_idempotency_requests_total\{result="(?:new|joined|replayed)"\} (\S+)$/gm;
  const m0 = await t();
  // a whole answer's first byte comes when it is done (about a second): every attempt until then times out
  const r = complete(srv.port, ['--first-byte-timeout', '300ms', '--max-tokens', SANITIZED ? '400' : '2500', '--temperature', '0', '--retries', '8']);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.attempts.length >= 2 && r.attempts[0].outcome === 'timeout', r.stderr);
  assert.equal(r.attempts.at(-1).outcome, 'ok');
  const m1 = await t();
  assert.equal(num(m1, DONE) - num(m0, DONE), 1, 'one generation');
  assert.equal(num(m1, ABORT) - num(m0, ABORT), 0, 'none cancelled');
  assert.equal(num(m1, KEYED) - num(m0, KEYED), r.attempts.length, 'every attempt carried the key');
});

test('--compress: answers come coded (zstd from autoglm, streams too), large request bodies go gzipped', async () => {
  for (const stream of [[], ['--stream']]) {
    const r = complete(srv.port, ['--compress', '--max-tokens', '300', ...stream]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /attempt 1: ok .*\(answer zstd-coded\)$/m);
    assert.ok(r.stdout.length > 300, r.stdout);
  }
  // a server of node's: what the client sent, and a gzip answer it must decode (spawn: node's loop must run)
  let seen;
  const fake = http.createServer((req, res) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      seen = { headers: req.headers, body: Buffer.concat(parts) };
      const broken = JSON.parse(zlib.gunzipSync(seen.body)).max_tokens === 2;
      const answer = zlib.gzipSync(JSON.stringify({ choices: [{ index: 0, text: 'é'.repeat(2000), finish_reason: 'length' }] }));
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' });
      res.end(broken ? answer.subarray(0, answer.length - 9) : answer);
    });
  });
  await new Promise((r) => fake.listen(0, '127.0.0.1', r));
  const run = (args) => new Promise((resolve) => {
    const p = spawn(BIN, ['complete', '--base-url', `http://127.0.0.1:${fake.address().port}`, '-p', 'x'.repeat(5000),
      '--compress', '--verbose', '--retries', '0', ...args]);
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (code) => resolve({ code, out, err }));
  });
  const ok = await run([]);
  assert.equal(ok.code, 0, ok.err);
  assert.equal(ok.out.trim(), 'é'.repeat(2000));
  assert.match(ok.err, /\(answer gzip-coded\)/);
  assert.equal(seen.headers['content-encoding'], 'gzip');
  assert.match(seen.headers['accept-encoding'], /gzip/);
  assert.ok(seen.body.length < 1000, `${seen.body.length} bytes on the wire for a 5000-character prompt`);
  assert.equal(JSON.parse(zlib.gunzipSync(seen.body)).prompt, 'x'.repeat(5000));
  const cut = await run(['--max-tokens', '2']); // the answer's gzip trailer cut off
  fake.close();
  assert.equal(cut.code, 1);
  assert.match(cut.err, /attempt 1: protocol error .*gzip body/);
});

test('--hedge: an attempt held up gets a copy after the hedge delay; the copy answers, the held one is cancelled', async () => {
  const c = await chaos(srv.port, ['--http-delay', '60s:1']); // every request held for a minute...
  const fired = async () => Number(/^autoglm_chaos_faults_total\{fault="http_delay"\} (\S+)$/m
    .exec(await (await fetch(`${c.admin}/metrics`)).text())?.[1] ?? 0);
  const p = spawn(BIN, ['complete', '--base-url', `http://127.0.0.1:${c.port}`, '--model', MODEL_NAME, '-p', 'Once',
    '--max-tokens', '8', '--hedge', '--verbose']);
  let err = '';
  p.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((r) => p.on('exit', r));
  while (await fired() < 1) await new Promise((r) => setTimeout(r, 20));
  await fetch(`${c.admin}/faults`, { method: 'DELETE' }); // ...until the first is held: the copy goes straight through
  const code = await exited;
  await c.stop();
  assert.equal(code, 0, err);
  assert.match(err, /^autoglm complete: hedged copy's attempt 1: ok /m);
  assert.match(err, /^autoglm complete: attempt 1: cancelled /m);
});

test('--prompts-file: ag_batcher sends array-prompt requests and each line gets its own answer, as unbatched', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agbatch-'));
  const file = path.join(dir, 'prompts');
  writeFileSync(file, Array.from({ length: 20 }, (_, i) => `Line ${i} of the "file"\\ ${'é'.repeat(i % 3)}`).join('\n') + '\n');
  const run = (args) => spawnSync(BIN, ['complete', '--base-url', `http://127.0.0.1:${srv.port}`, '--model', MODEL_NAME,
    '--prompts-file', file, '--max-tokens', '12', '--temperature', '0', ...args], { encoding: 'utf8', timeout: 60000 });
  const n0 = await served(srv.url);
  const one = run(['--max-batch', '1']);
  const n1 = await served(srv.url);
  const eight = run(['--max-batch', '8']);
  const n2 = await served(srv.url);
  assert.equal(one.status, 0, one.stderr);
  assert.equal(eight.status, 0, eight.stderr);
  assert.equal(n1 - n0, 20, 'a request per line');
  assert.equal(n2 - n1, 3, 'batches of 8, 8 and 4');
  const lines = eight.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 20);
  lines.forEach((l, i) => assert.equal(l.prompt, `Line ${i} of the "file"\\ ${'é'.repeat(i % 3)}`));
  assert.ok(lines.every((l) => typeof l.text === 'string' && l.text.length > 0));
  assert.equal(eight.stdout, one.stdout, 'the same answers, in the file\'s order');
  // a batch the server refuses fails each of its lines, with the server's message
  const bad = spawnSync(BIN, ['complete', '--base-url', `http://127.0.0.1:${srv.port}`, '--model', 'no-such-model',
    '--prompts-file', file, '--max-batch', '16'], { encoding: 'utf8', timeout: 60000 });
  assert.equal(bad.status, 1);
  const errs = bad.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(errs.length, 20);
  assert.ok(errs.every((l) => /model/.test(l.error)), bad.stdout);
});

test('--http2: calls as streams of one connection; a timed-out attempt resets its stream, not the connection', async () => {
  // each read of the metrics on a connection of its own (counted in what it reads): one more between two reads
  const m = () => new Promise((resolve, reject) => http.get(`${srv.url}/metrics`, { agent: false }, (res) => {
    let t = '';
    res.on('data', (d) => { t += d; });
    res.on('end', () => resolve(t));
  }).on('error', reject));
  const num = (text, re) => [...text.matchAll(re)].reduce((n, x) => n + Number(x[1]), 0);
  const H2 = /^autoglm_http_requests_total\{route="\/v1\/completions",status="\d+",protocol="h2"\} (\S+)$/gm;
  const CONNS = /^autoglm_http_connections_accepted_total (\S+)$/gm;
  const DONE = /^autoglm_request_success_total\{finished_reason="(?:stop|length)"\} (\S+)$/gm;
  const ABORT = /^autoglm_request_success_total\{finished_reason="abort"\} (\S+)$/gm;
  for (const args of [[], ['--stream'], ['--stream', '--compress']]) {
    const r = complete(srv.port, ['--http2', '--max-tokens', '30', ...args]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.trim().length > 0);
  }
  const notFound = complete(srv.port, ['--http2', '--model', 'no-such-model']);
  assert.equal(notFound.status, 1);
  assert.match(notFound.stderr, /attempt 1: http status 404 .*\[4xx: fail at once\]/);
  // 30 calls at once (the batcher, one prompt a request) over one connection
  const dir = mkdtempSync(path.join(tmpdir(), 'agh2-'));
  writeFileSync(path.join(dir, 'p'), Array.from({ length: 30 }, (_, i) => `Prompt ${i}`).join('\n'));
  const t0 = await m();
  const many = spawnSync(BIN, ['complete', '--base-url', `http://127.0.0.1:${srv.port}`, '--model', MODEL_NAME, '--http2',
    '--prompts-file', path.join(dir, 'p'), '--max-batch', '1', '--max-tokens', '8', '--temperature', '0'],
  { encoding: 'utf8', timeout: 60000 });
  const t1 = await m();
  assert.equal(many.status, 0, many.stderr);
  assert.equal(many.stdout.trim().split('\n').length, 30);
  assert.equal(num(t1, H2) - num(t0, H2), 30);
  assert.equal(num(t1, CONNS) - num(t0, CONNS), 1 + 1, 'one connection (and the metrics read\'s)');
  // first-byte timeouts: each attempt's stream is reset and the retry joins the generation (Idempotency-Key)
  const r = complete(srv.port, ['--http2', '--first-byte-timeout', '300ms', '--max-tokens', SANITIZED ? '400' : '2500', '--temperature', '0', '--retries', '8']);
  const t2 = await m();
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.attempts.length >= 2 && r.attempts[0].outcome === 'timeout', r.stderr);
  assert.equal(num(t2, CONNS) - num(t1, CONNS), 1 + 1, 'the attempts shared one connection');
  assert.equal(num(t2, DONE) - num(t1, DONE), 1, 'one generation');
  assert.equal(num(t2, ABORT) - num(t1, ABORT), 0);
});

// autoglm chat, driven through a pipe: each turn finishes when the server has nothing running again
test('autoglm chat: turns carry the history, /reset forgets it, Ctrl-C stops a reply and the chat goes on', async () => {
  const m = async () => await (await fetch(`${srv.url}/metrics`)).text();
  const num = (text, re) => Number(re.exec(text)[1]);
  const PROMPT = /^autoglm_prompt_tokens_total (\S+)$/m, RUNNING = /^autoglm_num_requests_running (\S+)$/m;
  const CHATS = /^autoglm_http_requests_total\{route="\/v1\/chat\/completions",status="200"[^}]*\} (\S+)$/m;
  const settle = async (chats) => { // until the server answered `chats` chat requests and runs none
    for (let i = 0; i < 500; i++) {
      const t = await m();
      if ((CHATS.exec(t) ? num(t, CHATS) : 0) >= chats && num(t, RUNNING) === 0) return t;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error('the chat turn did not finish');
  };
  const start = (args) => {
    const p = spawn(BIN, ['chat', '--base-url', srv.url, '--model', MODEL_NAME, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    return { p, out: () => out, exited: new Promise((r) => p.on('exit', (code) => r(code))) };
  };
  const t0 = await m();
  let chats = CHATS.exec(t0) ? num(t0, CHATS) : 0;
  const c = start(['--max-tokens', '8']);
  const turn = async (text) => {
    const before = num(await m(), PROMPT);
    c.p.stdin.write(`${text}\n`);
    return num(await settle(++chats), PROMPT) - before;
  };
  const first = await turn('Hello there');
  const second = await turn('Hello there');
  c.p.stdin.write('/reset\n');
  const third = await turn('Hello there');
  c.p.stdin.end();
  assert.equal(await c.exited, 0);
  assert.ok(second > first, `the second turn sent the history: ${first} then ${second} prompt tokens`);
  assert.equal(third, first, 'after /reset the same turn costs what the first did');
  assert.match(c.out(), /\(history cleared\)/);

  const aborted = num(await m(), /^autoglm_request_success_total\{finished_reason="abort"\} (\S+)$/m);
  const d = start(['--max-tokens', '4000']);
  d.p.stdin.write('Tell me everything\n');
  for (let i = 0; i < 500 && !(d.out().length > 0 && num(await m(), RUNNING) === 1); i++) await new Promise((r) => setTimeout(r, 10));
  d.p.kill('SIGINT');
  for (let i = 0; i < 500 && !/\(stopped\)/.test(d.out()); i++) await new Promise((r) => setTimeout(r, 10));
  assert.match(d.out(), /\(stopped\)/);
  d.p.stdin.write('/quit\n');
  assert.equal(await d.exited, 0, 'Ctrl-C stopped the reply, not the program');
  await settle(0);
  assert.equal(num(await m(), /^autoglm_request_success_total\{finished_reason="abort"\} (\S+)$/m), aborted + 1);
});

test('usage errors are one line and exit 2', () => {
  for (const args of [[], ['--base-url', 'http://x'], ['-p', 'x', '--base-url', 'ftp://x'], ['-p', 'x', '--retries', '-1', '--base-url', 'http://x'],
    ['-p', 'x', '--timeout', 'soon', '--base-url', 'http://x'], ['--bogus']]) {
    const r = spawnSync(BIN, ['complete', ...args], { encoding: 'utf8', env: { ...process.env, AUTOGLM_BASE_URL: '', OPENAI_BASE_URL: '' } });
    assert.ok(r.status === 2 || (args.includes('ftp://x') && r.status === 1), `${args}: ${r.status} ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

// make install's files (cmake --install of the release build) and pkg-config, as a user of the library builds
const RELEASE = path.resolve('build/release');
const why = SANITIZED ? 'the installed library is the release build\'s' : !existsSync(path.join(RELEASE, 'CMakeCache.txt')) ? 'no build/release here' : false;
test('the installed library: pkg-config finds it, docs/examples/client.c builds against it and completes', { skip: why }, () => {
  const prefix = mkdtempSync(path.join(tmpdir(), 'ag-install-'));
  const inst = spawnSync('cmake', ['--install', RELEASE, '--prefix', prefix], { encoding: 'utf8' });
  assert.equal(inst.status, 0, inst.stderr);
  const env = { ...process.env, PKG_CONFIG_PATH: path.join(prefix, 'lib', 'pkgconfig') };
  const flags = spawnSync('pkg-config', ['--cflags', '--libs', 'autoglm'], { encoding: 'utf8', env });
  assert.equal(flags.status, 0, flags.stderr);
  const exe = path.join(prefix, 'client');
  const cc = spawnSync('cc', ['-std=c11', '-Wall', '-Werror', 'docs/examples/client.c', ...flags.stdout.trim().split(/\s+/), '-o', exe],
    { encoding: 'utf8' });
  assert.equal(cc.status, 0, cc.stderr);
  const run = spawnSync(exe, [srv.url, MODEL_NAME, 'In the beginning'], { encoding: 'utf8', timeout: 30000,
    env: { ...process.env, LD_LIBRARY_PATH: path.join(prefix, 'lib') } });
  assert.equal(run.status, 0, run.stderr);
  assert.ok(run.stdout.trim().length > 0);
  // only the API is exported
  const syms = spawnSync('nm', ['-D', '--defined-only', path.join(prefix, 'lib', 'libautoglm.so')], { encoding: 'utf8' }).stdout;
  assert.match(syms, / T ag_client_call$/m);
  assert.doesNotMatch(syms, / T ag_http_response_read$/m);
});

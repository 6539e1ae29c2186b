// Regression tests for the defects the server's second review found (issue 18), each failing on the code before
// its fix: the prefix (KV) cache shared across API keys, a streamed engine error that ended as a normal
// "length" finish, ignore_eos and min_tokens not parsed, and `autoglm bench` hanging on a server that closes
// keep-alive connections (a stock nginx after 1000 requests; our own --max-requests-per-connection).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { BIN, EOS, MODEL_NAME, startServer, postJSON, sseEvents, waitFor } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { default: OpenAI } = await import(createRequire(path.join(here, '../fixtures/package.json')).resolve('openai'));
const scratch = mkdtempSync(path.join(tmpdir(), 'ag-regress-'));

const prompt = 'The quick brown fox jumps over the lazy dog. '.repeat(6); // several full KV blocks

test('the prefix cache is per API key: one tenant never reuses (or learns of) another\'s prompt', async () => {
  const s = await startServer(['--api-key', 'tenant-a', '--api-key', 'tenant-b']);
  try {
    const ask = async (key, extra = {}) => {
      const r = await postJSON(s.url, '/v1/completions', { model: MODEL_NAME, prompt, max_tokens: 2, ...extra },
        { authorization: `Bearer ${key}` });
      assert.equal(r.status, 200, r.text);
      return r.json.usage.prompt_tokens_details.cached_tokens;
    };
    assert.equal(await ask('tenant-a'), 0);
    assert.ok(await ask('tenant-a') > 0, 'the same tenant reuses its own prefix');
    assert.equal(await ask('tenant-b'), 0, 'another tenant does not');
    assert.equal(await ask('tenant-a', { cache_salt: 'x' }), 0, 'cache_salt is a namespace of its own');
    assert.ok(await ask('tenant-a', { cache_salt: 'x' }) > 0);
  } finally {
    assert.equal(await s.stop(), 0, s.log());
  }
});

test('an engine error mid-stream ends with an error event the OpenAI SDK raises; non-streamed stays a 500', async () => {
  // a KV pool of 32 tokens: a request that keeps generating past it fails alone in the engine
  const s = await startServer(['--ctx-total', '32', '--max-seqs', '1']);
  try {
    const body = { model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 100, ignore_eos: true };
    const r = await postJSON(s.url, '/v1/completions', { ...body, stream: true });
    assert.equal(r.status, 200);
    const ev = sseEvents(r.text);
    const err = ev.find((e) => e !== '[DONE]' && e.error);
    assert.ok(err, r.text);
    assert.equal(err.error.type, 'server_error');
    assert.ok(!ev.some((e) => e !== '[DONE]' && e.choices?.some((c) => c.finish_reason)), 'no finish_reason chunk');
    const whole = await postJSON(s.url, '/v1/completions', body);
    assert.equal(whole.status, 500);
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'none', maxRetries: 0 });
    await assert.rejects(async () => {
      const stream = await client.completions.create({ ...body, stream: true });
      for await (const chunk of stream) void chunk;
    }, (e) => e instanceof OpenAI.APIError && /engine failed/.test(e.message));
  } finally {
    assert.equal(await s.stop(), 0, s.log());
  }
});

test('ignore_eos and min_tokens are honoured (vLLM\'s fields)', async () => {
  const s = await startServer();
  try {
    const base = { model: MODEL_NAME, prompt: 'Hello', max_tokens: 12, temperature: 0, logit_bias: { [EOS]: 100 } };
    const plain = await postJSON(s.url, '/v1/completions', base);
    assert.equal(plain.json.choices[0].finish_reason, 'stop');
    assert.equal(plain.json.usage.completion_tokens, 0);
    const ignoring = await postJSON(s.url, '/v1/completions', { ...base, ignore_eos: true });
    assert.equal(ignoring.json.choices[0].finish_reason, 'length');
    assert.equal(ignoring.json.usage.completion_tokens, 12);
    const min = await postJSON(s.url, '/v1/completions', { ...base, min_tokens: 5 });
    assert.equal(min.json.choices[0].finish_reason, 'stop');
    assert.equal(min.json.usage.completion_tokens, 5);
    const bad = await postJSON(s.url, '/v1/completions', { ...base, min_tokens: 13 });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'min_tokens');
    assert.equal((await postJSON(s.url, '/v1/completions', { ...base, ignore_eos: 'yes' })).json.error.param, 'ignore_eos');
  } finally {
    assert.equal(await s.stop(), 0, s.log());
  }
});

// autoglm bench must finish (never hang) and lose no request when the server ends keep-alive connections.
function benchRun(url, args) {
  const out = path.join(scratch, `bench-${Math.random().toString(36).slice(2)}.json`);
  const r = spawnSync(BIN, ['bench', '--url', url, '--no-stream', ...args, '--json', out], { encoding: 'utf8', timeout: 60000 });
  assert.notEqual(r.error?.code, 'ETIMEDOUT', 'autoglm bench hung');
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(readFileSync(out, 'utf8')).steps[0];
}

const freePort = () => new Promise((resolve) => {
  const srv = net.createServer().listen(0, '127.0.0.1', () => { const p = srv.address().port; srv.close(() => resolve(p)); });
});

test('autoglm bench against a stock nginx (keepalive_requests 1000): reconnects, finishes, counts every request', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ag-nginx-'));
  chmodSync(dir, 0o755); // nginx started as root serves as an unprivileged worker
  mkdirSync(path.join(dir, 'www'));
  writeFileSync(path.join(dir, 'www', 'index.html'), 'hello\n');
  const port = await freePort();
  // only what an unprivileged instance needs (paths, port); every keep-alive setting is nginx's default
  writeFileSync(path.join(dir, 'nginx.conf'), `daemon off; worker_processes 1; pid ${dir}/nginx.pid;
error_log ${dir}/error.log; events {}
http { access_log off; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server { listen 127.0.0.1:${port}; root ${dir}/www; } }
`);
  const nginx = spawn('nginx', ['-c', path.join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  try {
    assert.ok(await waitFor(async () => { try { return (await fetch(`http://127.0.0.1:${port}/`)).ok; } catch { return false; } }),
      readFileSync(path.join(dir, 'error.log'), 'utf8'));
    const s = benchRun(`http://127.0.0.1:${port}/`, ['--concurrency', '4', '--requests', '6000']);
    assert.equal(s.requests, 6000);
    assert.equal(s.ok, 6000, JSON.stringify(s));
  } finally {
    nginx.kill('SIGTERM');
  }
});

// llama-server (d32676d77) answers a streamed request with "Keep-Alive: timeout=5, max=100" and then closes the
// connection; the load generator sent its next request down the closed connection and counted half of all
// requests as connection errors.  This server answers one request per connection and closes on the second.
test('autoglm bench against a server that closes a kept-alive connection unannounced: resends, every request answered', async () => {
  const script = path.join(scratch, 'close-after-one.mjs');
  writeFileSync(script, `import net from 'node:net';
const srv = net.createServer((sock) => {
  let seen = '', answered = 0;
  sock.on('data', (d) => {
    seen += d;
    while (seen.includes('\\r\\n\\r\\n')) {
      seen = seen.slice(seen.indexOf('\\r\\n\\r\\n') + 4);
      if (answered++) return sock.destroy(); // the next request on a kept-alive connection: closed, unanswered
      sock.write('HTTP/1.1 200 OK\\r\\nContent-Length: 6\\r\\nKeep-Alive: timeout=5, max=100\\r\\n\\r\\nhello\\n');
    }
  });
  sock.on('error', () => {});
}).listen(0, '127.0.0.1', () => console.log('listening ' + srv.address().port));
`);
  const proc = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise((resolve) => proc.stdout.on('data', (d) => { const m = /listening (\d+)/.exec(d); if (m) resolve(m[1]); }));
    const s = benchRun(`http://127.0.0.1:${port}/`, ['--concurrency', '2', '--requests', '200']);
    assert.equal(s.requests, 200);
    assert.equal(s.ok, 200, JSON.stringify(s));
    assert.equal(s.connection_errors, 0);
    assert.ok(s.refused_resent > 0, JSON.stringify(s));
  } finally {
    proc.kill('SIGTERM');
  }
});

test('autoglm bench against serve --max-requests-per-connection 5: every request answered', async () => {
  const srv = await startServer(['--max-requests-per-connection', '5']);
  try {
    const r = await fetch(srv.url + '/health');
    assert.equal(r.headers.get('connection'), null);
    const s = benchRun(`${srv.url}/health`, ['--concurrency', '8', '--requests', '400']);
    assert.equal(s.requests, 400);
    assert.equal(s.ok, 400, JSON.stringify(s));
    const m = await (await fetch(srv.url + '/metrics')).text();
    const accepted = Number(/^autoglm_http_connections_accepted_total (\S+)$/m.exec(m)[1]);
    assert.ok(accepted >= 400 / 5, `connections accepted: ${accepted}`);
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

// Found with the Batch API's uploads: the head's spans (method, path, headers) pointed into the connection's
// buffer, which moves when it grows for a body that arrives after the head; routing then read freed memory
// (ASan: heap-use-after-free; Release: a 404 for a garbled path).
test('a body that arrives after its head and outgrows the read buffer: the request is routed intact', async () => {
  const s = await startServer();
  try {
    const body = Buffer.from(JSON.stringify({ model: MODEL_NAME, prompt: 'x', max_tokens: 1, user: 'u'.repeat(600000) }));
    const answer = await new Promise((resolve, reject) => {
      const sock = net.connect(s.port, '127.0.0.1');
      let out = '';
      sock.on('data', (d) => { out += d; if (/\r\n\r\n[\s\S]*\}/.test(out)) { sock.destroy(); resolve(out); } });
      sock.on('error', reject);
      sock.on('connect', async () => {
        sock.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Check: intact\r\nContent-Length: ${body.length}\r\n\r\n`);
        await new Promise((r) => setTimeout(r, 100)); // the head alone first
        for (let i = 0; i < body.length; i += 50000) {
          sock.write(body.subarray(i, i + 50000));
          await new Promise((r) => setTimeout(r, 5));
        }
      });
    });
    assert.match(answer, /^HTTP\/1\.1 200 /, answer.slice(0, 300));
  } finally {
    assert.equal(await s.stop(), 0, s.log());
  }
});

// TLS (--tls-cert/--tls-key) with a certificate made here by openssl: HTTP/1.1
// and HTTP/2 chosen by ALPN, checked with curl, openssl s_client, h2load, Node's
// https and http2, and the official openai SDK in a process that trusts the
// certificate; TLS 1.1 and a client with no protocol in common are refused;
// a non-TLS client only loses its own connection; bad certificate or key
// files stop the server at start with one line naming the file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, sseEvents, BIN, MODEL, MODEL_NAME } from './server.mjs';

const dir = mkdtempSync(path.join(tmpdir(), 'ag-tls-'));
const cert = path.join(dir, 'cert.pem'), key = path.join(dir, 'key.pem');
const here = path.dirname(fileURLToPath(import.meta.url));
const sdk = createRequire(path.join(here, '../fixtures/package.json')).resolve('openai');

function makeCert(c, k, cn) {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', k, '-out', c, '-days', '2', '-subj', `/CN=${cn}`, '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
  { stdio: 'ignore' });
}

let srv, ca;
before(async () => {
  makeCert(cert, key, 'localhost');
  ca = execFileSync('cat', [cert]);
  srv = await startServer(['--tls-cert', cert, '--tls-key', key, '--ctx', '512']);
});
after(async () => assert.equal(await srv.stop(), 0, srv.log()));

const curl = (...args) => execFileSync('curl', ['-s', '--cacert', cert, ...args], { encoding: 'utf8' });

test('the server listens with TLS: HTTP/1.1 and HTTP/2 by ALPN give the same answers', () => {
  assert.match(srv.url, /^https:/);
  const body = JSON.stringify({ model: MODEL_NAME, prompt: 'over tls', max_tokens: 5, temperature: 0 });
  const one = curl('--http1.1', '-w', '\n%{http_version}', `${srv.url}/v1/completions`, '-d', body).split('\n');
  const two = curl('--http2', '-w', '\n%{http_version}', `${srv.url}/v1/completions`, '-d', body).split('\n');
  assert.equal(one[1], '1.1');
  assert.equal(two[1], '2');
  assert.deepEqual(JSON.parse(two[0]).choices, JSON.parse(one[0]).choices);
  const h = curl('--http2', '-D', '-', '-o', '/dev/null', `${srv.url}/health`);
  assert.match(h, /^HTTP\/2 200/);
  assert.match(h, /^x-trace-id: [0-9a-f]{32}/m);
});

test('openssl s_client: TLS 1.2 and 1.3 with ALPN h2 or http/1.1; TLS 1.1 and a foreign ALPN are refused', () => {
  const sc = (...args) => spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-CAfile', cert, ...args],
    { input: '', encoding: 'utf8', timeout: 20000 });
  let r = sc('-tls1_3', '-alpn', 'h2');
  assert.match(r.stdout, /ALPN protocol: h2/);
  assert.match(r.stdout, /Verify return code: 0 \(ok\)/);
  r = sc('-tls1_2', '-alpn', 'http/1.1');
  assert.match(r.stdout, /ALPN protocol: http\/1.1/);
  assert.match(r.stdout, /Protocol\s*: TLSv1.2/);
  r = sc('-tls1_1');
  assert.match(r.stdout, /Cipher is \(NONE\)/); // no session was made
  assert.match(r.stderr, /alert protocol version/);
  r = sc('-alpn', 'spdy/3');
  assert.match(r.stdout + r.stderr, /no application protocol|alert number 120/i);
});

test('Node https and http2 (SSE over an h2 stream) with the certificate trusted', async () => {
  const got = await new Promise((resolve, reject) => {
    https.get(`${srv.url}/v1/models`, { ca }, (res) => {
      let t = '';
      res.on('data', (d) => { t += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: t }));
    }).on('error', reject);
  });
  assert.equal(got.status, 200);
  assert.equal(JSON.parse(got.body).data[0].id, MODEL_NAME);
  const s = http2.connect(srv.url, { ca });
  try {
    const text = await new Promise((resolve, reject) => {
      const req = s.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
      let t = '';
      req.setEncoding('utf8');
      req.on('data', (d) => { t += d; });
      req.on('end', () => resolve(t));
      req.on('error', reject);
      req.end(JSON.stringify({ model: MODEL_NAME, prompt: 'hi', max_tokens: 6, stream: true }));
    });
    assert.equal(s.alpnProtocol, 'h2');
    assert.equal(sseEvents(text).at(-1), '[DONE]');
  } finally {
    s.close();
  }
  const hl = execFileSync('h2load', ['-n', '100', '-c', '2', '-m', '5', `${srv.url}/health`], { encoding: 'utf8' });
  assert.match(hl, /Application protocol: h2/);
  assert.match(hl, /100 succeeded, 0 failed/);
});

test('the openai SDK over HTTPS, unchanged (a process that trusts the certificate)', () => {
  const script = `
    const { default: OpenAI } = await import(${JSON.stringify(sdk)});
    const c = new OpenAI({ baseURL: ${JSON.stringify(srv.url + '/v1')}, apiKey: 'x', maxRetries: 0 });
    const r = await c.completions.create({ model: ${JSON.stringify(MODEL_NAME)}, prompt: 'hi', max_tokens: 4 });
    let n = 0;
    for await (const ch of await c.chat.completions.create({ model: ${JSON.stringify(MODEL_NAME)},
      messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream: true })) n++;
    console.log(JSON.stringify({ object: r.object, tokens: r.usage.completion_tokens, chunks: n }));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script],
    { encoding: 'utf8', env: { ...process.env, NODE_EXTRA_CA_CERTS: cert } });
  const r = JSON.parse(out.trim());
  assert.equal(r.object, 'text_completion');
  assert.equal(r.tokens, 4);
  assert.ok(r.chunks >= 2);
});

test('a cleartext client on the TLS port loses only its own connection', async () => {
  const reply = await new Promise((resolve) => {
    const s = net.connect(srv.port, '127.0.0.1', () => s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'));
    let t = Buffer.alloc(0);
    s.on('data', (d) => { t = Buffer.concat([t, d]); });
    s.on('close', () => resolve(t));
    s.on('error', () => resolve(t));
  });
  assert.doesNotMatch(reply.toString('latin1'), /HTTP\/1.1 200/);
  assert.equal(JSON.parse(curl(`${srv.url}/health`)).status, 'ok');
});

test('a missing or bad certificate or key, or a mismatched pair: one line naming the file, exit 1', () => {
  const bad = path.join(dir, 'bad.pem'), c2 = path.join(dir, 'c2.pem'), k2 = path.join(dir, 'k2.pem');
  writeFileSync(bad, 'not a pem file\n');
  makeCert(c2, k2, 'other');
  for (const [c, k, re] of [
    [path.join(dir, 'missing.pem'), key, /--tls-cert .*missing\.pem: No such file or directory/],
    [bad, key, /--tls-cert .*bad\.pem: not a PEM certificate/],
    [cert, bad, /--tls-key .*bad\.pem: not a PEM private key/],
    [cert, k2, /--tls-key .*k2\.pem does not match the certificate in .*cert\.pem/],
  ]) {
    const r = spawnSync(BIN, ['serve', '--model', MODEL, '--port', '0', '--tls-cert', c, '--tls-key', k], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    const errors = r.stderr.split('\n').filter((l) => / error /.test(l));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0], re);
  }
  const r = spawnSync(BIN, ['serve', '--model', MODEL, '--tls-cert', cert], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--tls-cert and --tls-key go together/);
});

test('autoglm bench over https: h2 by ALPN or HTTP/1.1, trusting --cacert or --insecure; an unknown CA is refused with the reason', () => {
  const bench = (...args) => {
    const json = path.join(dir, 'bench.json');
    const r = spawnSync(BIN, ['bench', '--base-url', srv.url, '--model', MODEL_NAME, '--concurrency', '2', '--requests', '6', '--output-tokens', '3',
      ...args, '--json', json], { encoding: 'utf8', timeout: 120000 });
    assert.equal(r.status, 0, r.stderr);
    return { step: JSON.parse(readFileSync(json, 'utf8')).steps[0], stderr: r.stderr };
  };
  for (const args of [['--http2', '--cacert', cert], ['--cacert', cert], ['--http2', '--insecure'], ['--insecure']])
    assert.equal(bench(...args).step.ok, 6, args.join(' '));
  const refused = bench('--http2'); // the system's CAs do not know ours
  assert.equal(refused.step.ok, 0);
  assert.equal(refused.step.connection_errors, 6);
  assert.match(refused.stderr, /first connection error: TLS: certificate verify failed: self-signed certificate/);
  const plain = spawnSync(BIN, ['bench', '--base-url', srv.url.replace('https', 'http'), '--insecure', '--concurrency', '1',
    '--requests', '1'], { encoding: 'utf8' });
  assert.equal(plain.status, 2);
  assert.match(plain.stderr, /--insecure and --cacert are for https:\/\/ targets/);
});

test('autoglm complete (libautoglm) over https: --cacert and --insecure work, HTTP/1.1 and h2 (ALPN); a refused certificate fails at once', () => {
  const run = (...args) => spawnSync(BIN, ['complete', '--base-url', srv.url, '--model', MODEL_NAME, '-p', 'Once', '--max-tokens', '4',
    '--verbose', ...args], { encoding: 'utf8', timeout: 30000 });
  for (const args of [['--cacert', cert], ['--insecure'], ['--cacert', cert, '--http2'], ['--cacert', cert, '--http2', '--stream']]) {
    const r = run(...args);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /attempt 1: ok/);
  }
  const r = run();
  assert.equal(r.status, 1);
  assert.match(r.stderr, /attempt 1: certificate refused .*certificate verify failed/);
  assert.doesNotMatch(r.stderr, /attempt 2/);
});

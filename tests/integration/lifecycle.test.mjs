// Server lifecycle over the real binary: disconnects cancel generations, the
// SIGTERM drain (and its linger for a proxy's pooled connections), queue-full 429s, the connection cap, a slow reader, API keys,
// and 200 concurrent streams that each get exactly the lone request's tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  startServer, raw, parseResponses, postJSON, sseEvents, health, waitFor, MODEL, MODEL_NAME, EOS,
} from './server.mjs';

const longStream = (maxTokens) => JSON.stringify({
  model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: maxTokens, stream: true, logit_bias: { [EOS]: -100 },
});

// Open a streaming request on a raw socket; resolves once the first token chunk has arrived.
function openStream(port, body) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    s.on('data', (d) => {
      text += d.toString('latin1'); // bytes as they came: parseResponses counts chunk sizes in bytes
      if (text.includes('"text"')) resolve({ socket: s, text: () => text });
    });
    s.on('connect', () => s.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`));
  });
}

test('a client that disconnects mid-stream cancels its generation and frees its KV blocks', async () => {
  const srv = await startServer(['--ctx', '4096']);
  try {
    const base = await health(srv.url);
    assert.equal(base.kv_blocks_used, 0);
    const t0 = Date.now();
    const st = await openStream(srv.port, longStream(4000));
    // the engine's stats are published after each step, so the first token can arrive just before them
    const busy = await waitFor(async () => { const h = await health(srv.url); return h.requests_running === 1 && h; }, 1000);
    assert.ok(busy, 'the generation is not running');
    assert.ok(busy.kv_blocks_used > 0);
    st.socket.destroy();
    const after = await waitFor(async () => { const h = await health(srv.url); return h.requests_running === 0 && h.kv_blocks_used === 0 && h; }, 3000);
    assert.ok(after, 'the generation kept running after the client left');
    // it was cancelled, not run to its 4000 tokens: counted as an abort, with fewer tokens generated (the
    // count is taken when the loop drains the finish event, which can come after the step's published stats)
    const abort = /^autoglm_request_success_total\{finished_reason="abort"\} 1(\.0)?$/m;
    let m = '';
    await waitFor(async () => abort.test(m = await (await fetch(srv.url + '/metrics')).text()), 3000);
    assert.match(m, abort);
    assert.ok(Number(/^autoglm_generation_tokens_total (\S+)$/m.exec(m)[1]) < 4000, `after ${Date.now() - t0} ms`);
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('SIGTERM drains: in-flight streams finish, new requests get 503, new connections are refused, exit 0', async () => {
  const srv = await startServer(['--ctx', '4096', '--drain-timeout', '20s']);
  // an idle keep-alive connection opened before the signal
  const idle = net.connect(srv.port, '127.0.0.1');
  await new Promise((r) => idle.on('connect', r));
  let idleText = '';
  idle.on('data', (d) => { idleText += d.toString('latin1'); });
  const st = await openStream(srv.port, longStream(1500));
  const streamDone = new Promise((r) => { st.socket.on('close', r); st.socket.on('end', r); });
  srv.proc.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 100));
  idle.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => idleText.includes('\r\n\r\n{'), 3000);
  const [h] = parseResponses(idleText);
  assert.equal(h.status, 503);
  assert.equal(JSON.parse(h.body).status, 'draining');
  await assert.rejects(fetch(`${srv.url}/health`));
  await streamDone;
  const ev = sseEvents(parseResponses(st.text())[0].body);
  assert.equal(ev.at(-1), '[DONE]');
  assert.equal(ev.at(-2).choices[0].finish_reason, 'length');
  assert.equal(await srv.exited, 0);
  idle.destroy();
});

// A proxy's pooled connection: nginx may send a request on it just as the drain begins, and a POST already sent
// is never retried elsewhere, so with --drain-linger such requests are served (then the connection closes).
test('--drain-linger: requests on open connections are served with Connection: close; exit when the last closes or the linger ends', async () => {
  const body = JSON.stringify({ model: MODEL_NAME, prompt: 'hi', max_tokens: 4 });
  const post = `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  const open = async (port) => {
    const s = net.connect(port, '127.0.0.1');
    await new Promise((r) => s.on('connect', r));
    const conn = { s, text: '', closed: false };
    s.on('data', (d) => { conn.text += d.toString('latin1'); });
    s.on('close', () => { conn.closed = true; });
    return conn;
  };
  const srv = await startServer(['--drain-linger', '60s']);
  const [a, b] = [await open(srv.port), await open(srv.port)];
  srv.proc.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 100));
  a.s.write(post);
  assert.ok(await waitFor(() => a.closed, 5000), 'the server closes the connection after the answer');
  const [r] = parseResponses(a.text);
  assert.equal(r.status, 200, a.text);
  assert.equal(r.headers.connection, 'close');
  assert.equal(JSON.parse(r.body).usage.completion_tokens, 4);
  await assert.rejects(fetch(`${srv.url}/health`)); // the listener is closed: a proxy tries another replica
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(srv.proc.exitCode, null, 'b is still open: the server waits for it');
  b.s.destroy();
  assert.equal(await srv.exited, 0);

  // a connection that never closes holds the server only for the linger
  const srv2 = await startServer(['--drain-linger', '1s']);
  const c = await open(srv2.port);
  const t0 = Date.now();
  srv2.proc.kill('SIGTERM');
  assert.equal(await srv2.exited, 0);
  const took = Date.now() - t0;
  assert.ok(took >= 900 && took < 10000, `exited ${took} ms after the signal`);
  assert.ok(await waitFor(() => c.closed, 2000));
});

test('a full queue answers 429 with Retry-After; the rest complete', async () => {
  const srv = await startServer(['--max-queue', '1', '--max-seqs', '1']);
  try {
    const body = { model: MODEL_NAME, prompt: 'x', max_tokens: 200, logit_bias: { [EOS]: -100 } };
    const rs = await Promise.all(Array.from({ length: 12 }, () => postJSON(srv.url, '/v1/completions', body)));
    const busy = rs.filter((r) => r.status === 429);
    assert.ok(busy.length > 0, 'no 429');
    assert.match(busy[0].headers.get('retry-after'), /^[1-9][0-9]*$/); // when the line ahead should have drained
    assert.equal(busy[0].json.error.code, 'rate_limit_exceeded');
    assert.ok(rs.every((r) => r.status === 200 || r.status === 429));
    assert.ok(rs.some((r) => r.status === 200));
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('the connection cap answers 503 beyond --max-connections', async () => {
  const srv = await startServer(['--max-connections', '2']);
  try {
    const held = [net.connect(srv.port, '127.0.0.1'), net.connect(srv.port, '127.0.0.1')];
    await Promise.all(held.map((s) => new Promise((r) => s.on('connect', r))));
    await new Promise((r) => setTimeout(r, 100));
    const [r] = parseResponses(await raw(srv.port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.equal(r.status, 503);
    held.forEach((s) => s.destroy());
    await new Promise((r2) => setTimeout(r2, 100));
    assert.equal((await health(srv.url)).status, 'ok');
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('a client that never reads stalls only its own stream', async () => {
  const srv = await startServer(['--ctx', '4096']);
  try {
    const s = net.connect(srv.port, '127.0.0.1');
    await new Promise((r) => s.on('connect', r));
    s.pause(); // never read: the kernel buffers fill and the server must queue, not block
    const body = longStream(3000);
    s.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    const r = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: 'hi', max_tokens: 4 });
    assert.equal(r.status, 200);
    // a few ms alone, more under the sanitizers; a stalled loop would wait for the reader forever
    assert.ok(Date.now() - t0 < 5000, `a second request waited ${Date.now() - t0} ms`);
    s.destroy();
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('API keys: Bearer required everywhere but /health, keys from flags and a file', async () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'autoglm-keys-')), 'keys');
  fs.writeFileSync(file, '# team keys\nkey-from-file\n\n');
  const srv = await startServer(['--api-key', 'k1', '--api-key', 'k2', '--api-key-file', file]);
  try {
    const body = { model: MODEL_NAME, prompt: 'x', max_tokens: 1 };
    assert.equal((await fetch(`${srv.url}/health`)).status, 200);
    let r = await postJSON(srv.url, '/v1/completions', body);
    assert.equal(r.status, 401);
    assert.equal(r.json.error.code, 'invalid_api_key');
    assert.equal((await postJSON(srv.url, '/v1/completions', body, { authorization: 'Bearer k3' })).status, 401);
    assert.equal((await postJSON(srv.url, '/v1/completions', body, { authorization: 'Basic k1' })).status, 401);
    for (const k of ['k1', 'k2', 'key-from-file'])
      assert.equal((await postJSON(srv.url, '/v1/completions', body, { authorization: `Bearer ${k}` })).status, 200);
    r = await fetch(`${srv.url}/v1/models`, { headers: { authorization: 'Bearer k1x' } });
    assert.equal(r.status, 401);
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('200 concurrent streaming clients each get exactly the tokens a lone request gets', async () => {
  const srv = await startServer(['--threads', '2']);
  try {
    const body = { model: MODEL_NAME, prompt: 'The quick brown fox', max_tokens: 16, seed: 11, temperature: 0.9, stream: true };
    const streamText = async () => {
      const r = await fetch(`${srv.url}/v1/completions`, { method: 'POST', body: JSON.stringify(body) });
      assert.equal(r.status, 200);
      const ev = sseEvents(await r.text());
      assert.equal(ev.at(-1), '[DONE]');
      return ev.slice(0, -1).map((e) => e.choices[0].text).join('');
    };
    const lone = await streamText();
    assert.ok(lone.length > 0);
    const all = await Promise.all(Array.from({ length: 200 }, streamText));
    assert.equal(all.filter((t) => t === lone).length, 200);
    const h = await waitFor(async () => { const x = await health(srv.url); return x.requests_running === 0 && x; });
    assert.equal(h.kv_blocks_used, 0);
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('a model that cannot be loaded: the server says why and exits 1', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'autoglm-bad-'));
  const bad = path.join(dir, 'bad.gguf');
  fs.writeFileSync(bad, 'GGUF but not really');
  const srv = await startServer([], { model: bad, waitReady: false });
  const code = await srv.exited;
  assert.equal(code, 1);
  assert.match(srv.log(), /cannot load the model/);
});

test('chat stops at the chat template\'s end-of-turn token (<|eot_id|> for Llama 3, whose EOS is another token)', async () => {
  const srv = await startServer([], { model: MODEL.replace('llama2', 'llama3') });
  try {
    const eot = (await postJSON(srv.url, '/tokenize', { prompt: '<|eot_id|>', add_special: false })).json.tokens;
    assert.equal(eot.length, 1);
    const bias = { logit_bias: { [eot[0]]: 100 }, max_tokens: 3 };
    const r = await postJSON(srv.url, '/v1/chat/completions', { model: 'llama3', messages: [{ role: 'user', content: 'hi' }], ...bias });
    assert.equal(r.json.choices[0].finish_reason, 'stop');
    assert.equal(r.json.choices[0].message.content, '');
    assert.equal(r.json.usage.completion_tokens, 0);
    // completions have no turns: there the token is text like any other
    const c = await postJSON(srv.url, '/v1/completions', { model: 'llama3', prompt: 'hi', ...bias });
    assert.equal(c.json.choices[0].finish_reason, 'length');
    assert.equal(c.json.usage.completion_tokens, 3);
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

// Helpers for the integration tests: start the real `autoglm serve` on a free
// loopback port, talk raw HTTP over sockets, and read SSE streams.
//
// Environment: AUTOGLM_BIN (the binary) and AUTOGLM_FIXTURES (build/fixtures),
// both set by scripts/run-tests; defaults suit a run from the repository root.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';

export const BIN = process.env.AUTOGLM_BIN || path.resolve('build/bin/autoglm');
export const FIXTURES = process.env.AUTOGLM_FIXTURES || path.resolve('build/fixtures');
export const MODEL = path.join(FIXTURES, 'llama2.gguf');
export const MODEL_NAME = 'llama2';
export const EOS = 2; // the llama2 fixture's end-of-text id; banning it makes generations run to max_tokens

// Start a server and resolve once it says it is ready.  stop() sends SIGTERM and resolves with the exit code.
export function startServer(args = [], { model = MODEL, waitReady = true } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ['serve', '--model', model, '--port', '0', '--threads', '1', ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    let port = 0, scheme = 'http';
    const exited = new Promise((res) => proc.on('exit', (code, signal) => res(code ?? signal)));
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 20000);
    proc.stderr.on('data', (d) => {
      log += d;
      const m = /listening on (https?):\/\/[^:]+:(\d+)/.exec(log);
      if (m) scheme = m[1], port = Number(m[2]);
      if (port && (!waitReady || /ready:/.test(log))) {
        clearTimeout(timer);
        resolve({
          proc, port, url: `${scheme}://127.0.0.1:${port}`, exited,
          log: () => log,
          stop: async () => { proc.kill('SIGTERM'); return exited; },
        });
      }
    });
    proc.on('exit', (code) => { clearTimeout(timer); if (!port) reject(new Error(`server exited ${code}:\n${log}`)); });
  });
}

// Send raw bytes (a string or an array of pieces sent delay ms apart); resolve with everything read until the
// peer closes or idle ms pass without data.
export function raw(port, pieces, { idle = 1500, delay = 0 } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let out = Buffer.alloc(0);
    let timer;
    const finish = () => { clearTimeout(timer); s.destroy(); resolve(out.toString('latin1')); };
    const arm = () => { clearTimeout(timer); timer = setTimeout(finish, idle); };
    s.on('data', (d) => { out = Buffer.concat([out, d]); arm(); });
    s.on('close', finish);
    s.on('error', finish);
    s.on('connect', async () => {
      arm();
      for (const p of Array.isArray(pieces) ? pieces : [pieces]) {
        if (s.destroyed) break;
        s.write(p);
        if (delay) await new Promise((r) => setTimeout(r, delay));
      }
    });
  });
}

// Split a raw reply into responses: [{status, headers, body}], handling Content-Length and chunked bodies.
export function parseResponses(text) {
  const res = [];
  let at = 0;
  while (at < text.length) {
    const end = text.indexOf('\r\n\r\n', at);
    if (end < 0) break;
    const lines = text.slice(at, end).split('\r\n');
    const status = Number(lines[0].split(' ')[1]);
    const headers = {};
    for (const l of lines.slice(1)) { const i = l.indexOf(':'); headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim(); }
    at = end + 4;
    let body = '';
    if (status === 100) { res.push({ status, headers, body }); continue; }
    if (headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const nl = text.indexOf('\r\n', at);
        if (nl < 0) { at = text.length; break; }
        const n = parseInt(text.slice(at, nl), 16);
        at = nl + 2;
        if (!n) { at += 2; break; }
        body += text.slice(at, at + n);
        at += n + 2;
      }
    } else {
      const n = Number(headers['content-length'] || 0);
      body = text.slice(at, at + n);
      at += n;
    }
    res.push({ status, headers, body: Buffer.from(body, 'latin1').toString('utf8') });
  }
  return res;
}

export async function postJSON(url, route, body, headers = {}) {
  const r = await fetch(url + route, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* left null: the test says what it expected */ }
  return { status: r.status, headers: r.headers, json, text };
}

// The data payloads of an SSE body, in order ("[DONE]" included as a string).
export function sseEvents(body) {
  return body.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => {
    const d = e.slice(6);
    return d === '[DONE]' ? d : JSON.parse(d);
  });
}

export async function health(url) {
  return (await fetch(url + '/health')).json();
}

export async function waitFor(pred, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
}

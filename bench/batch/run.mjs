// The Batch API's cost to interactive traffic, and what it gets done in the capacity left over.
//
// One server (--batch-workers W) with a real redis-server (appendonly yes, everysec).  In each round:
//   A. interactive alone: N streamed chat requests, one at a time with a pause between them (so the engine
//      has idle time), each timed from send to its first token (TTFT);
//   B. the same N requests while a batch of B requests runs (submitted through /v1/files and /v1/batches
//      before the phase, cancelled after it): TTFT again, and the batch's requests completed meanwhile;
//   C. the batch alone for S seconds: its throughput in idle capacity (requests/s, output tokens/s).
// A and B alternate order by round; medians of the per-round p50/p99 are printed as a table.  Not a test.
//
// usage: node bench/batch/run.mjs AUTOGLM MODEL.gguf [ROUNDS]
// env: N (interactive requests per phase, 40), BATCH (requests in the batch, 1000), WORKERS (1),
//      MAX_TOKENS (32, interactive and batch), PAUSE_MS (150, between interactive requests), IDLE_S (10)
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { sseEvents } from '../lib/sse.mjs';

const [bin, model, roundsArg] = process.argv.slice(2);
if (!bin || !model) {
  console.error('usage: node bench/batch/run.mjs AUTOGLM MODEL.gguf [ROUNDS]');
  process.exit(2);
}
const ROUNDS = Number(roundsArg || 3), N = Number(process.env.N || 40), BATCH = Number(process.env.BATCH || 1000);
const WORKERS = process.env.WORKERS || '1', MAX_TOKENS = Number(process.env.MAX_TOKENS || 32);
const PAUSE_MS = Number(process.env.PAUSE_MS || 150), IDLE_S = Number(process.env.IDLE_S || 10);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'autoglm-bench-batch-'));
const redisPort = await freePort();
const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
  '--appendonly', 'yes', '--maxmemory-policy', 'noeviction'], { stdio: 'ignore' });
for (let i = 0; i < 100; i++) {
  try {
    if (execFileSync('redis-cli', ['-p', String(redisPort), 'ping'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .trim() === 'PONG') break;
  } catch {}
  await sleep(50);
}

// --log-level warn keeps the access log out of the measured path (and the "ready" line with it): the port is chosen
// here and readiness read from /health
const port = await freePort();
const proc = spawn(bin, ['serve', '--model', model, '--port', String(port), '--threads', '2', '--served-model-name', 'm',
  '--redis-url', `redis://127.0.0.1:${redisPort}`, '--batch-workers', WORKERS, '--log-level', 'warn'],
{ stdio: ['ignore', 'ignore', 'inherit'] });
const srv = { p: proc, url: `http://127.0.0.1:${port}` };
for (let i = 0;; i++) {
  try { if ((await fetch(`${srv.url}/health`)).ok) break; } catch {}
  if (i === 600) throw new Error('the server did not become ready');
  await sleep(50);
}
const done = () => { srv.p.kill('SIGKILL'); redis.kill('SIGKILL'); fs.rmSync(dir, { recursive: true, force: true }); };
process.on('exit', done);

const api = async (route, init = {}) => {
  const r = await fetch(`${srv.url}${route}`, init);
  if (!r.ok) throw new Error(`${route}: ${r.status} ${await r.text()}`);
  return r.json();
};
const words = 'the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches'.split(' ');
const prompt = (i, n = 48) => Array.from({ length: n }, (_, k) => words[(i * 7 + k * 3) % words.length]).join(' ');

async function ttft(i) {
  const t0 = performance.now();
  const r = await fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: `${i}: ${prompt(i)}` }], max_tokens: MAX_TOKENS,
      temperature: 0, ignore_eos: true, stream: true }) });
  let first = 0;
  for await (const j of sseEvents(r.body)) if (!first && j.choices?.[0]?.delta?.content) first = performance.now();
  return first - t0;
}

async function interactive(tag) {
  const t = [];
  for (let i = 0; i < N; i++) {
    t.push(await ttft(`${tag}-${i}`));
    await sleep(PAUSE_MS);
  }
  return t.sort((a, b) => a - b);
}
const pct = (s, p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function submitBatch(round) {
  const lines = [];
  for (let i = 0; i < BATCH; i++)
    lines.push(JSON.stringify({ custom_id: `r${round}-${i}`, method: 'POST', url: '/v1/chat/completions',
      body: { model: 'm', messages: [{ role: 'user', content: `batch ${round} ${i}: ${prompt(i + 1000)}` }], max_tokens: MAX_TOKENS,
        temperature: 0, ignore_eos: true } }));
  const fd = new FormData();
  fd.append('purpose', 'batch');
  fd.append('file', new Blob([lines.join('\n') + '\n']), 'bench.jsonl');
  const f = await api('/v1/files', { method: 'POST', body: fd });
  const b = await api('/v1/batches', { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' }) });
  while ((await api(`/v1/batches/${b.id}`)).request_counts.completed < 1) await sleep(20); // running
  return b.id;
}
const counts = async (id) => (await api(`/v1/batches/${id}`));

for (let i = 0; i < 5; i++) await ttft(`warm-${i}`); // the first requests pay for cold caches
const rows = { alone: { p50: [], p99: [] }, batch: { p50: [], p99: [] } };
const during = [], idleRps = [], idleTps = [];
for (let r = 0; r < ROUNDS; r++) {
  for (const phase of r % 2 ? ['batch', 'alone'] : ['alone', 'batch']) {
    if (phase === 'alone') {
      const t = await interactive(`a${r}`);
      rows.alone.p50.push(pct(t, 0.5)), rows.alone.p99.push(pct(t, 0.99));
      continue;
    }
    const id = await submitBatch(r);
    const c0 = await counts(id), t0 = performance.now();
    const t = await interactive(`b${r}`);
    const c1 = await counts(id), t1 = performance.now();
    rows.batch.p50.push(pct(t, 0.5)), rows.batch.p99.push(pct(t, 0.99));
    during.push((c1.request_counts.completed - c0.request_counts.completed) / ((t1 - t0) / 1000));
    await sleep(IDLE_S * 1000); // C: the batch alone
    const c2 = await counts(id), t2 = performance.now();
    idleRps.push((c2.request_counts.completed - c1.request_counts.completed) / ((t2 - t1) / 1000));
    idleTps.push((c2.usage.output_tokens - c1.usage.output_tokens) / ((t2 - t1) / 1000));
    await api(`/v1/batches/${id}/cancel`, { method: 'POST' });
    while ((await counts(id)).status !== 'cancelled') await sleep(50);
  }
}

const f = (v) => v.toFixed(1);
console.log(`model ${path.basename(model)}, --batch-workers ${WORKERS}, ${ROUNDS} rounds; interactive: ${N} streamed requests ` +
  `(~${prompt(0).split(' ').length}-word prompt, ${MAX_TOKENS} tokens) ${PAUSE_MS} ms apart; batch: ${BATCH} requests of ${MAX_TOKENS} tokens`);
console.log('| interactive TTFT, ms | alone | with the batch running | ratio |');
console.log('|---|--:|--:|--:|');
for (const k of ['p50', 'p99'])
  console.log(`| ${k} | ${f(median(rows.alone[k]))} | ${f(median(rows.batch[k]))} | ${(median(rows.batch[k]) / median(rows.alone[k])).toFixed(2)}x |`);
console.log(`\n| the batch | requests/s | output tokens/s |\n|---|--:|--:|`);
console.log(`| beside the interactive requests | ${f(median(during))} | ${f(median(during) * MAX_TOKENS)} |`);
console.log(`| alone (idle capacity, ${IDLE_S} s) | ${f(median(idleRps))} | ${f(median(idleTps))} |`);
process.exit(0);

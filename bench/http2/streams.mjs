// bench/http2/streams.mjs BASE_URL: N (100) concurrent streamed completions, HTTP/1.1 over N keep-alive
// connections and HTTP/2 over one connection, side by side in one run (ROUNDS alternating rounds, 3).
// Prints TTFT and end-to-end p50/p99 over all rounds, and the server's CPU seconds per request from
// process_cpu_seconds_total.  Model name "bench" (bench/http2/run serves it so).
import http from 'node:http';
import http2 from 'node:http2';

const base = process.argv[2];
const N = Number(process.env.STREAMS_N || 100), rounds = Number(process.env.ROUNDS || 3), tokens = 32;
// sampled without a seed, so never answered from the response cache: every request generates
const body = (i) => JSON.stringify({ model: 'bench', prompt: `stream ${i} of the bench`, max_tokens: tokens,
  stream: true, ignore_eos: true, temperature: 0.8 });
const cpu = async () => Number(/^process_cpu_seconds_total (\S+)$/m.exec(await (await fetch(base + '/metrics')).text())[1]);
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };

function viaH1(agent, i) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = 0;
    const req = http.request(base + '/v1/completions', { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
      res.on('data', () => { if (!first) first = performance.now(); });
      res.on('end', () => resolve([first - t0, performance.now() - t0]));
    });
    req.on('error', reject);
    req.end(body(i));
  });
}
function viaH2(session, i) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = 0;
    const req = session.request({ ':method': 'POST', ':path': '/v1/completions', 'content-type': 'application/json' });
    req.on('data', () => { if (!first) first = performance.now(); });
    req.on('end', () => resolve([first - t0, performance.now() - t0]));
    req.on('error', reject);
    req.end(body(i));
  });
}

const res = { h1: { ttft: [], e2e: [], cpu: 0 }, h2: { ttft: [], e2e: [], cpu: 0 } };
for (let r = 0; r < rounds; r++) {
  for (const kind of ['h1', 'h2']) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: N });
    const session = kind === 'h2' ? http2.connect(base) : null;
    if (session) await new Promise((ok) => session.once('connect', ok));
    const c0 = await cpu();
    const out = await Promise.all(Array.from({ length: N }, (_, i) => (kind === 'h1' ? viaH1(agent, i) : viaH2(session, i))));
    res[kind].cpu += (await cpu()) - c0;
    for (const [t, e] of out) res[kind].ttft.push(t), res[kind].e2e.push(e);
    agent.destroy();
    session?.close();
  }
}
console.log(`${N} concurrent streamed completions (${tokens} tokens each), ${rounds} alternating rounds; server CPU from process_cpu_seconds_total`);
console.log('| protocol | connections | TTFT p50 ms | TTFT p99 ms | e2e p50 ms | e2e p99 ms | server CPU ms / request |');
console.log('|---|--:|--:|--:|--:|--:|--:|');
for (const [kind, label, conns] of [['h1', 'HTTP/1.1', N], ['h2', 'HTTP/2', 1]]) {
  const x = res[kind];
  console.log(`| ${label} | ${conns} | ${pct(x.ttft, 0.5).toFixed(1)} | ${pct(x.ttft, 0.99).toFixed(1)} | ${pct(x.e2e, 0.5).toFixed(1)} | ${pct(x.e2e, 0.99).toFixed(1)} | ${(1000 * x.cpu / (N * rounds)).toFixed(2)} |`);
}

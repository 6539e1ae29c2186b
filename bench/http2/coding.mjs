// bench/http2/coding.mjs BASE_URL: a ~20 KB completion answered from the response cache, REQS_CODING (2000) times in
// each of identity, gzip and zstd (Accept-Encoding), one after another over one keep-alive connection:
// bytes on the wire, the ratio to identity, and the server's CPU per request (process_cpu_seconds_total).
// The coded tail is made on the first hit in each coding and kept with the entry, so the rows are what a
// hit costs.  Model name "bench".
import http from 'node:http';

const base = process.argv[2];
const reqs = Number(process.env.REQS_CODING || 2000); // enough for the 10 ms ticks of process_cpu_seconds_total
const body = JSON.stringify({ model: 'bench', messages: [{ role: 'user', content: 'Tell the story of the flood.' }],
  max_tokens: 1200, n: 4, temperature: 0.7, seed: 7, ignore_eos: true }); // four different choices of ~5 KB (seeded:
// cacheable): about 20 KB of JSON
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const cpu = async () => Number(/^process_cpu_seconds_total (\S+)$/m.exec(await (await fetch(base + '/metrics')).text())[1]);
function once(ae) {
  return new Promise((resolve, reject) => {
    const headers = { 'content-type': 'application/json', ...(ae ? { 'accept-encoding': ae } : {}) };
    const req = http.request(base + '/v1/chat/completions', { method: 'POST', agent, headers }, (res) => {
      let n = 0;
      res.on('data', (d) => { n += d.length; });
      res.on('end', () => resolve({ bytes: n, coding: res.headers['content-encoding'] || 'identity', cache: res.headers['x-cache'] }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
await once(null); // generate and store it
const rows = [];
for (const ae of [null, 'gzip', 'zstd']) {
  const first = await once(ae); // the hit that codes the tail
  const c0 = await cpu();
  for (let i = 0; i < reqs; i++) await once(ae);
  rows.push({ ae: ae || 'identity', ...first, cpu: ((await cpu()) - c0) / reqs });
}
console.log(`a ${rows[0].bytes}-byte chat completion from the response cache (X-Cache: ${rows[0].cache}), ${reqs} requests per coding`);
console.log('| Accept-Encoding | Content-Encoding | bytes | ratio to identity | saved | server CPU µs / request |');
console.log('|---|---|--:|--:|--:|--:|');
for (const r of rows)
  console.log(`| ${r.ae} | ${r.coding} | ${r.bytes} | ${(r.bytes / rows[0].bytes).toFixed(3)} | ${(100 * (1 - r.bytes / rows[0].bytes)).toFixed(0)}% | ${(1e6 * r.cpu).toFixed(0)} |`);
agent.destroy();

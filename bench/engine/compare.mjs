// bench/engine/compare.mjs - autoglm against llama.cpp on the same GGUF files,
// interleaved: each round runs bench_engine, then llama-bench (tg64 = decode
// 64 tokens, pp512 = prefill 512 tokens, the same work bench_engine times), so
// both see the same minutes of a noisy machine.  Prints per model and thread
// count the median tokens/s of each over the rounds and their ratio, plus our
// medians as fractions of the machine's ceilings (the best seen in any round).
// Each of our weight layouts (repacked at load, and in place with --no-repack)
// is a row of its own against the same llama.cpp figures.
// usage: node compare.mjs BENCH_ENGINE LLAMA_BENCH ROUNDS THREADS MODEL.gguf...
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

const [benchEngine, llamaBench, roundsArg, threadsArg, ...models] = process.argv.slice(2);
const rounds = Number(roundsArg);
const threads = threadsArg.split(/[ ,]+/).filter(Boolean).map(Number);
const dir = mkdtempSync(join(tmpdir(), 'ag-compare-'));
const ours = {}, peer = {}, ceil = {}, layouts = {};
const key = (model, t) => `${basename(model)}\t${t}`;
const push = (m, k, v) => (m[k] ??= []).push(v);

for (let r = 0; r < rounds; r++) {
  const json = join(dir, `ours-${r}.json`);
  execFileSync(benchEngine, ['--threads', threads.join(' '), '--json', json, ...models], { stdio: ['ignore', 'ignore', 'inherit'] });
  const o = JSON.parse(readFileSync(json, 'utf8'));
  for (const c of o.ceilings) {
    const e = (ceil[c.threads] ??= { bw: 0, peak: 0 });
    e.bw = Math.max(e.bw, c.triad_gbs);
    e.peak = Math.max(e.peak, c.peak_gflops);
  }
  for (const x of o.results) {
    const k = key(x.model, x.threads) + '\t' + x.layout;
    (layouts[key(x.model, x.threads)] ??= new Set()).add(x.layout);
    push(ours, k + '\tdecode', x.decode_tps);
    push(ours, k + '\tprefill', x.prefill_tps);
    push(ours, k + '\tbytes', x.weight_bytes);
    push(ours, k + '\tgflops_per_tps', x.prefill_gflops / x.prefill_tps);
  }
  const out = execFileSync(llamaBench, ['-m', models.join(','), '-t', threads.join(','), '-p', '512', '-n', '64', '-r', '3', '-o', 'json'],
    { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 1 << 24 }).toString();
  for (const x of JSON.parse(out)) {
    // llama-bench's avg_ts is a mean over its repetitions; take its best, as bench_engine does
    const best = Math.max(...x.samples_ts);
    push(peer, key(x.model_filename, x.n_threads) + (x.n_gen > 0 ? '\tdecode' : '\tprefill'), best);
  }
  process.stderr.write(`compare: round ${r + 1} of ${rounds} done\n`);
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const f1 = (x) => x.toFixed(1), pct = (x) => `${Math.round(100 * x)}%`;
console.log(`\nautoglm vs llama.cpp, interleaved, median of ${rounds} rounds (each figure a best of 3)`);
console.log('| model | threads | our layout | decode tok/s autoglm | llama.cpp | ratio | prefill tok/s autoglm | llama.cpp | ratio | decode % of bandwidth | prefill % of peak |');
console.log('|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|');
for (const m of models) for (const t of threads) for (const layout of layouts[key(m, t)]) {
  const k = key(m, t) + '\t' + layout, kp = key(m, t);
  const od = median(ours[k + '\tdecode']), pd = median(peer[kp + '\tdecode']);
  const op = median(ours[k + '\tprefill']), pp = median(peer[kp + '\tprefill']);
  const bw = ceil[t].bw * 1e9, peak = ceil[t].peak;
  const frac_d = od * median(ours[k + '\tbytes']) / bw, frac_p = op * median(ours[k + '\tgflops_per_tps']) / peak;
  console.log(`| ${basename(m)} | ${t} | ${layout} | ${f1(od)} | ${f1(pd)} | ${(od / pd).toFixed(2)}x | ${f1(op)} | ${f1(pp)} | ${(op / pp).toFixed(2)}x | ${pct(frac_d)} | ${pct(frac_p)} |`);
}
console.log(`\nceilings (best of all rounds): ${threads.map((t) => `${t} thread(s): triad ${f1(ceil[t].bw)} GB/s, FMA ${f1(ceil[t].peak)} GFLOP/s`).join('; ')}`);

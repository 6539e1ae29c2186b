// bench/engine/glm-vs-llama.mjs - what GLM's extras cost: a glm4 model (two
// more RMSNorms per layer, fused gate+up read as two row ranges, rotary on
// half of each head) against the Llama model of the same shape, both run by
// bench_engine in the same process each round, in alternating order, so
// both see the same minutes of a noisy machine.  Prints per pair and thread
// count the median decode and prefill tokens/s over the rounds and the ratio.
// usage: node glm-vs-llama.mjs BENCH_ENGINE ROUNDS THREADS LLAMA.gguf GLM.gguf [LLAMA.gguf GLM.gguf ...]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

const [benchEngine, roundsArg, threadsArg, ...models] = process.argv.slice(2);
const rounds = Number(roundsArg);
const threads = threadsArg.split(/[ ,]+/).filter(Boolean).map(Number);
if (!rounds || models.length % 2) throw new Error('usage: glm-vs-llama.mjs BENCH_ENGINE ROUNDS THREADS (LLAMA.gguf GLM.gguf)...');
const dir = mkdtempSync(join(tmpdir(), 'ag-glm-'));
const runs = {};
const key = (model, t, what) => `${basename(model)}\t${t}\t${what}`;

for (let r = 0; r < rounds; r++) {
  const json = join(dir, `round-${r}.json`);
  const order = r % 2 ? [...models].reverse() : models;
  execFileSync(benchEngine, ['--threads', threads.join(' '), '--json', json, ...order], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (const x of JSON.parse(readFileSync(json, 'utf8')).results) {
    (runs[key(x.model, x.threads, 'decode')] ??= []).push(x.decode_tps);
    (runs[key(x.model, x.threads, 'prefill')] ??= []).push(x.prefill_tps);
  }
  process.stderr.write(`glm-vs-llama: round ${r + 1} of ${rounds} done\n`);
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const f1 = (x) => x.toFixed(1);
console.log(`\nglm4 vs llama of the same shape, median of ${rounds} rounds (each figure a best of 3)`);
console.log('| llama model | glm4 model | threads | decode tok/s llama | glm4 | glm4/llama | prefill tok/s llama | glm4 | glm4/llama |');
console.log('|---|---|--:|--:|--:|--:|--:|--:|--:|');
for (let i = 0; i < models.length; i += 2) for (const t of threads) {
  const [l, g] = [models[i], models[i + 1]];
  const ld = median(runs[key(l, t, 'decode')]), gd = median(runs[key(g, t, 'decode')]);
  const lp = median(runs[key(l, t, 'prefill')]), gp = median(runs[key(g, t, 'prefill')]);
  console.log(`| ${basename(l)} | ${basename(g)} | ${t} | ${f1(ld)} | ${f1(gd)} | ${(gd / ld).toFixed(3)} | ${f1(lp)} | ${f1(gp)} | ${(gp / lp).toFixed(3)} |`);
}

// The table of bench/tokenizer: ours beside the JavaScript reference and
// tiktoken, from the JSON the two benches wrote.  usage: node report.mjs OURS.json JS.json
import { readFileSync } from "node:fs";
const ours = JSON.parse(readFileSync(process.argv[2], "utf8"));
const js = JSON.parse(readFileSync(process.argv[3], "utf8"));
const f = (x) => (x === undefined ? "-" : x.toFixed(1));
console.log(`bench_tokenizer: encode throughput, ${(ours.bytes / 1e6).toFixed(1)} MB in ${ours.lines} lines (one encode per line); autoglm: best of 3 passes, JS and tiktoken: 1 pass, each after a warm-up pass`);
console.log("| vocabulary | autoglm MB/s | JS reference MB/s | tiktoken MB/s per line | tiktoken MB/s one call | vs JS | vs tiktoken per line | vs tiktoken one call | same token count |");
console.log("|------------|-------------:|------------------:|-----------------------:|-----------------------:|------:|---------------------:|---------------------:|:----------------:|");
for (const [name, o] of Object.entries(ours.ours)) {
  const r = js.js[name], t = js.tiktoken[name];
  const same = [r, t].filter(Boolean).every((p) => p.tokens === o.tokens) ? "yes" : "NO";
  const x = (a, b) => (a && b ? (a / b).toFixed(2) + "x" : "-");
  console.log(`| ${name} | ${f(o.mbps)} | ${f(r?.mbps)} | ${f(t?.mbps)} | ${f(t?.one_call_mbps)} | ${x(o.mbps, r?.mbps)} | ${x(o.mbps, t?.mbps)} | ${x(o.mbps, t?.one_call_mbps)} | ${same} |`);
}

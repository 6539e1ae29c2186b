// A deterministic ~10 MB mixed corpus, one text per line, for bench/tokenizer:
// lines drawn (fixed seed) from tests/fixtures/tokenizer-corpus.json without its
// special-token texts (tiktoken refuses those by default) and its 3000-character
// word (it would be most of the bytes), each line with a varying
// number so repeats are not identical.  usage: node make-corpus.mjs CORPUS.json OUT.txt
import { readFileSync, writeFileSync } from "node:fs";
const [corpusPath, outPath] = process.argv.slice(2);
const texts = JSON.parse(readFileSync(corpusPath, "utf8"))
  .filter((t) => t.length > 0 && t.length < 1000 && !t.includes("<|") && !t.includes("<s>"))
  .map((t) => t.replaceAll("\r", " ").replaceAll("\n", " "));
let seed = 12345n;
const next = () => { seed = (seed * 6364136223846793005n + 1442695040888963407n) & 0xffffffffffffffffn; return Number(seed >> 33n); };
const lines = [];
let bytes = 0;
while (bytes < 10 * 1024 * 1024) {
  const line = texts[next() % texts.length] + " " + (next() % 100000);
  lines.push(line);
  bytes += Buffer.byteLength(line) + 1;
}
writeFileSync(outPath, lines.join("\n") + "\n");

// End-to-end cost of constrained decoding through the API: decode tokens/s (streamed: from the first token's event
// to the last, so the prompt and the connection are left out) of the same model answering
//   - free text (greedy, ignore_eos, a fixed number of tokens), on this build and, when given, on a baseline
//     binary (a build without grammar support): the unconstrained path must not slow down;
//   - a json_schema answer of about the same length, first with a new schema (every state's mask is built
//     then) and again with the same schema (masks reused: the server keeps grammars by text);
// rounds interleaved, medians printed as a table.  Not a test: speed belongs here.
//
// usage: node bench/grammar/e2e.mjs AUTOGLM MODEL.gguf [BASELINE_AUTOGLM] [ROUNDS]
import { spawn } from 'node:child_process';
import { sseEvents } from '../lib/sse.mjs';

const [bin, model, baseline, roundsArg] = process.argv.slice(2);
if (!bin || !model) {
  console.error('usage: node bench/grammar/e2e.mjs AUTOGLM MODEL.gguf [BASELINE_AUTOGLM] [ROUNDS]');
  process.exit(2);
}
const ROUNDS = Number(roundsArg || 5);
const TOKENS = 128;

function start(b) {
  return new Promise((resolve, reject) => {
    const p = spawn(b, ['serve', '--model', model, '--port', '0', '--threads', '2', '--served-model-name', 'm'],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    p.stderr.on('data', (d) => {
      log += d;
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(log);
      if (m && /ready:/.test(log)) resolve({ p, url: `http://127.0.0.1:${m[1]}` });
    });
    p.on('exit', (c) => reject(new Error(`server exited ${c}: ${log}`)));
  });
}

// Streamed, so that decoding is timed apart from the prompt and the connection: from the first token's event
// to the last one's, over the tokens between them.
async function post(url, body) {
  const r = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }) });
  if (!r.ok) throw new Error(await r.text());
  let content = '', tokens = 0, finish = null, first = 0, last = 0;
  for await (const j of sseEvents(r.body)) {
    if (j.usage) tokens = j.usage.completion_tokens;
    const c = j.choices?.[0];
    if (c?.delta?.content) {
      const now = performance.now();
      if (!first) first = now;
      last = now;
      content += c.delta.content;
    }
    if (c?.finish_reason) finish = c.finish_reason;
  }
  return { tokens, s: (last - first) / 1000, rate: (tokens - 1) / ((last - first) / 1000), finish, content };
}

const messages = [{ role: 'user', content: 'List some numbers.' }];
const free = { model: 'm', messages, max_tokens: TOKENS, temperature: 0, ignore_eos: true };
// a long answer of known shape: 20 integers in 0..999 and a word, compact or not as the model likes
const schema = (n) => ({ type: 'object', properties: { [`numbers${n}`]: { type: 'array', items: { type: 'integer',
  minimum: 0, maximum: 999 }, minItems: 20, maxItems: 20 }, word: { enum: ['done', 'over'] } },
  required: [`numbers${n}`, 'word'], additionalProperties: false });
const constrained = (n) => ({ model: 'm', messages, max_tokens: 256, temperature: 0,
  response_format: { type: 'json_schema', json_schema: { name: 'n', schema: schema(n) } } });

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const rows = { free: [], freeBase: [], first: [], again: [] };
const ours = await start(bin);
const base = baseline ? await start(baseline) : null;
await post(ours.url, free); // warm up both
if (base) await post(base.url, free);
for (let r = 0; r < ROUNDS; r++) {
  const a = await post(ours.url, free);
  rows.free.push(a.rate);
  if (base) {
    const b = await post(base.url, free);
    rows.freeBase.push(b.rate);
  }
  const c1 = await post(ours.url, constrained(r)); // a schema not seen before
  if (c1.finish === 'stop') JSON.parse(c1.content); // an answer cut by max_tokens is a prefix; tok/s counts either way
  rows.first.push(c1.rate);
  const c2 = await post(ours.url, constrained(r)); // the same schema again
  rows.again.push(c2.rate);
}
ours.p.kill('SIGTERM');
if (base) base.p.kill('SIGTERM');
console.log(`model ${model}, ${ROUNDS} rounds interleaved, medians, 2 threads, greedy; decode tok/s from the first token's event to the last`);
console.log('| request | tok/s | vs free text |');
console.log('|---|--:|--:|');
const f = median(rows.free);
if (base) console.log(`| free text, baseline binary | ${median(rows.freeBase).toFixed(1)} | ${(median(rows.freeBase) / f).toFixed(3)}× |`);
console.log(`| free text | ${f.toFixed(1)} | 1.000× |`);
console.log(`| json_schema, new schema | ${median(rows.first).toFixed(1)} | ${(median(rows.first) / f).toFixed(3)}× |`);
console.log(`| json_schema, same schema again | ${median(rows.again).toFixed(1)} | ${(median(rows.again) / f).toFixed(3)}× |`);

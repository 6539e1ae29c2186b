// bench/cluster/conversations.mjs: the multi-turn workload of bench/cluster/run, against one balancer.
// USERS conversations run at once, each TURNS turns in sequence: a long system prompt of its own (so a
// conversation's prefix is cached only where its earlier turns ran), then the history so far and a new
// question. Each turn is a streamed chat request at temperature 0 with X-Session-ID: the user, so that session
// routing can keep it on one replica.
// Prints one JSON line: the turns' TTFT (ms) and the count of failed requests.
// usage: node conversations.mjs BALANCER_URL MODEL USERS TURNS MAX_TOKENS SEED
import { sseEvents } from '../lib/sse.mjs';
const [url, model, users, turns, maxTokens, seed] = process.argv.slice(2);
const U = Number(users), T = Number(turns), M = Number(maxTokens);

// deterministic words, so every run and policy sends the same conversations
let s = Number(seed) >>> 0;
const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 4294967296);
const WORDS = ('and the of to in that he shall unto for his i a lord they be is him not them it with all thou ' +
  'thy was god which my me said but ye their have will thee from as are when this out were upon man by you israel ' +
  'king son up there hath then people came had house into on her before one also even land did every day').split(' ');
const words = (n) => Array.from({ length: n }, () => WORDS[Math.floor(rnd() * WORDS.length)]).join(' ');

const convs = Array.from({ length: U }, (_, u) => ({
  user: `user-${seed}-${u}`,
  system: `Conversation ${u}. ` + words(140),
  questions: Array.from({ length: T }, () => words(12) + '?'),
}));

async function turn(c, t, history) {
  const messages = [{ role: 'system', content: c.system }, ...history, { role: 'user', content: c.questions[t] }];
  const t0 = performance.now();
  const r = await fetch(url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-session-id': c.user },
    body: JSON.stringify({ model, messages, max_tokens: M, temperature: 0, stream: true }),
  });
  if (!r.ok) { await r.text(); return { ok: false }; }
  let ttft = null, text = '';
  for await (const d of sseEvents(r.body)) {
    const piece = d.choices?.[0]?.delta?.content;
    if (piece) { if (ttft === null) ttft = performance.now() - t0; text += piece; }
  }
  return { ok: ttft !== null, ttft, text, messages };
}

const ttfts = [];
let failed = 0;
await Promise.all(convs.map(async (c) => {
  const history = [];
  for (let t = 0; t < T; t++) {
    const r = await turn(c, t, history);
    if (!r.ok) { failed++; return; }
    ttfts.push(r.ttft);
    history.push({ role: 'user', content: c.questions[t] }, { role: 'assistant', content: r.text });
  }
}));
console.log(JSON.stringify({ ttfts, failed }));

// The OpenAI endpoints over the real binary: shapes, streaming, validation errors,
// the HTTP/1.1 protocol cases and the malformed-request corpus.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  startServer, raw, parseResponses, postJSON, sseEvents, health, MODEL_NAME, EOS,
} from './server.mjs';

let srv;
const CTX = 128;
before(async () => {
  srv = await startServer(['--ctx', String(CTX), '--max-body-bytes', '65536', '--max-header-bytes', '4096',
    '--max-headers', '20', '--max-request-line', '1024', '--read-timeout', '800ms']);
});
after(async () => {
  const code = await srv.stop();
  assert.equal(code, 0, srv.log());
});

const curl = (...args) => execFileSync('curl', ['-s', '--max-time', '20', ...args], { encoding: 'utf8' });
const chat = (extra = {}) => ({ model: MODEL_NAME, messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 8, ...extra });

test('curl: GET /health answers 200 {"status":"ok"}', () => {
  const out = curl('-i', `${srv.url}/health`);
  assert.match(out, /^HTTP\/1.1 200 OK/);
  assert.equal(JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4)).status, 'ok');
});

test('curl: GET /v1/models lists the served model; /v1/models/{id} finds it or 404s', () => {
  const list = JSON.parse(curl(`${srv.url}/v1/models`));
  assert.equal(list.object, 'list');
  assert.deepEqual(list.data.map((m) => m.id), [MODEL_NAME]);
  assert.equal(list.data[0].object, 'model');
  assert.equal(list.data[0].max_model_len, CTX);
  assert.equal(JSON.parse(curl(`${srv.url}/v1/models/${MODEL_NAME}`)).id, MODEL_NAME);
  assert.match(curl('-o', '/dev/null', '-w', '%{http_code}', `${srv.url}/v1/models/nope`), /404/);
});

test('curl: non-streamed chat completion has OpenAI\'s shape', () => {
  const r = JSON.parse(curl('-H', 'content-type: application/json', '-d', JSON.stringify(chat({ seed: 3 })),
    `${srv.url}/v1/chat/completions`));
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, MODEL_NAME);
  assert.equal(typeof r.created, 'number');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].index, 0);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.ok(r.usage.completion_tokens <= 8 && r.usage.prompt_tokens > 0);
});

test('curl: streamed chat sends the role first, text deltas, finish, usage, [DONE]; same text as unstreamed', () => {
  const body = chat({ seed: 5, max_tokens: 12, logit_bias: { [EOS]: -100 } });
  const whole = JSON.parse(curl('-d', JSON.stringify(body), `${srv.url}/v1/chat/completions`));
  const out = curl('-N', '-d', JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
    `${srv.url}/v1/chat/completions`);
  const ev = sseEvents(out);
  assert.equal(ev.at(-1), '[DONE]');
  assert.equal(ev[0].object, 'chat.completion.chunk');
  assert.deepEqual(ev[0].choices[0].delta, { role: 'assistant', content: '' });
  const usage = ev.at(-2);
  assert.deepEqual(usage.choices, []);
  assert.equal(usage.usage.completion_tokens, 12);
  const fin = ev.at(-3);
  assert.equal(fin.choices[0].finish_reason, 'length');
  const text = ev.slice(1, -3).map((e) => e.choices[0].delta.content).join('');
  assert.equal(text, whole.choices[0].message.content);
  assert.ok(ev.slice(0, -2).every((e) => e.usage === null && e.id === ev[0].id));
});

test('streamed completions without include_usage carry no usage', async () => {
  const r = await fetch(`${srv.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ model: MODEL_NAME, prompt: 'abc', max_tokens: 4, stream: true }) });
  assert.equal(r.headers.get('content-type'), 'text/event-stream');
  const ev = sseEvents(await r.text());
  assert.equal(ev.at(-1), '[DONE]');
  assert.ok(ev.slice(0, -1).every((e) => e.object === 'text_completion' && !('usage' in e)));
  assert.ok(['stop', 'length'].includes(ev.at(-2).choices[0].finish_reason));
});

test('completions: prompt as string, strings, ids and arrays of ids; n choices per prompt', async () => {
  const ids = (await postJSON(srv.url, '/tokenize', { prompt: 'one two' })).json.tokens;
  for (const [prompt, nPrompts] of [['one two', 1], [['one', 'two', 'three'], 3], [ids, 1], [[ids, ids.slice(0, 2)], 2]]) {
    const r = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt, max_tokens: 3, n: 2, seed: 1 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'text_completion');
    assert.match(r.json.id, /^cmpl-/);
    assert.deepEqual(r.json.choices.map((c) => c.index), [...Array(2 * nPrompts).keys()]);
  }
  // the same prompt as text and as its ids gives the same greedy text
  const a = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: 'one two', max_tokens: 5, temperature: 0 });
  const b = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: ids, max_tokens: 5, temperature: 0 });
  assert.equal(a.json.choices[0].text, b.json.choices[0].text);
  assert.equal(a.json.usage.prompt_tokens, ids.length);
});

test('seeded sampling is reproducible; n > 1 choices differ', async () => {
  const body = { model: MODEL_NAME, prompt: 'x', max_tokens: 6, seed: 42, n: 3, logit_bias: { [EOS]: -100 } };
  const a = (await postJSON(srv.url, '/v1/completions', body)).json.choices.map((c) => c.text);
  const b = (await postJSON(srv.url, '/v1/completions', body)).json.choices.map((c) => c.text);
  assert.deepEqual(a, b);
  assert.equal(new Set(a).size, 3);
});

test('logprobs: chat content entries and completions arrays', async () => {
  const c = await postJSON(srv.url, '/v1/chat/completions', chat({ logprobs: true, top_logprobs: 3, max_tokens: 4, logit_bias: { [EOS]: -100 } }));
  const content = c.json.choices[0].logprobs.content;
  assert.equal(content.length, 4);
  for (const e of content) {
    assert.ok(e.logprob <= 0 && Array.isArray(e.bytes) && e.top_logprobs.length === 3);
    assert.ok(e.top_logprobs[0].logprob >= e.top_logprobs[2].logprob);
    assert.ok(e.logprob <= e.top_logprobs[0].logprob + 1e-6);
  }
  const p = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: 'a', max_tokens: 3, logprobs: 2, temperature: 0 });
  const lp = p.json.choices[0].logprobs;
  assert.equal(lp.tokens.length, 3);
  assert.equal(lp.token_logprobs.length, 3);
  assert.equal(lp.text_offset[0], 0);
  // greedy: the chosen token is the most likely one
  lp.top_logprobs.forEach((top, i) => assert.ok(Math.abs(Math.max(...Object.values(top)) - lp.token_logprobs[i]) < 1e-6));
});

test('stop strings end the text before the stop string', async () => {
  const free = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: 'q', max_tokens: 12, temperature: 0, logit_bias: { [EOS]: -100 } });
  const text = free.json.choices[0].text;
  const stop = text.slice(3, 5);
  const r = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: 'q', max_tokens: 12, temperature: 0, stop: [stop], logit_bias: { [EOS]: -100 } });
  assert.equal(r.json.choices[0].finish_reason, 'stop');
  assert.equal(r.json.choices[0].text, text.slice(0, text.indexOf(stop)));
});

test('tokenize and detokenize round-trip', async () => {
  const t = await postJSON(srv.url, '/tokenize', { prompt: 'Hello world', add_special: false });
  assert.equal(t.status, 200);
  assert.equal(t.json.count, t.json.tokens.length);
  assert.equal(t.json.max_model_len, CTX);
  const d = await postJSON(srv.url, '/detokenize', { tokens: t.json.tokens });
  assert.equal(d.json.prompt.trim(), 'Hello world');
  const m = await postJSON(srv.url, '/tokenize', { messages: [{ role: 'user', content: 'Hi' }] });
  assert.ok(m.json.count > 2);
});

test('unknown route is 404 and wrong method 405, both OpenAI error JSON', async () => {
  let r = await fetch(`${srv.url}/v1/nothing`);
  assert.equal(r.status, 404);
  let e = (await r.json()).error;
  assert.equal(typeof e.message, 'string');
  assert.ok('type' in e && 'param' in e && 'code' in e);
  r = await fetch(`${srv.url}/v1/chat/completions`);
  assert.equal(r.status, 405);
  assert.equal(r.headers.get('allow'), 'POST');
  e = (await r.json()).error;
  assert.equal(e.code, 'method_not_allowed');
});

test('unknown model is 404 model_not_found', async () => {
  const r = await postJSON(srv.url, '/v1/chat/completions', chat({ model: 'gpt-4o' }));
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, 'model_not_found');
  assert.equal(r.json.error.param, 'model');
});

test('a known field of the wrong type or out of range is 400 naming the param', async () => {
  const cases = [
    ['temperature', { temperature: 'hot' }], ['temperature', { temperature: 2.5 }], ['top_p', { top_p: 1.5 }],
    ['top_k', { top_k: -2 }], ['min_p', { min_p: 2 }], ['n', { n: 0 }], ['max_tokens', { max_tokens: 0 }],
    ['max_completion_tokens', { max_completion_tokens: 'x' }], ['stop', { stop: ['a', 'b', 'c', 'd', 'e'] }],
    ['stop', { stop: 7 }], ['logit_bias', { logit_bias: { abc: 1 } }], ['logit_bias', { logit_bias: { 5: 101 } }],
    ['messages', { messages: 'hi' }], ['messages', { messages: [] }], ['messages', { messages: [{ role: 'robot', content: 'x' }] }],
    ['messages', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }],
    ['stream', { stream: 'yes' }], ['stream_options', { stream_options: { include_usage: true } }],
    ['seed', { seed: 1.5 }], ['presence_penalty', { presence_penalty: 3 }], ['frequency_penalty', { frequency_penalty: -3 }],
    ['repetition_penalty', { repetition_penalty: 0 }], ['top_logprobs', { top_logprobs: 2 }],
    ['top_logprobs', { logprobs: true, top_logprobs: 21 }], ['logprobs', { logprobs: 3 }], ['model', { model: 42 }],
    ['priority', { priority: 'high' }], ['user', { user: 5 }],
  ];
  for (const [param, extra] of cases) {
    const r = await postJSON(srv.url, '/v1/chat/completions', chat(extra));
    assert.equal(r.status, 400, `${JSON.stringify(extra)}: ${r.text}`);
    assert.equal(r.json.error.param, param, JSON.stringify(extra));
    assert.equal(r.json.error.type, 'invalid_request_error');
  }
  const p = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: { a: 1 } });
  assert.equal(p.status, 400);
  assert.equal(p.json.error.param, 'prompt');
  const ids = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: [1, 99999999] });
  assert.equal(ids.json.error.param, 'prompt');
});

test('unknown fields are ignored; content as an array of text parts works', async () => {
  const r = await postJSON(srv.url, '/v1/chat/completions', chat({
    some_future_field: { x: 1 }, user: 'u1', priority: 0,
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: 'Hi' }, { type: 'text', text: ' there' }] }],
  }));
  assert.equal(r.status, 200, r.text);
});

test('context length exceeded is 400 context_length_exceeded naming the numbers', async () => {
  const long = 'word '.repeat(400);
  let r = await postJSON(srv.url, '/v1/chat/completions', chat({ messages: [{ role: 'user', content: long }] }));
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'context_length_exceeded');
  assert.match(r.json.error.message, new RegExp(`maximum context length is ${CTX} tokens.*your request has \\d+ input tokens`));
  r = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: 'hi', max_tokens: 500 });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.param, 'max_tokens');
  assert.match(r.json.error.message, /too large: 500.*maximum context length is 128 tokens/);
});

test('keep-alive with pipelining: three requests in one write, three responses in order', async () => {
  const body = JSON.stringify({ prompt: 'hi' });
  const reqs = 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n' +
    `POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
    'GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n';
  const res = parseResponses(await raw(srv.port, reqs, { idle: 500 }));
  assert.deepEqual(res.map((r) => r.status), [200, 200, 200]);
  assert.equal(JSON.parse(res[0].body).status, 'ok');
  assert.ok(JSON.parse(res[1].body).tokens.length > 0);
  assert.equal(JSON.parse(res[2].body).object, 'list');
});

test('chunked request bodies are decoded', async () => {
  const body = JSON.stringify({ prompt: 'Hello world' });
  const a = body.slice(0, 7), b = body.slice(7);
  const req = `POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${a.length.toString(16)};ext=1\r\n${a}\r\n${b.length.toString(16)}\r\n${b}\r\n0\r\nX-Trailer: t\r\n\r\n`;
  const [r] = parseResponses(await raw(srv.port, [req.slice(0, 50), req.slice(50)], { idle: 500, delay: 50 }));
  assert.equal(r.status, 200);
  const want = await postJSON(srv.url, '/tokenize', { prompt: 'Hello world' });
  assert.deepEqual(JSON.parse(r.body).tokens, want.json.tokens);
});

test('Expect: 100-continue gets 100 before the body is sent', async () => {
  const body = JSON.stringify({ prompt: 'x' });
  const res = parseResponses(await raw(srv.port, [
    `POST /tokenize HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`, body,
  ], { idle: 500, delay: 200 }));
  assert.deepEqual(res.map((r) => r.status), [100, 200]);
});

test('HEAD gives the headers of GET without a body', async () => {
  const text = await raw(srv.port, 'HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match(text, /^HTTP\/1.1 200 OK\r\n/);
  assert.match(text, /Content-Length: \d+/);
  assert.ok(text.endsWith('\r\n\r\n'));
});

test('HTTP/1.0 without keep-alive is answered and closed', async () => {
  const text = await raw(srv.port, 'GET /health HTTP/1.0\r\n\r\n', { idle: 3000 });
  assert.match(text, /^HTTP\/1.1 200 OK\r\n[^]*Connection: close/);
});

// The malformed-request corpus: each is answered with its status and the server stays up.
const corpus = [
  ['garbage request line', 'HELLO\r\n\r\n', 400],
  ['HTTP/2.0 in an HTTP/1 request line', 'GET /health HTTP/2.0\r\nHost: x\r\n\r\n', 505],
  ['missing Host', 'GET /health HTTP/1.1\r\n\r\n', 400],
  ['request line over the limit', `GET /${'a'.repeat(2000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414],
  ['head over the limit', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(5000)}\r\n\r\n`, 431],
  ['too many headers', `GET /health HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 25 }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n`, 431],
  ['obs-fold', 'GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n', 400],
  ['bare CR', 'GET /health HTTP/1.1\r\nHost: x\rY: z\r\n\r\n', 400],
  ['Content-Length with Transfer-Encoding', 'POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
  ['two different Content-Lengths', 'POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd', 400],
  ['unsupported transfer coding', 'POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n', 501],
  ['malformed chunk size', 'POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400],
  ['body over the limit (Content-Length)', 'POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n', 413],
  ['body over the limit (chunked)', `POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n${'a'.repeat(65536)}\r\n10000\r\n`, 413],
  ['invalid Content-Length', 'POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n', 400],
  ['truncated body (read timeout)', 'POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"prompt":', 408],
  ['bad JSON', 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 9\r\n\r\n{"model":', 400],
  ['JSON that is not an object', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n[]', 400],
  ['empty body', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n', 400],
  ['invalid UTF-8 in JSON', Buffer.concat([Buffer.from('POST /tokenize HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 17\r\n\r\n{"prompt":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('b"}')]), 400],
  ['NUL in the request line', 'GET /he\0alth HTTP/1.1\r\nHost: x\r\n\r\n', 400],
  ['control byte in a header value', 'GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n', 400],
];
for (const [name, bytes, status] of corpus) {
  test(`malformed: ${name} -> ${status}`, async () => {
    const text = await raw(srv.port, bytes, { idle: 2500 });
    const [r] = parseResponses(text);
    assert.ok(r, `no response to ${name}: ${JSON.stringify(text)}`);
    assert.equal(r.status, status, text);
    if (status >= 400) assert.equal(typeof JSON.parse(r.body).error.message, 'string');
    assert.equal((await health(srv.url)).status, 'ok');
  });
}

test('slowloris: a head trickling in is cut off with 408 at the read timeout', async () => {
  const t0 = Date.now();
  const pieces = 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: '.split('').concat(Array(40).fill('a'));
  const text = await raw(srv.port, pieces, { delay: 50, idle: 3000 });
  // a head that completed would be answered 200: the 408 is the read timeout cutting the trickle off
  assert.match(text, /^HTTP\/1.1 408/);
  assert.ok(Date.now() - t0 >= 800, 'not before the read timeout');
});

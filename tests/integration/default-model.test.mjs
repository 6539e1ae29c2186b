// The shipped default model (models/autoglm-tiny.gguf) loads and answers
// through autoglm serve, as `make serve` runs it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startServer, postJSON } from './server.mjs';

const MODEL = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../models/autoglm-tiny.gguf');
let srv;
before(async () => { srv = await startServer(['--served-model-name', 'autoglm-tiny'], { model: MODEL }); });
after(async () => { assert.equal(await srv.stop(), 0, srv.log()); });

test('autoglm-tiny continues a prompt in its training text\'s English, the same way twice', async () => {
  const body = { model: 'autoglm-tiny', prompt: 'And God said', max_tokens: 24, temperature: 0 };
  const a = await postJSON(srv.url, '/v1/completions', body), b = await postJSON(srv.url, '/v1/completions', body);
  assert.equal(a.status, 200, a.text);
  const text = a.json.choices[0].text;
  assert.equal(text, b.json.choices[0].text);
  assert.match(text, /^[ A-Za-z,.;:'!?\n-]+$/, text); // words and punctuation, no byte noise
  assert.ok(text.trim().split(/\s+/).length >= 8, text);
  assert.equal(a.json.usage.completion_tokens, 24);
});

test('chat requests are answered too (a base model: the reply continues the conversation text)', async () => {
  const r = await postJSON(srv.url, '/v1/chat/completions',
    { model: 'autoglm-tiny', messages: [{ role: 'user', content: 'Who made the heaven and the earth?' }], max_tokens: 12 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.choices[0].message.role, 'assistant');
});

// The official OpenAI Node SDK (pinned in tests/fixtures/package.json) against the
// real server, unchanged: chat, streamed chat, completions with array prompts, and
// the typed errors it raises for 401, 400 (context length) and 404 (model).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, MODEL_NAME, EOS } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const requireFixtures = createRequire(path.join(here, '../fixtures/package.json'));
const { default: OpenAI } = await import(requireFixtures.resolve('openai'));

let srv, client;
before(async () => {
  srv = await startServer(['--ctx', '256', '--api-key', 'sk-test']);
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'sk-test', maxRetries: 0 });
});
after(async () => assert.equal(await srv.stop(), 0));

test('SDK: models.list and chat.completions.create', async () => {
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  assert.deepEqual(models, [MODEL_NAME]);
  const r = await client.chat.completions.create({
    model: MODEL_NAME, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hi' }],
    max_tokens: 6, temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 6);
});

test('SDK: streamed chat yields the same text as the unstreamed call, with usage last', async () => {
  const params = { model: MODEL_NAME, messages: [{ role: 'user', content: 'Tell a story' }], max_tokens: 10, seed: 9, logit_bias: { [EOS]: -100 } };
  const whole = await client.chat.completions.create(params);
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null, finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 10);
});

test('SDK: completions with an array of prompts gives one choice per prompt', async () => {
  const r = await client.completions.create({ model: MODEL_NAME, prompt: ['alpha', 'beta', 'gamma'], max_tokens: 3, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  const one = await client.completions.create({ model: MODEL_NAME, prompt: 'beta', max_tokens: 3, temperature: 0 });
  assert.equal(r.choices[1].text, one.choices[0].text);
});

test('SDK: a wrong key raises AuthenticationError (401)', async () => {
  const bad = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key');
});

test('SDK: a prompt over the context raises BadRequestError with code context_length_exceeded', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: MODEL_NAME, messages: [{ role: 'user', content: 'word '.repeat(600) }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.code === 'context_length_exceeded' && /256 tokens/.test(e.message),
  );
});

test('SDK: an unknown model raises NotFoundError (404)', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found',
  );
});

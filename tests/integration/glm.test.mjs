// GLM over the API: the glm4 and chatglm fixtures served with their chat
// templates (recognized from the model, or chosen with --chat-template), the
// [gMASK]<sop> prefix read as special tokens, and generation ending at any of
// GLM's end-of-generation tokens (<|endoftext|>, <|user|>, <|observation|>).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startServer, postJSON, FIXTURES } from './server.mjs';

// The fixtures' GLM special tokens sit at Llama 3's reserved ids (tests/fixtures/glm4/tokenizer-edit.json).
const ID = { endoftext: 128001, gMASK: 128002, sop: 128003, system: 128004, user: 128005, assistant: 128008, observation: 128010 };
const MESSAGES = [{ role: 'system', content: 'You are a helpful assistant' }, { role: 'user', content: 'Hello' }];
// ../shared/refs/glm-spec.md section 10, conversation B
const RENDERED = {
  chatglm4: '[gMASK]<sop><|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\n',
  glmedge: '<|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>',
};

const servers = {};
before(async () => {
  const start = (name, model, args = []) => startServer(['--served-model-name', 'glm4', ...args],
    { model: path.join(FIXTURES, `${model}.gguf`) })
    .then((s) => { servers[name] = s; });
  await Promise.all([start('glm4', 'glm4'), start('chatglm', 'chatglm'),
    start('forced', 'glm4', ['--chat-template', 'glmedge'])]);
});
after(async () => {
  for (const s of Object.values(servers)) assert.equal(await s.stop(), 0, s.log());
});

// The prompt a chat request becomes: /tokenize with messages, then /detokenize.
async function rendered(srv) {
  const tok = await postJSON(srv.url, '/tokenize', { model: 'glm4', messages: MESSAGES });
  assert.equal(tok.status, 200, tok.text);
  const text = await postJSON(srv.url, '/detokenize', { model: 'glm4', tokens: tok.json.tokens });
  return { tokens: tok.json.tokens, text: text.json.prompt };
}

test('glm4 is served with the chatglm4 template; [gMASK]<sop> and the roles are single special tokens', async () => {
  assert.match(servers.glm4.log(), /chat template chatglm4/);
  const { tokens, text } = await rendered(servers.glm4);
  assert.equal(text, RENDERED.chatglm4);
  assert.deepEqual(tokens.slice(0, 3), [ID.gMASK, ID.sop, ID.system]); // no BOS before them
  for (const id of [ID.user, ID.assistant]) assert.ok(tokens.includes(id));
  assert.equal(tokens.at(-2), ID.assistant);
});

test('chatglm (GLM-Edge\'s template text) is served with glmedge; --chat-template overrides', async () => {
  assert.match(servers.chatglm.log(), /chat template glmedge/);
  assert.equal((await rendered(servers.chatglm)).text, RENDERED.glmedge);
  assert.match(servers.forced.log(), /chat template glmedge/);
  assert.equal((await rendered(servers.forced)).text, RENDERED.glmedge);
});

// Push one token to the top and see how the request ends.
async function endsWith(srv, route, id) {
  const body = route === '/v1/chat/completions'
    ? { model: 'glm4', messages: MESSAGES, max_tokens: 6, temperature: 0, logit_bias: { [id]: 100 } }
    : { model: 'glm4', prompt: 'Hello', max_tokens: 6, temperature: 0, logit_bias: { [id]: 100 } };
  const r = await postJSON(srv.url, route, body);
  assert.equal(r.status, 200, r.text);
  const c = r.json.choices[0];
  return { finish: c.finish_reason, text: c.message ? c.message.content : c.text, n: r.json.usage.completion_tokens };
}

for (const route of ['/v1/chat/completions', '/v1/completions']) {
  test(`${route}: <|endoftext|>, <|user|> and <|observation|> each end generation`, async () => {
    for (const name of ['glm4', 'chatglm']) {
      for (const id of [ID.endoftext, ID.user, ID.observation]) {
        const r = await endsWith(servers[name], route, id);
        assert.equal(r.finish, 'stop', `${name} token ${id}`);
        assert.equal(r.text, '', `${name} token ${id}`);
      }
      // another special token does not end it
      const r = await endsWith(servers[name], route, ID.system);
      assert.equal(r.finish, 'length');
      assert.equal(r.n, 6);
    }
  });
}

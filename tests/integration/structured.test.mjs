// Structured output and tool calling through the official OpenAI SDK, unchanged: response_format json_schema
// (every answer parses and validates against its schema with ajv, whatever the weights: the default model and
// random-weight fixtures), json_object, llama.cpp's `grammar`, the SDK's parse() helper, 400s for bad schemas,
// and tool calls in the three formats we write (Hermes/chatml on the qwen2 fixture, Llama 3.1 JSON, GLM-4):
// required and named choices, auto through its lazy trigger, streamed deltas reassembled by the SDK's own
// stream helper, and tool results in the history.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, FIXTURES } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const requireFixtures = createRequire(path.join(here, '../fixtures/package.json'));
const { default: OpenAI } = await import(requireFixtures.resolve('openai'));
const { default: Ajv } = await import(requireFixtures.resolve('ajv'));
const ajv = new Ajv({ strict: false });

const TINY = path.resolve(here, '../../models/autoglm-tiny.gguf');
// Under the sanitizers the engine runs ~8x slower: fewer answers there, all 20 in the Release run.
const ANSWERS = process.env.AUTOGLM_SANITIZED === '1' ? 6 : 20;
const servers = {};
const clients = {};
before(async () => {
  const specs = { tiny: TINY, qwen2: path.join(FIXTURES, 'qwen2.gguf'), llama3: path.join(FIXTURES, 'llama3.gguf'),
    glm4: path.join(FIXTURES, 'glm4.gguf') };
  await Promise.all(Object.entries(specs).map(async ([name, model]) => {
    servers[name] = await startServer(['--served-model-name', name, '--ctx', '1024'], { model });
    clients[name] = new OpenAI({ baseURL: `${servers[name].url}/v1`, apiKey: 'none', maxRetries: 0 });
  }));
});
after(async () => { for (const s of Object.values(servers)) assert.equal(await s.stop(), 0); });

// Everything is bounded (strings by maxLength, arrays by maxItems, whitespace and digits by the grammar), so an
// answer ends within max_tokens whatever the weights: a model that never closes a free string would run to
// max_tokens (finish_reason "length"), which is the model's doing, not the grammar's.
const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 16 },
    age: { type: 'integer', minimum: 0, maximum: 130 },
    born: { type: 'string', format: 'date' },
    role: { enum: ['admin', 'user', 'guest'] },
    score: { type: 'number' },
    address: { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, zip: { type: 'string', pattern: '^[0-9]{5}$' } },
      required: ['city', 'zip'], additionalProperties: false },
    tags: { type: 'array', items: { type: 'string', maxLength: 8 }, maxItems: 3 },
    manager: { anyOf: [{ type: 'null' }, { $ref: '#/$defs/ref' }] },
    active: { type: 'boolean' },
  },
  required: ['name', 'age', 'born', 'role', 'score', 'address', 'tags', 'manager', 'active'],
  additionalProperties: false,
  $defs: { ref: { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'], additionalProperties: false } },
};
const personFormat = { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: PERSON } };
const validPerson = ajv.compile({ ...PERSON, $defs: undefined, properties: { ...PERSON.properties,
  manager: { anyOf: [{ type: 'null' }, PERSON.$defs.ref] } } });

test(`json_schema: ${ANSWERS} of ${ANSWERS} answers of the default model parse and validate (greedy and sampled)`, async () => {
  const prompts = ['Describe a person', 'And God said', 'Who is the king?', 'Give me JSON', 'In the beginning'];
  const calls = [];
  for (let i = 0; i < ANSWERS; i++) {
    calls.push(clients.tiny.chat.completions.create({
      model: 'tiny', messages: [{ role: 'user', content: prompts[i % 5] }], max_tokens: 900,
      ...(i % 4 === 0 ? { temperature: 0 } : { temperature: 0.9, seed: i }), response_format: personFormat,
    }));
  }
  for (const r of await Promise.all(calls)) {
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'stop', c.message.content);
    const v = JSON.parse(c.message.content);
    assert.ok(validPerson(v), `${c.message.content}: ${JSON.stringify(validPerson.errors)}`);
    assert.equal(Object.keys(v).join(), Object.keys(PERSON.properties).join()); // the schema's key order
  }
});

test('json_schema: the SDK\'s parse() helper, and a stream that reassembles to the whole answer', async () => {
  const body = { model: 'tiny', messages: [{ role: 'user', content: 'A person' }], max_tokens: 900, temperature: 0.7, seed: 5,
    response_format: personFormat };
  const parsed = await clients.tiny.chat.completions.parse(body);
  assert.deepEqual(parsed.choices[0].message.parsed, JSON.parse(parsed.choices[0].message.content));
  const stream = await clients.tiny.chat.completions.create({ ...body, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, parsed.choices[0].message.content);
});

test('json_object parses; a GBNF grammar is obeyed; completions take response_format too', async () => {
  // json_object bounds nothing (free strings): answers that end must parse; most of these end
  let ended = 0;
  for (const content of ['JSON please', 'And God said', 'Who is the king?', 'A list']) {
    const r = await clients.tiny.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content }],
      max_tokens: 300, temperature: 0, response_format: { type: 'json_object' } });
    if (r.choices[0].finish_reason !== 'stop') continue;
    ended++;
    const v = JSON.parse(r.choices[0].message.content);
    assert.ok(v && typeof v === 'object' && !Array.isArray(v), r.choices[0].message.content);
  }
  assert.ok(ended >= 1);
  const grammar = 'root ::= ("yes" | "no") ", because " [a-z ]{1,30} "."';
  for (let seed = 0; seed < 5; seed++) {
    const g = await clients.tiny.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Is it so?' }],
      max_tokens: 60, temperature: 1, seed, grammar });
    assert.match(g.choices[0].message.content, /^(yes|no), because [a-z ]{1,30}\.$/);
    assert.equal(g.choices[0].finish_reason, 'stop');
  }
  const c = await clients.tiny.completions.create({ model: 'tiny', prompt: 'And God said', max_tokens: 50, temperature: 0,
    response_format: { type: 'json_schema', json_schema: { name: 'n', schema: { type: 'object', properties: {
      n: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['n'], additionalProperties: false } } } });
  assert.match(c.choices[0].text, /^\{\s*"n"\s*:\s*[1-9]\s*\}$/);
});

test('bad schemas and grammars are 400s naming what is wrong', async () => {
  const bad = async (extra, re) => {
    await assert.rejects(clients.tiny.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }],
      max_tokens: 5, ...extra }), (e) => e.status === 400 && re.test(e.message));
  };
  const schema = (s) => ({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: s } } });
  await bad(schema({ type: 'object', properties: { a: { type: 'array', uniqueItems: true } } }), /properties\/a: keyword "uniqueItems"/);
  await bad(schema({ $ref: '#/$defs/nope' }), /points at nothing/);
  await bad(schema({ type: 'string', format: 'ipv6' }), /format "ipv6"/);
  await bad(schema({ type: 'object', properties: { a: {} }, required: ['b'] }), /"b", which is not in properties/);
  await bad({ response_format: { type: 'json_schema', json_schema: { name: 'bad name!', schema: {} } } }, /name/);
  await bad({ response_format: { type: 'xml' } }, /response_format.type/);
  await bad({ grammar: 'root ::= item' }, /'item' is used but not defined/);
  await bad({ grammar: 'root ::= root "x" | "y"' }, /left-recursive/);
  await bad({ grammar: 'root ::= "x"', response_format: { type: 'json_object' } }, /Cannot use both/);
});

// ---- tools ----------------------------------------------------------------------------------------------------

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'The weather in a city', parameters: {
    type: 'object', properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['c', 'f'] } },
    required: ['city', 'unit'], additionalProperties: false } } },
  { type: 'function', function: { name: 'get_time', description: 'The time in a zone', parameters: {
    type: 'object', properties: { tz: { type: 'integer', minimum: -12, maximum: 14 } }, required: ['tz'],
    additionalProperties: false } } },
];
const validArgs = Object.fromEntries(TOOLS.map((t) => [t.function.name, ajv.compile(t.function.parameters)]));
const ask = [{ role: 'user', content: 'What is the weather in Paris, and the time in Tokyo?' }];

function checkCalls(calls) {
  assert.ok(calls.length >= 1);
  for (const c of calls) {
    assert.equal(c.type, 'function');
    assert.match(c.id, /^call_[A-Za-z0-9]{24}$/);
    assert.ok(c.function.name in validArgs, c.function.name);
    const args = JSON.parse(c.function.arguments);
    assert.ok(validArgs[c.function.name](args), `${c.function.arguments}: ${JSON.stringify(validArgs[c.function.name].errors)}`);
  }
}

for (const family of ['qwen2', 'llama3', 'glm4']) {
  test(`tools (${family}): "required" gives valid calls with finish_reason tool_calls; a named function gives "stop"`, async () => {
    const client = clients[family];
    for (let seed = 0; seed < 3; seed++) {
      const r = await client.chat.completions.create({ model: family, messages: ask, tools: TOOLS, tool_choice: 'required',
        max_tokens: 300, temperature: 0.8, seed, parallel_tool_calls: false });
      const m = r.choices[0].message;
      assert.equal(r.choices[0].finish_reason, 'tool_calls', JSON.stringify(m));
      assert.equal(m.content, null);
      checkCalls(m.tool_calls);
      assert.equal(m.tool_calls.length, 1); // parallel_tool_calls false
    }
    const named = await client.chat.completions.create({ model: family, messages: ask, tools: TOOLS,
      tool_choice: { type: 'function', function: { name: 'get_time' } }, temperature: 0, max_tokens: 300 });
    assert.equal(named.choices[0].finish_reason, 'stop');
    assert.equal(named.choices[0].message.tool_calls.length, 1);
    assert.equal(named.choices[0].message.tool_calls[0].function.name, 'get_time');
    checkCalls(named.choices[0].message.tool_calls);
  });
}

// Parallel calls (Hermes) are as many as the model writes: a random-weight model may write calls until max_tokens,
// so this compares the stream with the whole answer whatever the finish reason.
test('tools: streamed calls reassemble (SDK stream helper) to the unstreamed answer, deltas shaped as OpenAI sends them', async () => {
  const body = { model: 'qwen2', messages: ask, tools: TOOLS, tool_choice: 'required', max_tokens: 300, temperature: 0.9,
    seed: 11, parallel_tool_calls: true };
  const whole = await clients.qwen2.chat.completions.create(body);
  const raw = await clients.qwen2.chat.completions.create({ ...body, stream: true });
  const calls = [];
  let finish = null;
  for await (const chunk of raw) {
    const c = chunk.choices[0];
    if (!c) continue;
    if (c.finish_reason) finish = c.finish_reason;
    for (const d of c.delta.tool_calls ?? []) {
      if (d.id) { // a call's first delta: index, id, type and name, empty arguments
        assert.equal(d.index, calls.length);
        assert.equal(d.type, 'function');
        assert.equal(d.function.arguments, '');
        calls.push({ id: d.id, type: 'function', function: { name: d.function.name, arguments: '' } });
      } else {
        assert.equal(d.function.name, undefined);
        calls[d.index].function.arguments += d.function.arguments;
      }
    }
  }
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.ok(calls.length >= 1);
  assert.deepEqual(calls.map((c) => c.function), whole.choices[0].message.tool_calls.map((c) => c.function));
  assert.equal(new Set(calls.map((c) => c.id)).size, calls.length);
  const helper = clients.qwen2.chat.completions.stream(body);
  const final = await helper.finalChatCompletion();
  assert.deepEqual(final.choices[0].message.tool_calls.map((c) => c.function), calls.map((c) => c.function));
});

test('tools: "auto" calls once the model opens a call (lazy grammar), answers in text otherwise; results go back', async () => {
  const TOOL_CALL = 151657; // <tool_call> in the Qwen2 vocabulary
  const r = await clients.qwen2.chat.completions.create({ model: 'qwen2', messages: ask, tools: TOOLS, max_tokens: 300,
    temperature: 0.8, seed: 2, logit_bias: { [TOOL_CALL]: 100 }, parallel_tool_calls: false });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  checkCalls(r.choices[0].message.tool_calls);
  const free = await clients.qwen2.chat.completions.create({ model: 'qwen2', messages: ask, tools: TOOLS, max_tokens: 8,
    temperature: 0, logit_bias: { [TOOL_CALL]: -100 } });
  assert.equal(free.choices[0].message.tool_calls, undefined);
  assert.equal(typeof free.choices[0].message.content, 'string');
  // the call and its result in the history (Hermes: <tool_call> in the assistant turn, <tool_response> in a user turn)
  const call = r.choices[0].message.tool_calls[0];
  const next = await clients.qwen2.chat.completions.create({ model: 'qwen2', max_tokens: 4, temperature: 0, tools: TOOLS,
    messages: [...ask, r.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '22 C' }] });
  assert.equal(next.choices[0].index, 0);
  for (const family of ['llama3', 'glm4']) {
    const h = await clients[family].chat.completions.create({ model: family, max_tokens: 4, temperature: 0, tools: TOOLS,
      messages: [...ask, { role: 'assistant', content: null, tool_calls: [call] }, { role: 'tool', tool_call_id: call.id, content: '22 C' }] });
    assert.equal(h.choices[0].index, 0);
  }
});

test('tools: bad tool requests are 400s', async () => {
  const bad = async (extra, re) => {
    await assert.rejects(clients.qwen2.chat.completions.create({ model: 'qwen2', messages: ask, max_tokens: 5, ...extra }),
      (e) => e.status === 400 && re.test(e.message));
  };
  await bad({ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }, /'nope', which is not in 'tools'/);
  await bad({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'string' } } }], tool_choice: 'required' },
    /must describe an object/);
  await bad({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { not: {} } } } } }],
    tool_choice: 'required' }, /keyword "not"/);
  await bad({ tool_choice: 'required' }, /only allowed when 'tools'/);
  await bad({ tools: TOOLS, grammar: 'root ::= "x"' }, /Cannot use custom grammar constraints with tools/);
  await bad({ tools: [TOOLS[0], TOOLS[0]] }, /two tools are named/);
});

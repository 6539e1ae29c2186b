// Observability over the real binary: /metrics under promtool and equal to the traffic sent,
// trace context in and out, JSON access logs, and OTLP spans to a receiver in this file
// (and a dead or hanging collector that must not change anything a client sees).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startServer, postJSON, waitFor, MODEL_NAME, EOS } from './server.mjs';

const metrics = async (url) => (await fetch(`${url}/metrics`)).text();
const value = (text, series) => {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

// An OTLP/HTTP receiver: collects the spans of every POST /v1/traces.
function receiver() {
  const spans = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      assert.equal(req.url, '/v1/traces');
      assert.equal(req.headers['content-type'], 'application/json');
      for (const rs of JSON.parse(body).resourceSpans)
        for (const ss of rs.scopeSpans) spans.push(...ss.spans.map((s) => ({ ...s, resource: rs.resource })));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r({ spans, port: srv.address().port, close: () => srv.close() })));
}

const attrs = (span) => Object.fromEntries(span.attributes.map((a) => [a.key, Object.values(a.value)[0]]));

test('/metrics passes promtool after traffic, and its counts equal what was sent', async () => {
  const srv = await startServer();
  try {
    const n = 5, tokens = 3;
    let promptTokens = 0;
    for (let i = 0; i < n; i++) {
      const r = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: `request ${i}`, max_tokens: tokens, logit_bias: { [EOS]: -100 } });
      assert.equal(r.status, 200);
      promptTokens += r.json.usage.prompt_tokens;
    }
    const stream = await fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ model: MODEL_NAME, messages: [{ role: 'user', content: 'x' }], max_tokens: tokens, stream: true, logit_bias: { [EOS]: -100 } }) });
    await stream.text();
    await fetch(`${srv.url}/nope`);
    await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: 'x', temperature: 9 });
    const text = await metrics(srv.url);
    execFileSync('promtool', ['check', 'metrics'], { input: text }); // throws on any lint problem (exit 3) or parse error
    assert.equal(value(text, 'autoglm_http_requests_total{route="/v1/completions",status="200",protocol="http/1.1"}'), n);
    assert.equal(value(text, 'autoglm_http_requests_total{route="/v1/chat/completions",status="200",protocol="http/1.1"}'), 1);
    assert.equal(value(text, 'autoglm_http_requests_total{route="other",status="404",protocol="http/1.1"}'), 1);
    assert.equal(value(text, 'autoglm_http_requests_total{route="/v1/completions",status="400",protocol="http/1.1"}'), 1);
    assert.equal(value(text, 'autoglm_generation_tokens_total'), (n + 1) * tokens);
    assert.ok(value(text, 'autoglm_prompt_tokens_total') > promptTokens); // the chat prompt adds its own
    assert.equal(value(text, 'autoglm_request_success_total{finished_reason="length"}'), n + 1);
    for (const h of ['e2e_request_latency_seconds', 'time_to_first_token_seconds', 'request_queue_time_seconds',
      'request_prefill_time_seconds', 'request_decode_time_seconds', 'request_time_per_output_token_seconds'])
      assert.equal(value(text, `autoglm_${h}_count`), n + 1, h);
    assert.equal(value(text, 'autoglm_inter_token_latency_seconds_count'), (n + 1) * (tokens - 1));
    assert.equal(value(text, 'autoglm_time_to_first_token_seconds_bucket{le="+Inf"}'), n + 1);
    assert.ok(value(text, 'autoglm_iteration_tokens_count') >= n + 1);
    assert.equal(value(text, 'autoglm_num_requests_running'), 0);
    assert.equal(value(text, 'autoglm_http_connections') >= 1, true);
    assert.ok(value(text, 'process_resident_memory_bytes') > 1e6);
    assert.ok(value(text, 'process_open_fds') > 3);
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('trace context: traceparent continued, X-Trace-ID honoured, invalid ones replaced, on every response', async () => {
  const srv = await startServer();
  try {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    let r = await fetch(`${srv.url}/v1/models`, { headers: { traceparent: tp } });
    assert.equal(r.headers.get('x-trace-id'), '4bf92f3577b34da6a3ce929d0e0e4736');
    const back = r.headers.get('traceparent').split('-');
    assert.equal(back[1], '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.match(back[2], /^[0-9a-f]{16}$/);
    assert.notEqual(back[2], '00f067aa0ba902b7'); // our own span, child of the caller's
    for (const bad of ['00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', 'garbage']) {
      r = await fetch(`${srv.url}/health`, { headers: { traceparent: bad } });
      assert.match(r.headers.get('x-trace-id'), /^[0-9a-f]{32}$/);
      assert.notEqual(r.headers.get('x-trace-id'), '4bf92f3577b34da6a3ce929d0e0e4736', bad);
    }
    r = await fetch(`${srv.url}/health`, { headers: { 'x-trace-id': 'ABCDEF0123456789abcdef0123456789' } });
    assert.equal(r.headers.get('x-trace-id'), 'abcdef0123456789abcdef0123456789');
    // errors carry them too
    for (const [route, init] of [['/nope', {}], ['/v1/completions', { method: 'POST', body: '{' }], ['/v1/chat/completions', {}]]) {
      r = await fetch(srv.url + route, init);
      assert.ok(r.status >= 400);
      assert.match(r.headers.get('x-trace-id'), /^[0-9a-f]{32}$/);
      assert.match(r.headers.get('traceparent'), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    }
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('JSON access log: one parseable line per request with its trace id and numbers', async () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'autoglm-log-')), 'access.log');
  const srv = await startServer(['--log-format', 'json', '--log-file', file]);
  try {
    const r = await postJSON(srv.url, '/v1/completions', { model: MODEL_NAME, prompt: 'hello', max_tokens: 2, logit_bias: { [EOS]: -100 } });
    const trace = r.headers.get('x-trace-id');
    const line = await waitFor(() => fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
      .find((l) => l.msg === 'request' && l.trace_id === trace), 3000);
    assert.ok(line, 'no access-log line with the trace id');
    assert.equal(line.level, 'info');
    assert.match(line.ts, /^\d{4}-\d\d-\d\dT/);
    assert.equal(line.span_id, r.headers.get('traceparent').split('-')[2]);
    assert.equal(line.method, 'POST');
    assert.equal(line.route, '/v1/completions');
    assert.equal(line.status, 200);
    assert.equal(line.completion_tokens, 2);
    assert.equal(line.prompt_tokens, r.json.usage.prompt_tokens);
    assert.equal(line.finish_reason, 'length');
    assert.ok(line.latency_ms >= line.ttft_ms && line.ttft_ms > 0);
    assert.equal(line.cache, 'none');
  } finally {
    assert.equal(await srv.stop(), 0);
  }
  // every line of the file is JSON
  for (const l of fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)) JSON.parse(l);
});

test('OTLP: the server span continues the incoming trace, with GenAI attributes and linked queue/prefill/decode children', async () => {
  const rx = await receiver();
  const srv = await startServer(['--otlp-endpoint', `http://127.0.0.1:${rx.port}`]);
  try {
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const r = await postJSON(srv.url, '/v1/chat/completions',
      { model: MODEL_NAME, messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, temperature: 0.5, logit_bias: { [EOS]: -100 } },
      { traceparent: tp });
    const serverSpanId = r.headers.get('traceparent').split('-')[2];
    await waitFor(() => rx.spans.length >= 4, 5000);
    const mine = rx.spans.filter((s) => s.traceId === '0af7651916cd43dd8448eb211c80319c');
    const server = mine.find((s) => s.kind === 2);
    assert.ok(server, JSON.stringify(rx.spans));
    assert.equal(server.spanId, serverSpanId);
    assert.equal(server.parentSpanId, 'b7ad6b7169203331');
    assert.equal(server.name, 'POST /v1/chat/completions');
    const a = attrs(server);
    assert.equal(a['gen_ai.operation.name'], 'chat');
    assert.equal(a['gen_ai.request.model'], MODEL_NAME);
    assert.equal(a['gen_ai.request.max_tokens'], '3');
    assert.equal(a['gen_ai.request.temperature'], 0.5);
    assert.equal(a['gen_ai.usage.input_tokens'], String(r.json.usage.prompt_tokens));
    assert.equal(a['gen_ai.usage.output_tokens'], '3');
    assert.deepEqual(a['gen_ai.response.finish_reasons'].values, [{ stringValue: 'length' }]);
    assert.equal(a['http.response.status_code'], '200');
    assert.equal(a['http.request.method'], 'POST');
    const children = mine.filter((s) => s.parentSpanId === server.spanId);
    assert.deepEqual(children.map((s) => s.name).sort(), ['decode', 'prefill', 'queue']);
    const t = (s, k) => BigInt(s[k]);
    for (const c of children) {
      assert.ok(t(c, 'startTimeUnixNano') >= t(server, 'startTimeUnixNano') && t(c, 'endTimeUnixNano') <= t(server, 'endTimeUnixNano'), c.name);
      assert.ok(t(c, 'endTimeUnixNano') >= t(c, 'startTimeUnixNano'));
    }
    assert.equal(server.resource.attributes[0].value.stringValue, 'autoglm');
    const text = await metrics(srv.url);
    await waitFor(async () => value(await metrics(srv.url), 'autoglm_otlp_spans_exported_total') >= 4, 3000);
    assert.equal(value(text, 'autoglm_otlp_spans_dropped_total'), 0);
  } finally {
    assert.equal(await srv.stop(), 0);
    rx.close();
  }
});

test('a sample ratio of 0 exports nothing for new traces; a sampled traceparent is still honoured', async () => {
  const rx = await receiver();
  const srv = await startServer(['--otlp-endpoint', `http://127.0.0.1:${rx.port}`, '--trace-sample-ratio', '0']);
  try {
    await fetch(`${srv.url}/health`);
    const r = await fetch(`${srv.url}/health`, { headers: { traceparent: '00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } });
    assert.match(r.headers.get('traceparent'), /-01$/);
    await waitFor(() => rx.spans.length >= 1, 3000);
    await new Promise((res) => setTimeout(res, 700));
    assert.deepEqual(rx.spans.map((s) => s.traceId), ['1af7651916cd43dd8448eb211c80319c']);
  } finally {
    assert.equal(await srv.stop(), 0);
    rx.close();
  }
});

test('a dead or hanging collector changes neither results nor latency; its spans are counted as dropped', async () => {
  const dead = await new Promise((r) => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
  const hanging = net.createServer(() => { /* accepts and never answers */ });
  await new Promise((r) => hanging.listen(0, '127.0.0.1', r));
  const body = { model: MODEL_NAME, prompt: 'deterministic', max_tokens: 8, temperature: 0 };
  const base = await startServer();
  const want = (await postJSON(base.url, '/v1/completions', body)).json.choices[0].text;
  await base.stop();
  for (const port of [dead, hanging.address().port]) {
    const srv = await startServer(['--otlp-endpoint', `http://127.0.0.1:${port}`]);
    try {
      for (let i = 0; i < 20; i++) {
        const t0 = Date.now();
        const r = await postJSON(srv.url, '/v1/completions', body);
        assert.equal(r.status, 200);
        assert.equal(r.json.choices[0].text, want);
        // the exporter's own timeout is 2 s: a request that waited for the collector would take that long
        assert.ok(Date.now() - t0 < 1900, `request took ${Date.now() - t0} ms with a bad collector`);
      }
      const dropped = await waitFor(async () => value(await metrics(srv.url), 'autoglm_otlp_spans_dropped_total') > 0, 6000);
      assert.ok(dropped, 'no spans counted as dropped');
    } finally {
      assert.equal(await srv.stop(), 0);
    }
  }
  hanging.close();
});

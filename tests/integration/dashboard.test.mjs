// The Grafana dashboard and the Prometheus rules against a live /metrics: every
// metric name used by an expression in deploy/grafana/*.json or
// deploy/prometheus/ (alerting rules and the series of their unit tests) must be
// one the server exports, and every label a selector or a grouping names must be
// on that metric.  The server runs with both cache tiers (a real redis-server)
// and gets a little traffic, a cache hit included.  The rules also pass
// promtool's check and their own unit tests.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startServer, postJSON, waitFor, MODEL_NAME } from './server.mjs';

const DEPLOY = path.resolve('deploy');
// Series Prometheus makes itself at scrape time, and the labels it adds to every series.
const SYNTHETIC = new Map([['up', new Set(['job', 'instance'])]]);
const TARGET_LABELS = new Set(['job', 'instance']);
const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan', 'by', 'without', 'on', 'ignoring',
  'group_left', 'group_right', 'atan2']);

// The selectors of a PromQL expression: [{ name, matchers: [{label, op, value}] }], and the labels its
// by/without/on/ignoring/group_* clauses name.  Functions and aggregations are the names followed by '('.
export function promqlRefs(expr) {
  const selectors = [], grouping = [];
  let e = expr.replace(/\[[^\]]*\]/g, ' '); // range and subquery windows ($__rate_interval, 5m, ...)
  e = e.replace(/([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}/g, (_, name, body) => {
    const matchers = [...body.matchAll(/([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)]
      .map((m) => ({ label: m[1], op: m[2], value: m[3] }));
    selectors.push({ name: name || null, matchers });
    return ' ';
  });
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_, __, labels) => {
    grouping.push(...labels.split(',').map((s) => s.trim()).filter(Boolean));
    return ' ';
  });
  e = e.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, ' ').replace(/\$\w+/g, ' ');
  for (const m of e.matchAll(/(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?/g))
    if (!m[2] && !KEYWORDS.has(m[1].toLowerCase())) selectors.push({ name: m[1], matchers: [] });
  return { selectors, grouping };
}

// /metrics text: name -> { labels: Set, values: Map(label -> Set(values)) }.
function exported(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s/.exec(line);
    if (!m) continue;
    const e = out.get(m[1]) || { labels: new Set(), values: new Map() };
    for (const l of (m[3] || '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) {
      e.labels.add(l[1]);
      if (!e.values.has(l[1])) e.values.set(l[1], new Set());
      e.values.get(l[1]).add(l[2]);
    }
    out.set(m[1], e);
  }
  return out;
}

// What is wrong with an expression's references against the exported metrics, as lines.  Label values are
// checked (for '=' matchers) unless values is false: a rule test's made-up series use other values.
function problems(expr, metrics, { values = true } = {}) {
  const { selectors, grouping } = promqlRefs(expr), bad = [], known = new Set(TARGET_LABELS);
  for (const s of selectors) {
    if (!s.name) { bad.push(`a selector without a metric name: ${expr}`); continue; }
    const m = metrics.get(s.name), syn = SYNTHETIC.get(s.name);
    if (!m && !syn) { bad.push(`${s.name} is not exported`); continue; }
    const labels = syn || m.labels;
    labels.forEach((l) => known.add(l));
    for (const { label, op, value } of s.matchers) {
      if (!labels.has(label) && !TARGET_LABELS.has(label)) bad.push(`${s.name} has no label ${label}`);
      else if (values && op === '=' && m && m.values.has(label) && !m.values.get(label).has(value))
        bad.push(`${s.name}{${label}="${value}"} matches no exported series`);
    }
  }
  for (const l of grouping) if (!known.has(l)) bad.push(`grouping by ${l}, a label none of its metrics has`);
  return [...new Set(bad)];
}

// The PromQL of a Grafana dashboard: every "expr" anywhere in it.
function grafanaExprs(node, where, out = []) {
  if (Array.isArray(node)) node.forEach((n, i) => grafanaExprs(n, `${where}[${i}]`, out));
  else if (node && typeof node === 'object')
    for (const [k, v] of Object.entries(node)) {
      if (k === 'expr' && typeof v === 'string') out.push({ where: `${where} (${node.legendFormat || node.refId})`, expr: v });
      else grafanaExprs(v, node.title ? `${where} "${node.title}"` : where, out);
    }
  return out;
}

// Values of `key:` in our rule files (plain, quoted, or a | / > block), with their line numbers.  Node has no
// YAML parser; the test cross-checks the count against promtool's, so a form this misses fails the test.
function yamlValues(text, key) {
  const lines = text.split('\n'), out = [];
  for (let i = 0; i < lines.length; i++) {
    const m = new RegExp(`^(\\s*)(?:- )?${key}:\\s*(.*)$`).exec(lines[i]);
    if (!m) continue;
    let v = m[2].trim();
    if (/^[|>][-+]?$/.test(v)) {
      const block = [];
      while (i + 1 < lines.length && (lines[i + 1].trim() === '' || /^\s/.test(lines[i + 1]) &&
             lines[i + 1].search(/\S/) > m[1].length)) block.push(lines[++i].trim());
      v = block.join(' ').trim();
    } else if (/^'.*'$/.test(v)) v = v.slice(1, -1).replace(/''/g, "'");
    else if (/^".*"$/.test(v)) v = JSON.parse(v);
    out.push({ line: i + 1, value: v });
  }
  return out;
}

const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});

let redis, srv, metrics;
before(async () => {
  const port = await freePort();
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  assert.ok(await waitFor(() => {
    try { return execFileSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() === 'PONG'; } catch { return false; }
  }), 'redis-server did not start');
  srv = await startServer(['--cache-mb', '8', '--redis-url', `redis://127.0.0.1:${port}`]);
  assert.ok(await waitFor(async () => (await (await fetch(srv.url + '/v1/cache/stats')).json()).l2.connected));
  const body = { model: MODEL_NAME, prompt: 'the dashboard test', max_tokens: 4, temperature: 0 };
  assert.equal((await postJSON(srv.url, '/v1/completions', body)).headers.get('x-cache'), 'MISS');
  assert.equal((await postJSON(srv.url, '/v1/completions', body)).headers.get('x-cache'), 'HIT-L1');
  const chat = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL_NAME, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream: true }) });
  assert.equal(chat.status, 200);
  await chat.text();
  assert.equal((await fetch(srv.url + '/v1/nothing-here')).status, 404);
  metrics = exported(await (await fetch(srv.url + '/metrics')).text());
});
after(async () => {
  assert.equal(await srv.stop(), 0, srv.log());
  await new Promise((r) => { redis.on('exit', r); redis.kill('SIGKILL'); });
});

test('the reference check finds what a broken panel would use', () => {
  const { selectors, grouping } = promqlRefs(
    'sum by (status) (rate(autoglm_http_requests_total{status=~"5..",route="/x"}[$__rate_interval])) / on(instance) group_left up');
  assert.deepEqual(selectors.map((s) => s.name), ['autoglm_http_requests_total', 'up']);
  assert.deepEqual(selectors[0].matchers.map((m) => m.label), ['status', 'route']);
  assert.deepEqual(grouping, ['status', 'instance']);
  // the panel users saw empty, a label typo, a label value no series has, a grouping by a missing label
  const old = 'sum(rate(autoglm_response_cache_requests_total{result=~"hit.*"}[5m])) / sum(rate(autoglm_cache_hits_total[5m]))';
  assert.deepEqual(problems(old, metrics), ['autoglm_response_cache_requests_total is not exported']);
  assert.deepEqual(problems('autoglm_cache_hits_total{teir="l1"}', metrics), ['autoglm_cache_hits_total has no label teir']);
  assert.deepEqual(problems('autoglm_cache_hits_total{tier="l3"}', metrics),
    ['autoglm_cache_hits_total{tier="l3"} matches no exported series']);
  assert.deepEqual(problems('sum by (reason) (autoglm_request_success_total)', metrics),
    ['grouping by reason, a label none of its metrics has']);
});

test('every Grafana panel queries metrics and labels the server exports', () => {
  const files = readdirSync(path.join(DEPLOY, 'grafana')).filter((f) => f.endsWith('.json'));
  assert.ok(files.length >= 1);
  for (const f of files) {
    const exprs = grafanaExprs(JSON.parse(readFileSync(path.join(DEPLOY, 'grafana', f), 'utf8')), f);
    assert.ok(exprs.length >= 16, `${f}: only ${exprs.length} expressions found`);
    const bad = exprs.flatMap(({ where, expr }) => problems(expr, metrics).map((p) => `${where}: ${p}`));
    assert.deepEqual(bad, []);
    const text = readFileSync(path.join(DEPLOY, 'grafana', f), 'utf8');
    assert.doesNotMatch(text, /\bissue \d+|populated once|later\)/i, `${f} still promises something for later`);
  }
});

test('every alerting rule and rule-test series uses exported metrics; promtool checks and tests the rules', () => {
  const dir = path.join(DEPLOY, 'prometheus');
  const rules = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f) && !f.endsWith('.test.yml') && f !== 'prometheus.yml');
  assert.ok(rules.includes('alerts.yml'));
  for (const f of rules) {
    const text = readFileSync(path.join(dir, f), 'utf8');
    const exprs = yamlValues(text, 'expr');
    const out = execFileSync('promtool', ['check', 'rules', path.join(dir, f)], { encoding: 'utf8' });
    assert.equal(Number(/SUCCESS: (\d+) rules found/.exec(out)[1]), exprs.length, `${f}: rules the test did not read`);
    const bad = exprs.flatMap(({ line, value }) => problems(value, metrics).map((p) => `${f}:${line}: ${p}`));
    assert.deepEqual(bad, []);
    for (const sym of ['latency', 'error', 'queue', 'kv', 'redis'])
      assert.match(text.toLowerCase(), new RegExp(`alert: autoglm\\w*${sym}`), `${f}: no alert for ${sym}`);
  }
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.test.yml'))) {
    const series = yamlValues(readFileSync(path.join(dir, f), 'utf8'), 'series');
    assert.ok(series.length > 0);
    const bad = series.flatMap(({ line, value }) => problems(value, metrics, { values: false }).map((p) => `${f}:${line}: ${p}`));
    assert.deepEqual(bad, []);
    execFileSync('promtool', ['test', 'rules', f], { cwd: dir, encoding: 'utf8' }); // throws on a failed case
  }
  execFileSync('promtool', ['check', 'config', path.join(dir, 'prometheus.yml')], { encoding: 'utf8' });
});

// autoglm's web UI: a chat and a completions playground over the server's own OpenAI API, and a dashboard
// drawn from GET /v1/stats once a second.  Plain JavaScript, no library: the page is served by the binary
// itself (src/server/ui.c) under a CSP that allows only this file's code and requests to this origin.
// Text from the model or the user is always set as textContent, never parsed as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const store = {
  get(k, d) { try { const v = localStorage.getItem('autoglm.' + k); return v === null ? d : JSON.parse(v); } catch { return d; } },
  set(k, v) { try { localStorage.setItem('autoglm.' + k, JSON.stringify(v)); } catch { /* full or disabled */ } },
};

// ---- the API, with the key asked once when the server wants one ----------------------------------------

let apiKey = store.get('key', '');
let keyAsked = null; // the open dialog's promise, so concurrent 401s ask once

// Resolves true once a key is entered, false when the dialog is dismissed (Escape).
function askKey(message) {
  if (keyAsked) return keyAsked;
  const dlg = $('key-dialog');
  $('key-error').textContent = message || '';
  $('key-input').value = '';
  $('key-button').hidden = false; // the server wants a key: it can be changed from now on
  keyAsked = new Promise((resolve) => {
    const done = (given) => { keyAsked = null; resolve(given); };
    $('key-form').onsubmit = (ev) => {
      ev.preventDefault();
      apiKey = $('key-input').value.trim();
      store.set('key', apiKey);
      dlg.onclose = null;
      dlg.close();
      done(true);
    };
    dlg.onclose = () => done(false);
  });
  dlg.showModal();
  return keyAsked;
}

async function api(path, init = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = Object.assign({}, init.headers || {});
    if (apiKey) headers.Authorization = 'Bearer ' + apiKey;
    const r = await fetch(path, Object.assign({}, init, { headers }));
    if (r.status !== 401 || attempt > 3 || !(await askKey(apiKey ? 'That key was refused.' : ''))) return r;
  }
}

async function errorText(r) {
  try { const j = await r.json(); return (j.error && j.error.message) || r.statusText; } catch { return r.statusText; }
}

// POST a streamed request; onText(choiceIndex, text) for each delta.  Resolves with what the stream said at its
// end: { usage, finish, ttftMs, decodeMs, stopped }.  An error event or a non-200 answer rejects.
async function streamRequest(path, body, onText, signal) {
  const t0 = performance.now();
  let tFirst = 0, tLast = 0, usage = null, finish = null;
  const r = await api(path, {
    method: 'POST', signal, headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(Object.assign({}, body, { stream: true, stream_options: { include_usage: true } })),
  });
  if (!r.ok) throw new Error(r.status + ': ' + await errorText(r));
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = '';
  const onEvent = (data) => {
    if (data === '[DONE]') return;
    const ev = JSON.parse(data);
    if (ev.error) throw new Error(ev.error.message || 'the server failed');
    if (ev.usage) usage = ev.usage;
    for (const ch of ev.choices || []) {
      const text = ch.delta ? ch.delta.content : ch.text;
      if (text) { tLast = performance.now(); if (!tFirst) tFirst = tLast; onText(ch.index || 0, text); }
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let at;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, at);
        buf = buf.slice(at + 2);
        const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
        if (data) onEvent(data);
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
    return { usage, finish: 'stopped', ttftMs: tFirst ? tFirst - t0 : null, decodeMs: tLast - tFirst, stopped: true };
  }
  return { usage, finish, ttftMs: tFirst ? tFirst - t0 : null, decodeMs: tLast - tFirst, stopped: false };
}

// "12 prompt + 34 tokens · first token 56 ms · 78.9 tok/s"
function describe(res, tokensSeen) {
  const out = res.usage ? res.usage.completion_tokens : tokensSeen;
  const parts = [];
  parts.push((res.usage ? res.usage.prompt_tokens + ' prompt + ' : '') + out + ' tokens' + (res.usage ? '' : ' (about)'));
  if (res.ttftMs !== null) parts.push('first token ' + res.ttftMs.toFixed(0) + ' ms');
  if (out > 1 && res.decodeMs > 0) parts.push(((out - 1) / (res.decodeMs / 1000)).toFixed(1) + ' tok/s');
  if (res.stopped) parts.push('stopped');
  else if (res.finish) parts.push('finish: ' + res.finish);
  return parts.join(' · ');
}

// ---- sampling settings, shared by both playgrounds and kept in the browser -----------------------------

const SETTINGS = ['temperature', 'top_p', 'max_tokens', 'seed'];
function loadSettings() {
  const s = store.get('settings', {});
  for (const k of SETTINGS) if (s[k] !== undefined) $(k).value = s[k];
  for (const k of SETTINGS) $(k).addEventListener('change', saveSettings);
}
function saveSettings() {
  const s = {};
  for (const k of SETTINGS) s[k] = $(k).value;
  store.set('settings', s);
}
function sampling() {
  const p = {}, num = (k) => $(k).value === '' ? undefined : Number($(k).value);
  for (const k of SETTINGS) if (num(k) !== undefined && !Number.isNaN(num(k))) p[k] = num(k);
  return p;
}

// ---- chat: conversations in localStorage --------------------------------------------------------------

let convs = store.get('conversations', []);
let current = null; // the open conversation
let chatAbort = null;

function saveConvs() { store.set('conversations', convs); }

function newConv() {
  const c = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: 'New chat', system: '', messages: [] };
  convs.unshift(c);
  saveConvs();
  openConv(c.id);
}

function openConv(id) {
  current = convs.find((c) => c.id === id) || null;
  if (!current) return newConv();
  store.set('current', current.id);
  $('system').value = current.system || '';
  renderConvList();
  renderMessages();
}

function renderConvList() {
  const ul = $('conv-list');
  ul.replaceChildren();
  for (const c of convs) {
    const li = document.createElement('li');
    li.className = c === current ? 'active' : '';
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'conv';
    b.textContent = c.title;
    b.onclick = () => { if (!chatAbort) openConv(c.id); };
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'del';
    del.title = 'Delete this chat';
    del.textContent = '×';
    del.onclick = () => {
      if (chatAbort) return;
      convs = convs.filter((x) => x !== c);
      saveConvs();
      if (c === current) { if (convs.length) openConv(convs[0].id); else newConv(); } else renderConvList();
    };
    li.append(b, del);
    ul.append(li);
  }
}

function messageEl(m) {
  const div = document.createElement('div');
  div.className = 'msg ' + m.role;
  const role = document.createElement('div');
  role.className = 'role';
  role.textContent = m.role;
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = m.content;
  div.append(role, text);
  if (m.role === 'assistant') {
    const foot = document.createElement('div');
    foot.className = 'foot';
    const stats = document.createElement('span');
    stats.className = 'stats muted';
    stats.textContent = m.stats || '';
    const copy = document.createElement('button');
    copy.type = 'button';
    copy.className = 'link copy';
    copy.textContent = 'copy';
    copy.onclick = () => copyText(text.textContent, copy);
    foot.append(stats, copy);
    div.append(foot);
  }
  return div;
}

function renderMessages() {
  const box = $('messages');
  box.replaceChildren(...current.messages.map(messageEl));
  box.scrollTop = box.scrollHeight;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const ta = document.createElement('textarea');
    ta.value = text;
    document.body.append(ta);
    ta.select();
    document.execCommand('copy');
    ta.remove();
  }
  button.textContent = 'copied';
  setTimeout(() => { button.textContent = 'copy'; }, 1200);
}

function busy(on, sendId, stopId) {
  $(sendId).disabled = on;
  $(stopId).hidden = !on;
}

async function sendChat(ev) {
  ev.preventDefault();
  const input = $('chat-input'), text = input.value.trim();
  if (!text || chatAbort) return;
  input.value = '';
  const conv = current;
  conv.system = $('system').value;
  if (!conv.messages.length) conv.title = text.slice(0, 40);
  conv.messages.push({ role: 'user', content: text });
  const reply = { role: 'assistant', content: '', stats: '' };
  conv.messages.push(reply);
  saveConvs();
  renderConvList();
  renderMessages();
  const el = $('messages').lastElementChild, textEl = el.querySelector('.text'), statsEl = el.querySelector('.stats');
  el.classList.add('streaming');
  const history = conv.messages.slice(0, -1).map((m) => ({ role: m.role, content: m.content }));
  if (conv.system.trim()) history.unshift({ role: 'system', content: conv.system });
  chatAbort = new AbortController();
  busy(true, 'send', 'stop');
  let pieces = 0;
  try {
    const res = await streamRequest('/v1/chat/completions', Object.assign({ model: modelId, messages: history }, sampling()),
      (i, t) => {
        if (i) return;
        pieces++;
        reply.content += t;
        textEl.textContent = reply.content;
        $('messages').scrollTop = $('messages').scrollHeight;
      }, chatAbort.signal);
    reply.stats = describe(res, pieces);
  } catch (e) {
    reply.stats = 'error: ' + e.message;
    el.classList.add('failed');
  } finally {
    chatAbort = null;
    busy(false, 'send', 'stop');
    el.classList.remove('streaming');
    statsEl.textContent = reply.stats;
    saveConvs();
  }
}

// ---- completions ---------------------------------------------------------------------------------------

let completeAbort = null;

async function sendCompletion(ev) {
  ev.preventDefault();
  if (completeAbort) return;
  const prompt = $('prompt').value;
  const out = $('completion'), stats = $('completion-stats');
  const p = document.createElement('span');
  p.className = 'prompt-echo';
  p.textContent = prompt;
  const gen = document.createElement('span');
  gen.className = 'generated';
  out.replaceChildren(p, gen);
  stats.textContent = '';
  completeAbort = new AbortController();
  busy(true, 'generate', 'complete-stop');
  let pieces = 0;
  try {
    const res = await streamRequest('/v1/completions', Object.assign({ model: modelId, prompt }, sampling()),
      (i, t) => { if (!i) { pieces++; gen.textContent += t; } }, completeAbort.signal);
    stats.textContent = describe(res, pieces);
  } catch (e) {
    stats.textContent = 'error: ' + e.message;
  } finally {
    completeAbort = null;
    busy(false, 'generate', 'complete-stop');
  }
}

// ---- the dashboard -------------------------------------------------------------------------------------

const SPAN = 60;     // seconds a chart shows: the stats window the page asks for
const HISTORY = 90; // points kept for the charts that the browser builds itself (one a second)
const hist = { t: [], running: [], waiting: [], ttft50: [], ttft99: [] };
let lastStats = null, dashTimer = null;

const fmt = {
  n(v, d = 0) { return v === null || v === undefined ? '–' : Number(v).toFixed(d); },
  pct(v) { return v === null || v === undefined ? '–' : (100 * v).toFixed(1) + ' %'; },
  ms(v) { return v === null || v === undefined ? '–' : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0); },
};

// The last `n` complete seconds of a per-second series (its last entry is the second still running).
function recentRate(series, n) {
  const done = series.slice(0, -1).slice(-n);
  return done.length ? done.reduce((a, b) => a + b, 0) / done.length : 0;
}

function card(label, value, sub) {
  const d = document.createElement('div');
  d.className = 'card';
  const l = document.createElement('div'); l.className = 'label'; l.textContent = label;
  const v = document.createElement('div'); v.className = 'value'; v.textContent = value;
  d.append(l, v);
  if (sub) { const s = document.createElement('div'); s.className = 'sub muted'; s.textContent = sub; d.append(s); }
  return d;
}

function renderDash(s) {
  const e = s.engine || {}, w = s.window, q = (x, k) => (x ? x[k] : null);
  $('cards').replaceChildren(
    card('Running', fmt.n(e.requests_running), 'waiting ' + fmt.n(e.requests_waiting)),
    card('Tokens / s', fmt.n(recentRate(s.series.generated_tokens, 5), 1), 'last 5 s · ' + fmt.n(w.generated_tokens_per_s, 1) + ' over ' + s.window_s + ' s'),
    card('Requests / s', fmt.n(recentRate(s.series.requests, 5), 1), fmt.n(w.requests) + ' in ' + s.window_s + ' s'),
    card('TTFT p50 / p99', fmt.ms(q(w.ttft_ms, 'p50')) + ' / ' + fmt.ms(q(w.ttft_ms, 'p99')), 'ms'),
    card('TPOT p50 / p99', fmt.ms(q(w.tpot_ms, 'p50')) + ' / ' + fmt.ms(q(w.tpot_ms, 'p99')), 'ms per output token'),
    card('KV cache', fmt.pct(e.kv_usage), fmt.n(e.kv_blocks_used) + ' of ' + fmt.n(e.kv_blocks_total) + ' blocks'),
    card('Prefix cache hits', fmt.pct(w.prefix_cache_hit_rate), 'of prompt tokens · ' + fmt.pct(e.prefix_cache_hit_rate) + ' since start'),
    card('Response cache hits', fmt.pct(w.response_cache_hit_rate), 'of cacheable requests'),
    card('Errors', fmt.n(w.errors), fmt.n(s.totals.errors) + ' since start'));

  const lat = $('latency').tBodies[0];
  lat.replaceChildren(...[['TTFT', w.ttft_ms], ['TPOT', w.tpot_ms], ['End to end', w.e2e_ms]].map(([name, p]) => {
    const tr = document.createElement('tr');
    for (const v of [name, fmt.ms(q(p, 'p50')), fmt.ms(q(p, 'p90')), fmt.ms(q(p, 'p99')), fmt.ms(q(p, 'max'))]) {
      const td = document.createElement('td'); td.textContent = v; tr.append(td);
    }
    return tr;
  }));
  const st = $('statuses').tBodies[0];
  const codes = Object.entries(w.status).sort((a, b) => a[0].localeCompare(b[0]));
  st.replaceChildren(...codes.map(([code, n]) => {
    const tr = document.createElement('tr');
    if (!(Number(code) < 400)) tr.className = 'error'; // 'other' too: codes past the per-second table
    for (const v of [code, n]) { const td = document.createElement('td'); td.textContent = v; tr.append(td); }
    return tr;
  }));
  $('dash-note').textContent = 'Server ' + s.status + ', up ' + fmt.n(s.uptime_s) + ' s; ' + w.latency_samples +
    ' generations in the latency window; ' + s.totals.requests + ' requests and ' + s.totals.generated_tokens +
    ' generated tokens since start.';

  const series = s.series, n = series.requests.length;
  const xs = Array.from({ length: n }, (_, i) => i - n + 1);
  drawChart($('chart-tokens'), xs, [{ data: series.generated_tokens, color: '#2f6fde', label: 'tokens/s' }]);
  drawChart($('chart-requests'), xs, [
    { data: series.requests, color: '#2f9e5a', label: 'requests/s' },
    { data: series.errors, color: '#d9453b', label: 'errors/s' }]);
  const hx = hist.t.map((t) => (t - hist.t[hist.t.length - 1]) / 1000);
  drawChart($('chart-load'), hx, [
    { data: hist.running, color: '#2f6fde', label: 'running' },
    { data: hist.waiting, color: '#e08a1e', label: 'waiting' }]);
  drawChart($('chart-ttft'), hx, [
    { data: hist.ttft50, color: '#2f9e5a', label: 'p50' },
    { data: hist.ttft99, color: '#d9453b', label: 'p99' }]);
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

// Lines over x seconds (negative: the past, 0: now), on a canvas sized to its box and the screen's pixel ratio.
function drawChart(cv, xs, lines) {
  const dpr = window.devicePixelRatio || 1, W = cv.clientWidth, H = cv.clientHeight;
  if (!W || !H) return;
  if (cv.width !== Math.round(W * dpr) || cv.height !== Math.round(H * dpr)) {
    cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr);
  }
  const g = cv.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  const css = getComputedStyle(document.body);
  const ink = css.getPropertyValue('--muted').trim() || '#888', grid = css.getPropertyValue('--grid').trim() || '#ddd';
  const L = 44, R = 8, T = 22, B = 20, w = W - L - R, h = H - T - B;
  const xmin = -SPAN, xmax = 0;
  let ymax = 0;
  for (const ln of lines) ln.data.forEach((v, i) => { if (xs[i] >= xmin && v !== null && v > ymax) ymax = v; });
  ymax = niceMax(ymax);
  const X = (x) => L + ((x - xmin) / (xmax - xmin)) * w, Y = (y) => T + h - (y / ymax) * h;
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = ink;
  g.strokeStyle = grid;
  g.lineWidth = 1;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (let i = 0; i <= 4; i++) {
    const y = (ymax * i) / 4;
    g.beginPath(); g.moveTo(L, Y(y) + 0.5); g.lineTo(L + w, Y(y) + 0.5); g.stroke();
    g.fillText(y >= 100 ? y.toFixed(0) : Number(y.toPrecision(3)).toString(), L - 6, Y(y));
  }
  g.textAlign = 'center';
  g.textBaseline = 'top';
  g.fillText(xmin + ' s', X(xmin) + 14, T + h + 5);
  g.fillText('now', X(0) - 12, T + h + 5);
  g.lineWidth = 1.6;
  for (const ln of lines) {
    g.strokeStyle = ln.color;
    g.beginPath();
    let pen = false;
    ln.data.forEach((v, i) => {
      if (v === null || v === undefined || xs[i] < xmin) { pen = false; return; }
      if (pen) g.lineTo(X(xs[i]), Y(v)); else g.moveTo(X(xs[i]), Y(v));
      pen = true;
    });
    g.stroke();
  }
  g.textAlign = 'left';
  let lx = L + 8;
  for (const ln of lines) {
    g.fillStyle = ln.color;
    g.fillRect(lx, 6, 10, 3);
    g.fillStyle = ink;
    g.fillText(ln.label, lx + 14, 2);
    lx += 24 + g.measureText(ln.label).width;
  }
}

async function pollStats() {
  try {
    const r = await api('/v1/stats?window=' + SPAN);
    if (!r.ok) throw new Error(r.status + ': ' + await errorText(r));
    const s = await r.json();
    lastStats = s;
    const e = s.engine || {}, w = s.window;
    hist.t.push(Date.now());
    hist.running.push(e.requests_running ?? null);
    hist.waiting.push(e.requests_waiting ?? null);
    hist.ttft50.push(w.ttft_ms ? w.ttft_ms.p50 : null);
    hist.ttft99.push(w.ttft_ms ? w.ttft_ms.p99 : null);
    for (const k of Object.keys(hist)) if (hist[k].length > HISTORY) hist[k].shift();
    renderDash(s);
    setHealth(s.status);
  } catch (e) {
    $('dash-note').textContent = 'GET /v1/stats failed: ' + e.message;
    setHealth('unreachable');
  }
}

function setHealth(status) {
  const h = $('health');
  h.textContent = status;
  h.className = 'pill ' + (status === 'ok' ? 'ok' : status === 'unreachable' ? 'bad' : 'warn');
}

// ---- tabs and startup ----------------------------------------------------------------------------------

function showTab(name) {
  for (const b of document.querySelectorAll('.tab')) b.classList.toggle('active', b.dataset.tab === name);
  for (const p of document.querySelectorAll('.panel')) p.classList.toggle('active', p.id === name);
  $('settings').hidden = name === 'dash';
  store.set('tab', name);
  location.hash = name;
  clearInterval(dashTimer);
  dashTimer = null;
  if (name === 'dash') { pollStats(); dashTimer = setInterval(pollStats, 1000); }
  else if (lastStats) renderDash(lastStats);
}

let modelId = '';

async function loadModel() {
  const r = await api('/v1/models');
  if (r.ok) {
    const m = await r.json();
    modelId = m.data.length ? m.data[0].id : '';
    $('model').textContent = modelId;
  } else {
    $('model').textContent = 'models: ' + await errorText(r);
  }
}

async function start() {
  loadSettings();
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => showTab(b.dataset.tab));
  $('chat-form').addEventListener('submit', sendChat);
  $('chat-input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) sendChat(ev);
  });
  $('stop').addEventListener('click', () => chatAbort && chatAbort.abort());
  $('complete-form').addEventListener('submit', sendCompletion);
  $('complete-stop').addEventListener('click', () => completeAbort && completeAbort.abort());
  $('new-conv').addEventListener('click', () => { if (!chatAbort) newConv(); });
  $('system').addEventListener('change', () => { if (current) { current.system = $('system').value; saveConvs(); } });
  $('key-button').hidden = !apiKey;
  $('key-button').addEventListener('click', async () => { if (await askKey('')) loadModel(); });
  window.addEventListener('resize', () => lastStats && renderDash(lastStats));

  const id = store.get('current', null);
  if (convs.length) openConv(convs.some((c) => c.id === id) ? id : convs[0].id); else newConv();
  const tab = location.hash.slice(1) || store.get('tab', 'chat');
  showTab(['chat', 'complete', 'dash'].includes(tab) ? tab : 'chat');

  await loadModel();
  const h = await fetch('/health').then((x) => x.json()).catch(() => ({ status: 'unreachable' }));
  setHealth(h.status);
  document.body.dataset.ready = '1'; // for the browser tests: the page has its model and listeners
}

start();

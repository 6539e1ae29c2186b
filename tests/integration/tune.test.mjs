// autoglm tune over the real binary: on a fixture model it finishes within its time budget, prints the table of
// what it tried and a serve command that runs; bad options are one-line usage errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, MODEL, startServer } from './server.mjs';

test('tune finishes within its time budget and prints a runnable serve command', async () => {
  const t0 = Date.now();
  const r = spawnSync(BIN, ['tune', '--model', MODEL, '--slo', 'ttft=10s,tpot=2s', '--input-tokens', '48',
    '--output-tokens', '8', '--time-budget', '30s', '--threads', '1', '--max-seqs', '2,4', '--max-batch-tokens', '64,128'],
  { encoding: 'utf8', timeout: 120000 });
  const took = (Date.now() - t0) / 1000;
  assert.equal(r.status, 0, r.stdout + r.stderr);
  // not a speed: the tuner stops its last bench at the budget's end, and its children within 2 s each
  assert.ok(took < 30 + 10, `took ${took} s`);
  const rows = r.stdout.split('\n').filter((l) => /^\| \d+ \| \d+ \| \d+ \| (on|off) \|/.test(l));
  assert.equal(rows.length, 4, r.stdout); // threads 1; max-seqs 2 beside 4; batch 64 beside 128; the controller
  assert.ok(rows.some((l) => /\| on \|/.test(l)));
  for (const l of rows) assert.match(l, /\| \d+ \| \d+\.\d\d \| \d+\.\d\d \| [\d.]+ \| [\d.]+ \|$/, l); // all measured
  const cmd = /^autoglm serve (.*)$/m.exec(r.stdout);
  assert.ok(cmd, r.stdout);
  assert.match(r.stdout, /^best: goodput [\d.]+ req\/s under ttft=10s,tpot=2s/m);
  // the step model its server fitted, read from /metrics
  assert.match(r.stdout, /^step model of the best: -?[\d.]+ ms \+ -?[\d.]+ ms per decoding row \+ -?[\d.]+ ms per prompt row, fit error \d+%$/m);
  // the command runs as printed (its --model is the path given)
  const args = cmd[1].split(' ');
  assert.equal(args[0], '--model');
  assert.equal(args[1], MODEL);
  const srv = await startServer(args.slice(2), { model: MODEL });
  try {
    const res = await fetch(`${srv.url}/v1/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'llama2', prompt: 'hello', max_tokens: 4 }),
    });
    assert.equal(res.status, 200);
  } finally {
    await srv.stop();
  }
});

test('tune --workload: the requests of a JSONL file, chat and completions alike; the KV pool within --kv-memory-mb', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tune-'));
  const file = path.join(dir, 'work.jsonl');
  writeFileSync(file, [
    JSON.stringify({ model: 'anything', prompt: 'once upon a time', max_tokens: 6, ignore_eos: true }),
    JSON.stringify({ model: 'anything', messages: [{ role: 'user', content: 'hello there' }], max_tokens: 6 }),
  ].join('\n'));
  // 2 full contexts of the llama2 fixture take 4 MiB of KV: --kv-memory-mb holds the pool to 1
  const r = spawnSync(BIN, ['tune', '--model', MODEL, '--workload', file, '--slo', 'ttft=10s', '--time-budget', '20s',
    '--threads', '1', '--max-seqs', '2', '--max-batch-tokens', '64', '--kv-memory-mb', '1'],
  { encoding: 'utf8', timeout: 120000 });
  rmSync(dir, { recursive: true });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const rows = r.stdout.split('\n').filter((l) => /^\| 1 \| 2 \| 64 \| (on|off) \| \d+ \| [1-9]/.test(l));
  assert.equal(rows.length, 2, r.stdout); // the defaults of this list, then the controller; both served requests
  assert.match(r.stdout, /^autoglm serve --model \S+ --threads 1 --max-seqs 2 --max-batch-tokens 64 --kv-cache-mb 1( --slo ttft=10000ms)?$/m);
});

test('bad tune options are one-line usage errors', () => {
  const cases = [
    [['--slo', 'ttft=1s'], /needs --model/],
    [['--model', MODEL, '--slo', 'fast'], /--slo needs/],
    [['--model', MODEL, '--time-budget', '5s'], /--time-budget needs a duration from 20s/],
    [['--model', MODEL, '--max-seqs', '4,x'], /--max-seqs needs a list/],
    [['--model', '/nonexistent.gguf'], /cannot read \/nonexistent.gguf/],
    [['--model', MODEL, '--api', 'embeddings'], /--api must be chat or completions/],
    [['--model', MODEL, '--kv-memory-mb', '0'], /--kv-memory-mb/],
    [['--model', MODEL, '--frobnicate', '1'], /unknown option '--frobnicate'/],
  ];
  for (const [args, re] of cases) {
    const r = spawnSync(BIN, ['tune', ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, args.join(' '));
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
});

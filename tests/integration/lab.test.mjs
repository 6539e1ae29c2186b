// The delay lab (bench/lab/run): two network namespaces, `autoglm serve` and
// `autoglm bench` on either side of a veth pair, the link shaped row by row.
// It needs root and `ip netns` (CI runs as root); elsewhere the run is skipped
// with its reason, and the lab's own refusal (exit 2, one line) is checked.
// Bounds come from the side each fault guarantees: added delay is at least the
// asked value; a client that times out before any answer can arrive sends
// every retry, and the server counts each one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN } from './server.mjs';

const LAB = path.resolve('bench/lab/run');
const SANITIZED = process.env.AUTOGLM_SANITIZED === '1';
const root = process.getuid() === 0;
const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
const netns = root && spawnSync('ip', ['netns', 'list'], { env }).status === 0;
const why = SANITIZED ? 'the lab measures; the proxy and server under the sanitizers are chaos.test.mjs'
  : !root ? 'not root: the lab makes network namespaces' : !netns ? 'no `ip netns` here' : false;

function lab(vars) {
  const json = path.join(mkdtempSync(path.join(tmpdir(), 'ag-lab-')), 'rows.jsonl');
  const r = spawnSync(LAB, [BIN], { encoding: 'utf8', timeout: 180000,
    env: { ...env, DURATION: '3s', CONCURRENCY: '4', OUTPUT_TOKENS: '16', JSON: json, ...vars } });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const rows = readFileSync(json, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  return { rows, out: r.stdout };
}

const labNamespaces = () => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8', env }).stdout.match(/^aglab-\S+/gm) ?? [];

test('the lab: 300 ms delay (with jitter and 1 % loss) and a rate limit, each row saying what made it', { skip: why }, () => {
  const { rows, out } = lab({ ROWS: '0|delay=300ms,jitter=50ms,loss=1%|rate=1mbit', TIMEOUT: '20s', RETRIES: '0' });
  assert.match(out, /\| row \| made by \|/);
  assert.equal(rows.length, 3);
  const [base, slow, rate] = rows;
  for (const r of rows) {
    assert.ok(r.requests > 0 && r.ok === r.requests, JSON.stringify(r));
    assert.equal(r.server_requests, r.requests, 'no retries: the server saw each request once');
  }
  // netem where the kernel has it, else autoglm chaos for delay, nftables for loss, tbf for rate
  if (base.mechanism === 'netem') {
    assert.match(slow.made_by, /^netem delay 300ms 50ms loss 1%/);
  } else {
    assert.equal(base.made_by, 'chaos, no faults');
    assert.equal(slow.made_by, 'chaos --latency 300ms --jitter 50ms; nft drop 1%');
    assert.equal(rate.made_by, 'tbf rate 1mbit');
  }
  // every response's first token crosses the delayed link: at least 300 - 50 ms later than without it
  assert.ok(slow.ttft_p50_ms >= base.ttft_p50_ms + 250, `TTFT p50 ${base.ttft_p50_ms} -> ${slow.ttft_p50_ms} ms`);
  assert.ok(slow.e2e_p50_ms >= 250, `e2e p50 ${slow.e2e_p50_ms} ms`);
  // its own namespaces (named in its header), not the machine's: another lab may be running beside it
  const mine = out.match(/aglab-[sc]-\d+/g);
  assert.equal(mine?.length, 2, out);
  assert.deepEqual(labNamespaces().filter((n) => mine.includes(n)), [], 'the lab removed its namespaces');
});

test('the lab: a timeout shorter than the delay turns each request into 1 + retries at the server', { skip: why }, () => {
  // long answers, so that generations are still running when their clients leave
  const { rows } = lab({ ROWS: 'delay=300ms', TIMEOUT: '200ms', RETRIES: '2', OUTPUT_TOKENS: '256' });
  const [r] = rows;
  assert.ok(r.requests > 0, JSON.stringify(r));
  assert.equal(r.ok, 0, JSON.stringify(r));
  assert.equal(r.timeouts, r.requests);
  assert.equal(r.retries, 2 * r.requests);
  assert.equal(r.server_requests, 3 * r.requests, JSON.stringify(r));
  assert.ok(r.server_aborted > 0, 'the server cancelled generations whose client had gone');
});

test('without root the lab says so in one line and exits 2', () => {
  // as root, run a copy as nobody (the checkout itself may not be open to other users)
  let cmd = [LAB, BIN];
  if (root) {
    const dir = mkdtempSync(path.join(tmpdir(), 'ag-lab-'));
    chmodSync(dir, 0o755);
    copyFileSync(LAB, path.join(dir, 'run'));
    chmodSync(path.join(dir, 'run'), 0o755);
    cmd = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', path.join(dir, 'run'), BIN];
  }
  const r = spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8', timeout: 30000, cwd: tmpdir() });
  assert.equal(r.status, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /^bench\/lab: needs root/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
});

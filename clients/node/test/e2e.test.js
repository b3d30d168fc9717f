// The Node client and the example worker against a real `taskledger serve` (TASKLEDGER_BIN):
// the example's pipeline end to end, outcome mapping, and a ledger SIGKILLed and restarted
// mid-run (no report lost, none doubled, the workers never see an error).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Ledger, LedgerRefused } from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const binary = process.env.TASKLEDGER_BIN;
const skip = binary ? false : 'TASKLEDGER_BIN does not name the taskledger binary (tests/clients.rs sets it)';

async function freePort() {
  const server = createServer();
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  const { port } = server.address();
  await new Promise((resolve) => { server.close(resolve); });
  return port;
}

class LedgerServer {
  constructor(tokens = null) {
    this.dir = mkdtempSync(join(tmpdir(), 'taskledger-node-'));
    this.log = join(this.dir, 'ledger.log');
    this.tokens = tokens;
  }

  async start() {
    this.port ??= await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    const out = openSync(this.log, 'a');
    const env = { ...process.env };
    delete env.TASKLEDGER_TOKENS;
    if (this.tokens) env.TASKLEDGER_TOKENS = this.tokens;
    this.child = spawn(binary, ['serve', '--data-dir', join(this.dir, 'data'), '--listen', `127.0.0.1:${this.port}`], { stdio: ['ignore', out, out], env });
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`taskledger serve exited: ${readFileSync(this.log, 'utf8')}`);
      try {
        const response = await fetch(`${this.url}/healthz`);
        if (response.ok) return;
      } catch { /* not up yet */ }
      if (Date.now() > deadline) throw new Error('taskledger serve did not come up');
      await new Promise((r) => { setTimeout(r, 50); });
    }
  }

  async kill(signal = 'SIGKILL') {
    const exited = new Promise((resolve) => { this.child.once('exit', resolve); });
    this.child.kill(signal);
    await exited;
  }
}

let server;
before(async () => {
  if (skip) return;
  server = new LedgerServer();
  await server.start();
});
after(async () => {
  if (server) {
    await server.kill('SIGTERM');
    rmSync(server.dir, { recursive: true, force: true });
  }
});

test('the example worker: four integration points, dedup and the claim gate', { skip }, async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [join(repo, 'examples', 'node-worker', 'main.js')], {
    env: { ...process.env, TASKLEDGER_URL: server.url, RUN_ID: 'e2e' },
  });
  assert.match(stdout, /second poll of log 0: skipped \(duplicate enqueue\)/);
  assert.match(stdout, /tasks 6, duplicate deliveries skipped 1, mismatches 0/);
  const ledger = new Ledger({ url: server.url });
  const bad = await ledger.chain('partner_tasks:SATLOC:695d:e2e-bad');
  assert.deepEqual(bad.executions[0].attempts.map((a) => a.outcome), ['failed', 'failed', 'dlq']);
  const history = await ledger.history('partner_tasks:SATLOC:695d:e2e-1');
  // The duplicate delivery's claim is recorded as a rejection: the audit shows it.
  assert.deepEqual(history.filter((e) => e.type === 'ReportRejected').map((e) => [e.data.op, e.data.reason]), [['claim', 'notClaimable']]);
  const zero = await ledger.history('partner_tasks:SATLOC:695d:e2e-0');
  assert.deepEqual(zero.filter((e) => e.type === 'ReportRejected').map((e) => [e.data.op, e.data.reason]), [['enqueue', 'duplicateEnqueue']]);
});

test('outcomes against the real ledger', { skip }, async () => {
  const ledger = new Ledger({ url: server.url, retryTotalMs: 5000 });
  const taskId = 'orders:node-client:1';
  const enqueued = await ledger.enqueue({ taskId, maxRetries: 1 });
  assert.equal(enqueued.accepted, true);
  const { executionId } = enqueued;
  const at = '2026-12-01T10:00:00.000Z';
  const first = await ledger.claim({ taskId, executionId, at });
  const again = await ledger.claim({ taskId, executionId, at });
  assert.equal(first.accepted, true);
  assert.equal(again.duplicate, true);
  const refused = await ledger.claim({ taskId, executionId, worker: 'other' });
  assert.deepEqual([refused.accepted, refused.reason, refused.status], [false, 'notClaimable', 'processing']);
  assert.equal((await ledger.fail({ taskId, executionId, error: new Error('connect ECONNREFUSED 10.0.0.1:443') })).accepted, true);
  assert.equal((await ledger.task(taskId)).lastError.category, 'transient');
  assert.equal(await ledger.task('orders:never-seen'), null);
});

test('ledger SIGKILLed and restarted mid-run: nothing lost, nothing doubled', { skip }, async () => {
  const ledger = new Ledger({ url: server.url, retryTotalMs: 30_000 });
  const tasks = 60;
  let done = 0;
  const lifecycle = async (i) => {
    const taskId = `restart_node:t${i}`;
    const { executionId } = await ledger.enqueue({ taskId });
    const claim = await ledger.claim({ taskId, executionId });
    assert.equal(claim.accepted, true, `${taskId}: ${JSON.stringify(claim.raw)}`);
    await ledger.succeed({ taskId, executionId });
    done += 1;
    return taskId;
  };
  const workers = [];
  for (let w = 0; w < 4; w += 1) {
    workers.push((async () => {
      const ids = [];
      for (let i = w; i < tasks; i += 4) {
        ids.push(await lifecycle(i));
        await new Promise((r) => { setTimeout(r, 20); });
      }
      return ids;
    })());
  }
  while (done < 8) await new Promise((r) => { setTimeout(r, 10); });
  await server.kill('SIGKILL');
  await new Promise((r) => { setTimeout(r, 1500); });
  await server.start();
  const ids = (await Promise.all(workers)).flat();
  assert.equal(ids.length, tasks);
  assert.ok(ledger.retries > 0, 'the restart was never noticed: the test did not test it');
  for (const taskId of ids) {
    const history = await ledger.history(taskId);
    assert.deepEqual(history.map((e) => e.type), ['ExecutionEnqueued', 'ExecutionClaimed', 'ExecutionSucceeded'], taskId);
  }
});

test('a worker token may report but not retry: the ledger\'s 403 is a LedgerRefused', { skip }, async () => {
  const guarded = new LedgerServer('w1=reporter,ops=operator+reader');
  await guarded.start();
  try {
    const worker = new Ledger({ url: guarded.url, token: 'w1', retryTotalMs: 5000 });
    const taskId = 'orders:node-roles:1';
    assert.equal((await worker.enqueue({ taskId })).accepted, true);
    await assert.rejects(worker.retry({ taskId, by: 'ops@acme' }), (error) => {
      assert.ok(error instanceof LedgerRefused, String(error));
      assert.equal(error.status, 403);
      assert.equal(error.code, 'forbidden');
      assert.match(error.message, /operator/);
      return true;
    });
    const ops = new Ledger({ url: guarded.url, token: 'ops', retryTotalMs: 5000 });
    const history = await ops.history(taskId);
    assert.equal(history.length, 1, 'nothing of the refused retry was recorded');
    assert.equal(history[0].data.principal, 'w1');
  } finally {
    await guarded.kill('SIGTERM');
    rmSync(guarded.dir, { recursive: true, force: true });
  }
});


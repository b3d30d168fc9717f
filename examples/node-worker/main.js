#!/usr/bin/env node
// A runnable partner pipeline against a local ledger (TASKLEDGER_URL, default
// http://127.0.0.1:7070): a polling worker enqueues partner logs (one twice, which the ledger
// deduplicates), two sync workers process them from an in-memory queue with a flaky partner API
// (failures are re-delivered until they succeed or run out of retries: MAX_RETRIES, which
// the enqueue gives the ledger as maxRetries, so its `dlq` falls on the same failure), and one message is
// delivered twice to show the claim gate. Prints each task's status in the ledger beside the
// worker's own view; exits 1 if any differs.

import { Ledger } from '../../clients/node/src/index.js';
import { enqueuePartnerLog, processPartnerLog } from './pipeline.js';

const QUEUE = 'partner_tasks';
const MAX_RETRIES = 2;
const ledger = new Ledger();
const run = process.env.RUN_ID ?? Date.now().toString(36);

const queue = [];
const publish = async (message) => { queue.push({ message, deliveries: 0 }); };

// The partner API: log i fails its first (i % 3) attempts; "bad" logs always fail.
const attempts = new Map();
async function syncPartnerLog(taskData) {
  const n = (attempts.get(taskData.taskId) ?? 0) + 1;
  attempts.set(taskData.taskId, n);
  if (taskData.id.endsWith('bad')) throw new Error(`invalid log format in ${taskData.logFileName}`);
  if (n <= taskData.failFirst) throw new Error('ETIMEDOUT calling partner api');
  return { rows: 42 };
}

const group = { partnerCode: 'SATLOC' };
const logs = [];
for (let i = 0; i < 5; i += 1) logs.push({ id: `${run}-${i}`, aircraftId: '695d', logFileName: `log${i}.csv`, failFirst: i % 3 });
logs.push({ id: `${run}-bad`, aircraftId: '695d', logFileName: 'broken.csv', failFirst: 0 });

const expected = new Map(); // taskId → the worker's own view of the final status
for (const log of logs) await enqueuePartnerLog(ledger, publish, QUEUE, group, log, { maxRetries: MAX_RETRIES });
// The poller sees log 0 again before it was processed: the ledger says duplicateEnqueue.
const again = await enqueuePartnerLog(ledger, publish, QUEUE, group, logs[0], { maxRetries: MAX_RETRIES });
console.log(`second poll of log 0: ${again === null ? 'skipped (duplicate enqueue)' : 'ENQUEUED TWICE'}`);

let skipped = 0;
async function workerLoop(name) {
  for (;;) {
    const item = queue.shift();
    if (!item) return;
    item.deliveries += 1;
    const outcome = await processPartnerLog(ledger, item.message, syncPartnerLog);
    if (outcome.skipped) { skipped += 1; continue; }
    const { taskId } = item.message;
    if (outcome.ok) {
      expected.set(taskId, 'completed');
      if (item.message.id.endsWith('-1') && !item.duplicated) {
        // At-least-once delivery: the same message arrives once more; the claim gate skips it.
        queue.push({ message: item.message, deliveries: item.deliveries, duplicated: true });
      }
    } else if (item.deliveries <= MAX_RETRIES) {
      expected.set(taskId, 'failed');
      queue.push(item); // redelivered: same execution, as the legacy code does
    } else {
      expected.set(taskId, 'dlq'); // out of retries: the ledger's count (maxRetries) agrees
    }
    console.log(`${name}: ${taskId} attempt ${item.deliveries}: ${outcome.ok ? 'ok' : outcome.error.message}`);
  }
}
await Promise.all([workerLoop('sync-1'), workerLoop('sync-2')]);

let mismatches = 0;
for (const [taskId, view] of expected) {
  const task = await ledger.task(taskId);
  const agrees = task.status === view;
  if (!agrees) mismatches += 1;
  console.log(`${taskId}: ledger ${task.status} (retryCount ${task.retryCount}), worker ${view}${agrees ? '' : '  MISMATCH'}`);
}
console.log(`tasks ${expected.size}, duplicate deliveries skipped ${skipped}, mismatches ${mismatches}, client retries ${ledger.retries}`);
process.exit(mismatches === 0 && skipped === 1 && again === null ? 0 : 1);

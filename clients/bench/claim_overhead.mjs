// Client overhead per report: p50/p99 of a `claim` round trip through the Node `Ledger`, beside
// the same request sent with bare `fetch` (prebuilt body), one at a time, against
// TASKLEDGER_URL. Prints one JSON line.   node clients/bench/claim_overhead.mjs --claims 2000
import { randomUUID } from 'node:crypto';
import { Ledger } from '../node/src/index.js';

const claims = Number(process.argv[process.argv.indexOf('--claims') + 1] || 2000);
const ledger = new Ledger();
const run = randomUUID().slice(0, 8);
const tasks = Array.from({ length: 2 * claims }, (_, i) => [`bench_node:${run}:${i}`, randomUUID()]);
await ledger.report(tasks.map(([taskId, executionId]) => ({ op: 'enqueue', taskId, executionId, queue: 'bench_node' })));

const percentile = (samples, p) => {
  const ordered = [...samples].sort((a, b) => a - b);
  return ordered[Math.min(ordered.length - 1, Math.floor((p / 100) * ordered.length))];
};
const clientMs = [];
for (const [taskId, executionId] of tasks.slice(0, claims)) {
  const started = performance.now();
  const outcome = await ledger.claim({ taskId, executionId, worker: 'bench' });
  clientMs.push(performance.now() - started);
  if (!outcome.accepted) throw new Error(JSON.stringify(outcome.raw));
}
const bareMs = [];
for (const [taskId, executionId] of tasks.slice(claims)) {
  const body = JSON.stringify({ op: 'claim', taskId, executionId, worker: 'bench', at: '2026-12-01T10:00:00.000Z' });
  const started = performance.now();
  const response = await fetch(`${ledger.url}/v1/reports`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
  const text = await response.text();
  bareMs.push(performance.now() - started);
  if (!text.includes('"accepted"')) throw new Error(text);
}
// The client's own CPU per report, no I/O: build the report (at, reportId), encode it, decode an
// answer (the mapping to an outcome is a plain object literal).
const answer = JSON.stringify({ line: 1, outcome: 'accepted', duplicate: false, eventIds: [randomUUID()] });
const rounds = 20000;
let sink = 0;
const cpuStarted = performance.now();
for (let i = 0; i < rounds; i += 1) {
  const body = Ledger.prepare({ op: 'claim', taskId: `bench_node:${i}`, executionId: tasks[0][1], worker: 'bench', redelivered: false });
  sink += JSON.stringify(body).length + JSON.parse(answer).eventIds.length;
}
const cpuUs = ((performance.now() - cpuStarted) / rounds) * 1000;
if (sink === 0) throw new Error('unreachable');
const round = (x) => Math.round(x * 1000) / 1000;
console.log(JSON.stringify({
  client: 'node', claims,
  client_p50_ms: round(percentile(clientMs, 50)), client_p99_ms: round(percentile(clientMs, 99)),
  bare_p50_ms: round(percentile(bareMs, 50)), bare_p99_ms: round(percentile(bareMs, 99)),
  overhead_p50_ms: round(percentile(clientMs, 50) - percentile(bareMs, 50)),
  client_cpu_us_per_report: Math.round(cpuUs * 10) / 10,
}));

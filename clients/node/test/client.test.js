// The Node client on its own, against a scripted HTTP server in this process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Ledger, LedgerRefused, LedgerUnavailable, reportIdFor, REPORT_ID_NAMESPACE } from '../src/index.js';

const EXECUTION = '0b6f0000-0000-4000-8000-000000000001';
const ACCEPTED = { line: 1, outcome: 'accepted', duplicate: false, eventIds: ['e1'] };

async function stub(answers = []) {
  const requests = [];
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => {
      requests.push({ port: request.socket.remotePort, body: JSON.parse(body.split('\n')[0]), headers: request.headers });
      const [status, headers, answer] = answers.shift() ?? [200, {}, ACCEPTED];
      response.writeHead(status, { 'content-type': 'application/json', ...headers });
      response.end(JSON.stringify(answer));
    });
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  return { url: `http://127.0.0.1:${server.address().port}`, requests, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

test('transient answers are retried with one reportId, Retry-After honoured', async () => {
  const server = await stub([[503, {}, { error: { code: 'internal' } }], [429, { 'retry-after': '0.2' }, {}], [500, {}, {}]]);
  try {
    const ledger = new Ledger({ url: server.url, retryTotalMs: 5000, token: 't0k' });
    const started = Date.now();
    const outcome = await ledger.claim({ taskId: 'q:a', executionId: EXECUTION, worker: 'w1' });
    assert.equal(outcome.accepted, true);
    assert.deepEqual(outcome.eventIds, ['e1']);
    assert.equal(server.requests.length, 4);
    assert.ok(Date.now() - started >= 200);
    assert.deepEqual(new Set(server.requests.map((r) => r.body.reportId)), new Set([outcome.reportId]));
    assert.equal(server.requests[0].headers.authorization, 'Bearer t0k');
    assert.equal(ledger.retries, 3);
  } finally { await server.close(); }
});

test('a refusal is not retried and carries the server\'s error', async () => {
  const error = { error: { code: 'invalid_report', message: 'field `at`: is required', place: { line: 1, field: 'at' } } };
  const server = await stub([[400, {}, error]]);
  try {
    const ledger = new Ledger({ url: server.url, retryTotalMs: 5000 });
    await assert.rejects(ledger.succeed({ taskId: 'q:a', executionId: EXECUTION }), (e) => {
      assert.ok(e instanceof LedgerRefused);
      assert.equal(e.status, 400);
      assert.equal(e.code, 'invalid_report');
      assert.deepEqual(e.place, { line: 1, field: 'at' });
      return true;
    });
    assert.equal(server.requests.length, 1);
  } finally { await server.close(); }
});

test('unavailable after the retry budget', async () => {
  const ledger = new Ledger({ url: 'http://127.0.0.1:9', retryTotalMs: 800 });
  const started = Date.now();
  await assert.rejects(ledger.claim({ taskId: 'q:a', executionId: EXECUTION }), (e) => {
    assert.ok(e instanceof LedgerUnavailable);
    assert.ok(e.attempts >= 3, `attempts ${e.attempts}`);
    return true;
  });
  assert.ok(Date.now() - started < 800 + 300);
});

test('report ids are deterministic and match the Python client\'s', () => {
  const report = { op: 'claim', taskId: 'q:a', executionId: EXECUTION, worker: 'w', at: '2026-12-01T10:00:00.000Z' };
  assert.equal(reportIdFor(report), reportIdFor(Object.fromEntries(Object.entries(report).reverse())));
  assert.equal(reportIdFor(report), reportIdFor({ ...report, reportId: 'ignored' }));
  assert.notEqual(reportIdFor(report), reportIdFor({ ...report, at: '2026-12-01T10:00:00.001Z' }));
  // The same value taskledger.report_id_for gives in Python (clients/python/tests).
  assert.equal(reportIdFor({ op: 'claim', b: [1, { z: 1, a: 'é' }] }), 'cd44268f-0d5a-5ac3-a18a-78bb07e0dbc6');
  assert.equal(REPORT_ID_NAMESPACE, '6f1b8a52-2c1e-5d59-9a43-7c1d2f0e9b11');
  assert.equal(Ledger.prepare(report, undefined, 'mine').reportId, 'mine');
});

test('a batch of one and of many map to outcomes in order', async () => {
  const server = await stub([
    [200, {}, ACCEPTED],
    [200, {}, { results: [ACCEPTED, { line: 2, outcome: 'rejected', reason: 'notClaimable', status: 'processing', duplicate: false, eventIds: ['e2'] }] }],
  ]);
  try {
    const ledger = new Ledger({ url: server.url });
    const one = await ledger.report([{ op: 'succeed', taskId: 'q:a', executionId: EXECUTION }]);
    assert.equal(one.length, 1);
    assert.equal(one[0].accepted, true);
    const two = await ledger.report([
      { op: 'claim', taskId: 'q:a', executionId: EXECUTION, worker: 'w' },
      { op: 'claim', taskId: 'q:a', executionId: EXECUTION, worker: 'w2' },
    ]);
    assert.deepEqual(two.map((o) => [o.outcome, o.reason, o.status]), [['accepted', null, null], ['rejected', 'notClaimable', 'processing']]);
  } finally { await server.close(); }
});

// seeds/000's Phase 2, on the ledger: the four integration points of the partner pipeline.
//
//   A. enqueue time   (partner_data_polling_worker.js): report `enqueue`, awaited, before the
//      message is published; a duplicate within the dedup window is skipped, as the seed's
//      findOne-then-continue did.
//   B. processing start (partner_sync_worker.js): `claim` is the atomic claim; refused → skip.
//   C. success: `succeed`.   D. failure: `fail` (the ledger classifies and counts the retry).
//
// In your app: `import { Ledger } from 'taskledger'` (npm install ./clients/node).

/** seeds/000's generateTaskId: `{queue}:{partnerCode}:{aircraftId}:{logId}`. */
export function generateTaskId(queue, { partnerCode, aircraftId, logId }) {
  return `${queue}:${partnerCode}:${aircraftId}:${logId}`;
}

/** A. Report the enqueue, then publish. Returns the published message, or null when skipped. */
export async function enqueuePartnerLog(ledger, publish, queueName, group, logInfo, { maxRetries } = {}) {
  const taskId = generateTaskId(queueName, {
    partnerCode: group.partnerCode, aircraftId: logInfo.aircraftId, logId: logInfo.id,
  });
  const outcome = await ledger.enqueue({
    taskId,
    queue: queueName,
    maxRetries,
    metadata: {
      partnerCode: group.partnerCode, aircraftId: logInfo.aircraftId, logId: logInfo.id,
      logFileName: logInfo.logFileName,
    },
  });
  if (!outcome.accepted) {
    // duplicateEnqueue: already queued/processing within the window (the ledger recorded it).
    return null;
  }
  const message = { ...logInfo, partnerCode: group.partnerCode, taskId, executionId: outcome.executionId };
  await publish(message);
  return message;
}

/** B, C, D around the existing processing. `handler(taskData)` is the partner sync itself. */
export async function processPartnerLog(ledger, taskData, handler, { redelivered = false } = {}) {
  const { taskId, executionId } = taskData;
  const claim = await ledger.claim({ taskId, executionId, redelivered });
  if (!claim.accepted) {
    return { skipped: true, reason: claim.reason === 'notClaimable' ? 'already_processed' : claim.reason };
  }
  try {
    const result = await handler(taskData);
    await ledger.succeed({ taskId, executionId });
    return { skipped: false, ok: true, result };
  } catch (error) {
    await ledger.fail({ taskId, executionId, error });
    return { skipped: false, ok: false, error };
  }
}

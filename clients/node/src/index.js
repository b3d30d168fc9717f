// taskledger: the Node client of the taskledger tracking ledger (SPEC section 10).
//
// Every report carries a `reportId`: the caller's, else uuid5 over the report's canonical JSON
// (keys sorted, no spaces, `reportId` left out) in the namespace REPORT_ID_NAMESPACE, the same
// derivation as the Python client's. It is computed once per call, so every retry of that call
// sends the same id and the ledger appends the report at most once. Transient failures (network
// errors, timeouts, HTTP 5xx, 408, 429 with Retry-After) are retried with exponential backoff and
// full jitter until `retryTotalMs` is spent, then LedgerUnavailable; other 4xx answers are the
// ledger refusing the input: LedgerRefused, never retried. No timers are left behind and nothing
// runs in the background: fetch's own keep-alive pool is the only state.

import { createHash, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

/** The uuid5 namespace of derived report ids. */
export const REPORT_ID_NAMESPACE = '6f1b8a52-2c1e-5d59-9a43-7c1d2f0e9b11';
/** Reports in one POST at most (the server's limit is 10,000; smaller keeps latency low). */
export const BATCH_REPORTS_MAX = 1000;
/** One backoff sleep at most, and the first sleep's ceiling (doubled per attempt). */
const BACKOFF_MAX_MS = 2000;
const BACKOFF_INITIAL_MS = 50;
/** Characters of an error message / stack sent at most (the ledger: 16 KiB / 128 KiB). */
const ERROR_MESSAGE_CHARS_MAX = 4000;
const ERROR_STACK_CHARS_MAX = 32000;

/** Base of the client's errors. */
export class LedgerError extends Error {}

/** The ledger refused the request (HTTP 4xx): retrying cannot help. */
export class LedgerRefused extends LedgerError {
  constructor(status, code, message, place) {
    const where = place && Object.keys(place).length
      ? ` (${Object.entries(place).sort().map(([k, v]) => `${k} ${v}`).join(', ')})`
      : '';
    super(`ledger refused the request: HTTP ${status} ${code}: ${message}${where}`);
    this.name = 'LedgerRefused';
    this.status = status;
    this.code = code;
    this.serverMessage = message;
    this.place = place ?? {};
  }
}

/** The ledger could not be reached (or kept answering 5xx/429) within the retry budget. */
export class LedgerUnavailable extends LedgerError {
  constructor(message, attempts, lastError) {
    super(`${message} after ${attempts} attempt(s): ${lastError?.cause?.code ?? lastError?.message ?? lastError}`);
    this.name = 'LedgerUnavailable';
    this.attempts = attempts;
    this.lastError = lastError;
  }
}

class Transient extends Error {
  constructor(status, retryAfterMs) {
    super(`HTTP ${status}`);
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

/** The current instant as the ledger writes it: UTC, milliseconds. */
export function nowRfc3339() {
  return new Date().toISOString();
}

function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function uuid5(namespace, name) {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  const hash = createHash('sha1').update(ns).update(Buffer.from(name, 'utf8')).digest();
  hash[6] = (hash[6] & 0x0f) | 0x50;
  hash[8] = (hash[8] & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The deterministic reportId of a report (see the module's comment). */
export function reportIdFor(report) {
  const body = { ...report };
  delete body.reportId;
  return uuid5(REPORT_ID_NAMESPACE, canonical(body));
}

/** `{message, category, stack}` from a string, an Error or such an object. */
export function errorBody(error, category, stack) {
  let body;
  if (error instanceof Error) {
    body = { message: `${error.name}: ${error.message}` };
    if (stack === undefined && error.stack) stack = error.stack;
  } else if (error && typeof error === 'object') {
    body = { ...error };
  } else {
    body = { message: String(error) };
  }
  body.message = String(body.message || 'error').slice(0, ERROR_MESSAGE_CHARS_MAX);
  if (category != null) body.category = category;
  if (stack != null) body.stack = String(stack).slice(-ERROR_STACK_CHARS_MAX);
  return body;
}

function dropNulls(object) {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined && v !== null));
}

function toOutcome(sent, answer) {
  return {
    accepted: answer.outcome === 'accepted',
    outcome: String(answer.outcome),
    reason: typeof answer.reason === 'string' ? answer.reason : null,
    duplicate: Boolean(answer.duplicate),
    eventIds: (answer.eventIds ?? []).map(String),
    status: typeof answer.status === 'string' ? answer.status : null,
    reportId: sent.reportId,
    op: sent.op,
    taskId: sent.taskId,
    executionId: sent.executionId ?? null,
    raw: answer,
  };
}

function retryAfterMs(header) {
  if (!header) return null;
  const seconds = Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : null;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

export class Ledger {
  /**
   * @param {object} [options]
   * @param {string} [options.url] default TASKLEDGER_URL, else http://127.0.0.1:7070
   * @param {string} [options.token] default TASKLEDGER_TOKEN (a bearer token)
   * @param {number} [options.timeoutMs] per HTTP request, default 10,000
   * @param {number} [options.retryTotalMs] all attempts of one call, default 30,000
   * @param {string} [options.worker] names this process in claims, default hostname:pid
   */
  constructor({ url, token, timeoutMs = 10_000, retryTotalMs, worker } = {}) {
    const base = url ?? process.env.TASKLEDGER_URL ?? 'http://127.0.0.1:7070';
    const parsed = new URL(base);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new TypeError(`taskledger url must be http(s)://host[:port], not ${base}`);
    }
    this.url = base.replace(/\/+$/, '');
    this.token = token ?? process.env.TASKLEDGER_TOKEN ?? null;
    this.timeoutMs = timeoutMs;
    this.retryTotalMs = retryTotalMs ?? Number(process.env.TASKLEDGER_RETRY_TOTAL_MS ?? 30_000);
    this.worker = worker ?? `${hostname()}:${process.pid}`;
    /** Attempts beyond the first, over this object's life. */
    this.retries = 0;
  }

  /** A new execution (a fresh UUID unless `executionId`); `queue` defaults to the taskId's prefix. */
  enqueue({ taskId, executionId, queue, maxRetries, messageVersion, metadata, at, reportId, ...extra }) {
    return this.#one({
      op: 'enqueue', taskId, executionId: executionId ?? randomUUID(),
      queue: queue ?? String(taskId).split(':')[0], maxRetries, messageVersion, metadata, ...extra,
    }, at, reportId);
  }

  /** The idempotency gate: process the task only when the outcome's `accepted` is true. */
  claim({ taskId, executionId, worker, redelivered = false, at, reportId, ...extra }) {
    return this.#one({
      op: 'claim', taskId, executionId, worker: worker ?? this.worker, redelivered: Boolean(redelivered), ...extra,
    }, at, reportId);
  }

  succeed({ taskId, executionId, worker, at, reportId, ...extra }) {
    return this.#one({ op: 'succeed', taskId, executionId, worker, ...extra }, at, reportId);
  }

  /** `error`: a message, an Error (message `Name: text`, its stack) or `{message, category, stack}`. */
  fail({ taskId, executionId, error, category, stack, worker, at, reportId, ...extra }) {
    return this.#one({
      op: 'fail', taskId, executionId, error: errorBody(error, category, stack), worker, ...extra,
    }, at, reportId);
  }

  archive({ taskId, executionId, reason, by, at, reportId, ...extra }) {
    return this.#one({ op: 'archive', taskId, executionId, reason, by, ...extra }, at, reportId);
  }

  /** A manual retry: a new execution (fresh UUID unless given) in the task's stream. */
  retry({ taskId, executionId, by, reason, queue, maxRetries, metadata, at, reportId, ...extra }) {
    return this.#one({
      op: 'retry', taskId, executionId: executionId ?? randomUUID(), by, reason, queue, maxRetries, metadata, ...extra,
    }, at, reportId);
  }

  /** A batch of reports (SPEC camelCase objects), decided in order; one outcome per report. */
  async report(reports) {
    const prepared = reports.map((r) => Ledger.prepare(r));
    const outcomes = [];
    for (let start = 0; start < prepared.length; start += BATCH_REPORTS_MAX) {
      const chunk = prepared.slice(start, start + BATCH_REPORTS_MAX);
      const body = chunk.map((r) => `${JSON.stringify(r)}\n`).join('');
      let answer = await this.#request('POST', '/v1/reports', body, 'application/x-ndjson');
      // A one-line body is answered with one object, a longer one with {results: [...]}.
      if (answer && answer.outcome !== undefined) answer = { results: [answer] };
      if (!Array.isArray(answer?.results) || answer.results.length !== chunk.length) {
        throw new LedgerError(`unexpected answer to a batch of ${chunk.length}: ${JSON.stringify(answer)}`);
      }
      chunk.forEach((r, i) => outcomes.push(toOutcome(r, answer.results[i])));
    }
    return outcomes;
  }

  /** The report as sent: null/undefined fields dropped, `at` and `reportId` filled in. */
  static prepare(report, at, reportId) {
    const body = dropNulls(report);
    if (at != null) body.at = at;
    body.at ??= nowRfc3339();
    if (reportId != null) body.reportId = reportId;
    body.reportId ??= reportIdFor(body);
    return body;
  }

  /** GET /v1/tasks/{taskId}, or null when the ledger has never seen it. */
  task(taskId) { return this.#get(`/v1/tasks/${encodeURIComponent(taskId)}`); }
  chain(taskId) { return this.#get(`/v1/tasks/${encodeURIComponent(taskId)}/chain`); }
  history(taskId) { return this.#get(`/v1/tasks/${encodeURIComponent(taskId)}/history`); }

  async #one(report, at, reportId) {
    const body = Ledger.prepare(report, at, reportId);
    const answer = await this.#request('POST', '/v1/reports', JSON.stringify(body), 'application/json');
    if (!answer || answer.outcome === undefined) {
      throw new LedgerError(`unexpected answer to a report: ${JSON.stringify(answer)}`);
    }
    return toOutcome(body, answer);
  }

  async #get(path) {
    try {
      return await this.#request('GET', path);
    } catch (error) {
      if (error instanceof LedgerRefused && error.status === 404) return null;
      throw error;
    }
  }

  async #attempt(method, path, body, contentType, timeoutMs) {
    const headers = { accept: 'application/json', 'user-agent': 'taskledger-node/0.1' };
    if (contentType) headers['content-type'] = contentType;
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const response = await fetch(this.url + path, {
      method, headers, body, signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    const { status } = response;
    if (status === 408 || status === 429 || status >= 500) {
      throw new Transient(status, retryAfterMs(response.headers.get('retry-after')));
    }
    let answer = null;
    try {
      answer = text ? JSON.parse(text) : null;
    } catch {
      if (status >= 400) throw new LedgerRefused(status, 'http_error', text.slice(0, 500));
      throw new LedgerError(`the ledger answered HTTP ${status} with no JSON`);
    }
    if (status >= 400) {
      const problem = answer?.error ?? {};
      throw new LedgerRefused(status, String(problem.code ?? 'http_error'), String(problem.message ?? ''), problem.place);
    }
    return answer;
  }

  async #request(method, path, body, contentType) {
    const deadline = Date.now() + this.retryTotalMs;
    for (let attempts = 1; ; attempts += 1) {
      let retryAfter = null;
      let lastError;
      try {
        // No attempt outlives the budget: its timeout is what is left of it.
        const timeoutMs = Math.min(this.timeoutMs, Math.max(50, deadline - Date.now()));
        return await this.#attempt(method, path, body, contentType, timeoutMs);
      } catch (error) {
        if (error instanceof LedgerError) throw error;
        // Transient answers, network errors (fetch's TypeError), timeouts (AbortSignal).
        lastError = error;
        if (error instanceof Transient) retryAfter = error.retryAfterMs;
      }
      const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** Math.min(attempts - 1, 16));
      let wait = Math.random() * cap;
      if (retryAfter != null) wait = Math.max(wait, retryAfter);
      if (Date.now() + wait > deadline) {
        throw new LedgerUnavailable(`taskledger at ${this.url} unavailable for ${this.retryTotalMs} ms`, attempts, lastError);
      }
      await sleep(wait);
      this.retries += 1;
    }
  }
}

export default Ledger;

// Types of the taskledger Node client (src/index.js).

export const REPORT_ID_NAMESPACE: string;
export const BATCH_REPORTS_MAX: number;

export type Status = 'queued' | 'processing' | 'completed' | 'failed' | 'dlq' | 'archived';
export type RejectionReason = 'duplicateEnqueue' | 'notClaimable' | 'unknownExecution' | 'invalidTransition';

export interface ErrorInfo {
  message: string;
  category?: string | null;
  stack?: string | null;
}

/** The ledger's decision on one report. */
export interface Outcome {
  accepted: boolean;
  outcome: 'accepted' | 'rejected' | string;
  reason: RejectionReason | string | null;
  /** The ledger had this report already (same reportId) and answers with the first outcome. */
  duplicate: boolean;
  eventIds: string[];
  /** The execution's status a rejection names (notClaimable, invalidTransition). */
  status: Status | string | null;
  reportId: string;
  op: string;
  taskId: string;
  executionId: string | null;
  raw: Record<string, unknown>;
}

interface Common {
  taskId: string;
  /** Default: now. */
  at?: string;
  /** Default: uuid5 over the report's canonical JSON. */
  reportId?: string;
  [extra: string]: unknown;
}

export interface EnqueueReport extends Common {
  executionId?: string;
  queue?: string;
  maxRetries?: number;
  messageVersion?: string;
  metadata?: Record<string, unknown>;
}
export interface ClaimReport extends Common { executionId: string; worker?: string; redelivered?: boolean }
export interface SucceedReport extends Common { executionId: string; worker?: string }
export interface FailReport extends Common {
  executionId: string;
  error: string | Error | ErrorInfo;
  category?: string;
  stack?: string;
  worker?: string;
}
export interface ArchiveReport extends Common { executionId: string; reason?: string; by?: string }
export interface RetryReport extends Common {
  executionId?: string;
  by?: string;
  reason?: string;
  queue?: string;
  maxRetries?: number;
  metadata?: Record<string, unknown>;
}

export interface LedgerOptions {
  /** Default TASKLEDGER_URL, else http://127.0.0.1:7070. */
  url?: string;
  /** Default TASKLEDGER_TOKEN. */
  token?: string;
  /** Per HTTP request; default 10,000. */
  timeoutMs?: number;
  /** All attempts of one call; default TASKLEDGER_RETRY_TOTAL_MS, else 30,000. */
  retryTotalMs?: number;
  /** Names this process in claims; default hostname:pid. */
  worker?: string;
}

export class LedgerError extends Error {}
export class LedgerRefused extends LedgerError {
  status: number;
  code: string;
  serverMessage: string;
  place: { line?: number; field?: string };
}
export class LedgerUnavailable extends LedgerError {
  attempts: number;
  lastError: unknown;
}

export function reportIdFor(report: Record<string, unknown>): string;
export function errorBody(error: string | Error | ErrorInfo, category?: string | null, stack?: string | null): ErrorInfo;
export function nowRfc3339(): string;

export class Ledger {
  constructor(options?: LedgerOptions);
  readonly url: string;
  readonly worker: string;
  retries: number;
  enqueue(report: EnqueueReport): Promise<Outcome>;
  claim(report: ClaimReport): Promise<Outcome>;
  succeed(report: SucceedReport): Promise<Outcome>;
  fail(report: FailReport): Promise<Outcome>;
  archive(report: ArchiveReport): Promise<Outcome>;
  retry(report: RetryReport): Promise<Outcome>;
  report(reports: Array<Record<string, unknown>>): Promise<Outcome[]>;
  static prepare(report: Record<string, unknown>, at?: string, reportId?: string): Record<string, unknown>;
  task(taskId: string): Promise<Record<string, any> | null>;
  chain(taskId: string): Promise<Record<string, any> | null>;
  history(taskId: string): Promise<Array<Record<string, any>> | null>;
}

export default Ledger;

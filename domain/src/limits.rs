//! Limits on every input, named with their unit. A report beyond a limit is invalid input with a
//! clear error, never a truncation.

/// One NDJSON report line. Generous for a stack trace, small enough that a runaway producer cannot
/// make a single decision allocate without bound.
pub const REPORT_BYTES_MAX: usize = 256 * 1024;
/// taskId: `{queue}:{naturalKey}`; natural keys in the seeds are a few dozen bytes. A key like
/// the others.
pub const TASK_ID_BYTES_MAX: usize = KEY_BYTES_MAX;
/// Keys (SPEC section 3): taskId, executionId, queue, worker, category, groupId, principal.
pub const KEY_BYTES_MAX: usize = 512;
/// Queue names, worker names, operator names, message versions, categories.
pub const NAME_BYTES_MAX: usize = 256;
/// reportId idempotency keys.
pub const REPORT_ID_BYTES_MAX: usize = 256;
/// error.message and archive/retry reasons.
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024;
/// error.stack.
pub const STACK_BYTES_MAX: usize = 128 * 1024;
/// metadata object, serialized.
pub const METADATA_BYTES_MAX: usize = 32 * 1024;
/// maxRetries: the seeds use 5; anything beyond a thousand is a typo, not a policy.
pub const MAX_RETRIES_MAX: u32 = 1000;

//! Identities: `taskId` (one stream each), `executionId` (one enqueue), and the report key that
//! makes reports idempotent and event ids deterministic.

use crate::limits::KEY_BYTES_MAX;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// What is wrong with a key (taskId, queue, worker, principal…; SPEC section 3), if anything:
/// more than [`KEY_BYTES_MAX`] bytes, or a control character (a NUL would break the stores' and
/// the read models' key encodings, a newline the NDJSON formats).
pub fn key_problem(text: &str) -> Option<String> {
    if text.len() > KEY_BYTES_MAX {
        return Some(format!(
            "is {} bytes, more than the limit of {KEY_BYTES_MAX}",
            text.len()
        ));
    }
    text.chars().find(|c| c.is_control()).map(|c| {
        format!(
            "must not contain control characters (found U+{:04X})",
            c as u32
        )
    })
}

/// Business identity of a task, stable across retries: `{queue}:{naturalKey}`. Names its stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    /// Validates a taskId: non-empty, and a key like every other ([`key_problem`]).
    pub fn parse(text: &str) -> Result<TaskId, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        match key_problem(text) {
            Some(problem) => Err(problem),
            None => Ok(TaskId(text.to_owned())),
        }
    }

    /// The stream name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The queue prefix before the first `:`, the default queue of an enqueue that names none.
    pub fn queue_prefix(&self) -> &str {
        self.0.split(':').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identity of one execution (one enqueue or manual retry): a UUID, printed lower-case hyphenated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(pub Uuid);

impl ExecutionId {
    /// Parses any of the UUID text forms.
    pub fn parse(text: &str) -> Result<ExecutionId, String> {
        Uuid::parse_str(text)
            .map(ExecutionId)
            .map_err(|_| format!("{text:?} is not a UUID"))
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The identity of a report for idempotency: derived from its `reportId`, or, without one, from
/// its canonical content. Submitting a report with the same key again appends nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReportKey(pub Uuid);

/// Namespaces of the name-based (v5) UUIDs. Changing any of them changes every event id ever
/// derived, so they are fixed forever.
const REPORT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_2a3c_8e4b_5c7d_9f0a_1b2c_3d4e_5f60);
const REPORT_CONTENT_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_2a3c_8e4b_5c7d_9f0a_1b2c_3d4e_5f61);
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_2a3c_8e4b_5c7d_9f0a_1b2c_3d4e_5f62);

/// RFC 9562's name-based (v5) UUID, exactly `Uuid::new_v5`, with the `sha1` crate's SHA-1 (which
/// uses the CPU's SHA extensions when it has them; `uuid` hashes in portable code). Every report
/// key and event id goes through it, twice per report on the write path.
fn v5(namespace: &Uuid, name: &[u8]) -> Uuid {
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    hasher.update(namespace.as_bytes());
    hasher.update(name);
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

impl ReportKey {
    /// The key of a report that carries a `reportId`. Scoped by taskId because idempotency is
    /// decided inside the task's stream.
    pub fn from_report_id(task_id: &TaskId, report_id: &str) -> ReportKey {
        let mut name = Vec::with_capacity(task_id.0.len() + 1 + report_id.len());
        name.extend_from_slice(task_id.0.as_bytes());
        name.push(0);
        name.extend_from_slice(report_id.as_bytes());
        ReportKey(v5(&REPORT_ID_NAMESPACE, &name))
    }

    /// The key of a report without `reportId`, from its canonical encoding.
    pub fn from_canonical_content(canonical: &[u8]) -> ReportKey {
        ReportKey(v5(&REPORT_CONTENT_NAMESPACE, canonical))
    }

    /// The id of the `index`-th event decided from this report: the same report always yields the
    /// same event ids, on every backend.
    pub fn event_id(self, index: usize) -> Uuid {
        let mut name = [0u8; 24];
        name[..16].copy_from_slice(self.0.as_bytes());
        name[16..].copy_from_slice(&(index as u64).to_be_bytes());
        v5(&EVENT_NAMESPACE, &name)
    }

    /// A number in `[0, 1)` derived from the key: the deterministic stand-in for randomness
    /// (backoff jitter).
    pub fn unit_fraction(self) -> f64 {
        let bytes = self.0.as_bytes();
        let mut high = [0u8; 8];
        high.copy_from_slice(&bytes[8..16]);
        (u64::from_be_bytes(high) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl fmt::Display for ReportKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids ever derived must not change: our SHA-1 path gives `uuid`'s own v5 for names of
    /// every length around SHA-1's 64-byte blocks and its padding.
    #[test]
    fn v5_is_uuid_new_v5() {
        let name: Vec<u8> = (0..300u32).map(|n| (n * 7 + 3) as u8).collect();
        for namespace in [
            REPORT_ID_NAMESPACE,
            REPORT_CONTENT_NAMESPACE,
            EVENT_NAMESPACE,
        ] {
            for len in 0..name.len() {
                assert_eq!(
                    v5(&namespace, &name[..len]),
                    Uuid::new_v5(&namespace, &name[..len]),
                    "{len} bytes"
                );
            }
        }
    }
}

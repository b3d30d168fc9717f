//! `verify` and the digest it proves: the ledger's tamper evidence ([`taskledger_store::chain`]
//! has the design and its proof sketch).
//!
//! [`verify_store`] and [`verify_export`] recompute every stream's hash chain and the running
//! digest over the global order, from the store or from an export, and stop at the first event
//! that breaks them — named by stream, version and position (and line, in an export). Given an
//! earlier [`LedgerDigest`], they also prove that the ledger at that position is a prefix of the
//! one checked: the running digest there must be the same.

use crate::transfer::ExportedEvent;
use crate::ReplayError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::BufRead;
use taskledger_store::chain::GENESIS;
use taskledger_store::chain::{chain_hash, content_hash, digest_step, from_hex, to_hex, Hash};
use taskledger_store::SharedStore;

/// Events read per store call while verifying or digesting.
const AUDIT_EVENTS_BATCH: usize = 8192;

/// The ledger's digest at a position: what `taskledger digest` prints and an auditor keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerDigest {
    /// How many events it covers (the positions `0..position`).
    pub position: u64,
    /// The running digest, 64 hex digits.
    pub digest: String,
}

impl LedgerDigest {
    pub fn new(position: u64, digest: &Hash) -> LedgerDigest {
        LedgerDigest {
            position,
            digest: to_hex(digest),
        }
    }

    /// Parses what `digest` printed: `{"position":P,"digest":"…"}`, or `P:HEX`.
    pub fn parse(text: &str) -> Result<LedgerDigest, String> {
        let text = text.trim();
        let parsed = if text.starts_with('{') {
            serde_json::from_str::<LedgerDigest>(text).map_err(|error| error.to_string())?
        } else {
            let (position, digest) = text
                .split_once(':')
                .ok_or("expected {\"position\":P,\"digest\":\"HEX\"} or P:HEX")?;
            LedgerDigest {
                position: position
                    .trim()
                    .parse()
                    .map_err(|_| format!("position {position:?} is not a whole number"))?,
                digest: digest.trim().to_owned(),
            }
        };
        if from_hex(&parsed.digest).is_none() {
            return Err(format!("digest {:?} is not 64 hex digits", parsed.digest));
        }
        Ok(parsed)
    }
}

/// The first event that breaks a chain, the digest or the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainBreak {
    pub stream: String,
    pub version: u64,
    pub position: u64,
    /// The export's line, when verifying an export.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub problem: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(
            f,
            "stream {:?} version {} (position {}): {}",
            self.stream, self.version, self.position, self.problem
        )
    }
}

/// What `--digest` proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrefixCheck {
    pub position: u64,
    pub expected: String,
    /// The running digest recomputed at `position` (none when the ledger holds fewer events).
    pub found: Option<String>,
    pub prefix: bool,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainVerification {
    /// Events checked (in global order, up to the first break).
    pub events: u64,
    pub streams: u64,
    /// The digest of everything checked (the head's, when nothing broke).
    pub head: LedgerDigest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<ChainBreak>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<PrefixCheck>,
}

impl ChainVerification {
    /// Every chain holds and, when a digest was given, the ledger extends it.
    pub fn ok(&self) -> bool {
        self.broken.is_none() && self.digest.as_ref().is_none_or(|check| check.prefix)
    }
}

/// One event as the checker needs it.
struct Checked<'a> {
    stream: &'a str,
    version: u64,
    position: u64,
    event_id: &'a uuid::Uuid,
    event_type: &'a str,
    schema_version: u16,
    data: &'a [u8],
    hash: Hash,
    line: Option<u64>,
}

/// Recomputes chains and the running digest, one event at a time in global order.
struct Checker {
    next_position: u64,
    digest: Hash,
    /// Per stream: its next version and its last event's hash.
    streams: HashMap<String, (u64, Hash)>,
    claimed: Option<(LedgerDigest, Hash)>,
    prefix: Option<PrefixCheck>,
}

impl Checker {
    fn new(claimed: Option<&LedgerDigest>) -> Result<Checker, ReplayError> {
        let claimed = match claimed {
            None => None,
            Some(claimed) => {
                let hash = from_hex(&claimed.digest).ok_or_else(|| {
                    ReplayError::Io(format!("digest {:?} is not 64 hex digits", claimed.digest))
                })?;
                Some((claimed.clone(), hash))
            }
        };
        let mut checker = Checker {
            next_position: 0,
            digest: GENESIS,
            streams: HashMap::new(),
            claimed,
            prefix: None,
        };
        checker.check_prefix();
        Ok(checker)
    }

    /// Compares the running digest with the claimed one once the checker reaches its position.
    fn check_prefix(&mut self) {
        if let Some((claimed, hash)) = &self.claimed {
            if claimed.position == self.next_position && self.prefix.is_none() {
                self.prefix = Some(PrefixCheck {
                    position: claimed.position,
                    expected: claimed.digest.clone(),
                    found: Some(to_hex(&self.digest)),
                    prefix: *hash == self.digest,
                });
            }
        }
    }

    fn check(&mut self, event: Checked<'_>) -> Result<(), ChainBreak> {
        let broken = |problem: String| ChainBreak {
            stream: event.stream.to_owned(),
            version: event.version,
            position: event.position,
            line: event.line,
            problem,
        };
        if event.position != self.next_position {
            return Err(broken(format!(
                "found at position {} where position {} was expected: an event is missing, \
                 inserted or out of order",
                event.position, self.next_position
            )));
        }
        let (next_version, previous) = self
            .streams
            .get(event.stream)
            .copied()
            .unwrap_or((0, GENESIS));
        if event.version != next_version {
            return Err(broken(format!(
                "version {} where the stream's next version is {next_version}: an event of the \
                 stream is missing, inserted or out of order",
                event.version
            )));
        }
        let computed = chain_hash(
            &previous,
            &content_hash(
                event.stream,
                event.version,
                event.event_id,
                event.event_type,
                event.schema_version,
                event.data,
            ),
        );
        if computed != event.hash {
            return Err(broken(format!(
                "stored hash {} but the event's content after its stream's previous event gives \
                 {}: the event was altered",
                to_hex(&event.hash),
                to_hex(&computed)
            )));
        }
        match self.streams.get_mut(event.stream) {
            Some(entry) => *entry = (next_version + 1, computed),
            None => {
                self.streams
                    .insert(event.stream.to_owned(), (next_version + 1, computed));
            }
        }
        self.digest = digest_step(&self.digest, event.position, &computed);
        self.next_position += 1;
        self.check_prefix();
        Ok(())
    }

    fn finish(mut self, broken: Option<ChainBreak>) -> ChainVerification {
        if let Some((claimed, _)) = &self.claimed {
            if self.prefix.is_none() {
                self.prefix = Some(PrefixCheck {
                    position: claimed.position,
                    expected: claimed.digest.clone(),
                    found: None,
                    prefix: false,
                });
            }
        }
        ChainVerification {
            events: self.next_position,
            streams: self.streams.len() as u64,
            head: LedgerDigest::new(self.next_position, &self.digest),
            broken,
            digest: self.prefix,
        }
    }
}

/// Recomputes every chain of the store, up to its head when the call began.
pub async fn verify_store(
    store: &SharedStore,
    claimed: Option<&LedgerDigest>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ChainVerification, ReplayError> {
    let head = store.head_position();
    let mut checker = Checker::new(claimed)?;
    let mut position = 0;
    while position < head {
        let records = store.read_all(position, AUDIT_EVENTS_BATCH).await?;
        if records.is_empty() {
            break;
        }
        for record in records.iter().take_while(|record| record.position < head) {
            let checked = Checked {
                stream: &record.stream,
                version: record.version,
                position: record.position,
                event_id: &record.event_id,
                event_type: &record.event_type,
                schema_version: record.schema_version,
                data: &record.data,
                hash: record.hash,
                line: None,
            };
            if let Err(broken) = checker.check(checked) {
                return Ok(checker.finish(Some(broken)));
            }
            position = record.position + 1;
        }
        progress(position, head);
    }
    Ok(checker.finish(None))
}

/// Recomputes every chain of an export (`taskledger export`'s NDJSON, which carries each event's
/// hash). A line that is not an exported event is an input error naming it.
pub fn verify_export(
    input: &mut dyn BufRead,
    claimed: Option<&LedgerDigest>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ChainVerification, ReplayError> {
    let mut checker = Checker::new(claimed)?;
    let mut text = String::new();
    let mut line = 0u64;
    loop {
        text.clear();
        let read = input
            .read_line(&mut text)
            .map_err(|error| ReplayError::Io(error.to_string()))?;
        if read == 0 {
            return Ok(checker.finish(None));
        }
        line += 1;
        if text.trim().is_empty() {
            continue;
        }
        let exported: ExportedEvent =
            serde_json::from_str(&text).map_err(|error| ReplayError::Input {
                line,
                problem: error.to_string(),
            })?;
        let hash = match exported.hash.as_deref() {
            Some(hex) => from_hex(hex).ok_or_else(|| ReplayError::Input {
                line,
                problem: format!("hash {hex:?} is not 64 hex digits"),
            })?,
            None => {
                return Err(ReplayError::Input {
                    line,
                    problem: "no hash: an export from a build before the hash chains (import \
                              it, then verify the store)"
                        .into(),
                })
            }
        };
        let (_, data) = crate::transfer::stored_payload(&exported)
            .map_err(|problem| ReplayError::Input { line, problem })?;
        let checked = Checked {
            stream: &exported.stream,
            version: exported.version,
            position: exported.position,
            event_id: &exported.event_id,
            event_type: &exported.event_type,
            schema_version: exported.schema_version,
            data: &data,
            hash,
            line: Some(line),
        };
        if let Err(broken) = checker.check(checked) {
            return Ok(checker.finish(Some(broken)));
        }
        if line.is_multiple_of(AUDIT_EVENTS_BATCH as u64) {
            progress(line);
        }
    }
}

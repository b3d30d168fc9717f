//! Bulk NDJSON ingest: strict by default (a file with any malformed line appends nothing), or
//! `skip_invalid`, which appends the good lines and hands back the bad ones.

use crate::{IngestError, Ledger};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use taskledger_domain::event::RejectionReason;
use taskledger_domain::limits::REPORT_BYTES_MAX;
use taskledger_domain::{Outcome, Report};

/// One malformed input line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong, naming the field.
    pub error: String,
    /// The line as read (cut at the report size limit), for `--rejects`.
    #[serde(skip)]
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Append the valid lines even when some are malformed.
    pub skip_invalid: bool,
    /// Reports decided and appended per store call: one flush per batch. 4096 keeps a batch's
    /// memory to a few MB while making the fsync cost per report negligible.
    pub batch_reports_max: usize,
    /// Who is ingesting, as the caller authenticated them (`local:<OS user>` from the CLI):
    /// recorded in every event appended (SPEC section 3).
    pub principal: Option<String>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            skip_invalid: false,
            batch_reports_max: 4096,
            principal: None,
        }
    }
}

/// SPEC section 7's `ingest` summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestSummary {
    /// Valid reports read.
    pub reports: u64,
    pub accepted: u64,
    /// By reason; every reason is present, zero or not.
    pub rejected: BTreeMap<String, u64>,
    /// Reports seen before (same reportId or content): nothing appended.
    pub duplicates_ignored: u64,
    /// Malformed lines (skipped with `--skip-invalid`).
    pub invalid: u64,
    /// Events appended.
    pub events_appended: u64,
}

impl IngestSummary {
    pub fn new() -> IngestSummary {
        IngestSummary {
            rejected: RejectionReason::NAMES
                .iter()
                .map(|name| ((*name).to_owned(), 0))
                .collect(),
            ..IngestSummary::default()
        }
    }

    pub fn count(&mut self, submitted: &crate::Submitted) {
        self.reports += 1;
        if submitted.duplicate {
            self.duplicates_ignored += 1;
            return;
        }
        self.events_appended += submitted.event_ids.len() as u64;
        match &submitted.outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::Rejected(reason) => {
                *self.rejected.entry(reason.name().to_owned()).or_default() += 1;
            }
        }
    }
}

enum Line {
    Text(String),
    Bad(String, String),
}

/// Reads NDJSON lines with the report size limit enforced while reading, not after.
struct Lines<R> {
    reader: R,
    number: u64,
    bytes_read: u64,
    buffer: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader,
            number: 0,
            bytes_read: 0,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// The next non-blank line with its number.
    fn next_line(&mut self) -> std::io::Result<Option<(u64, Line)>> {
        loop {
            self.buffer.clear();
            let limit = REPORT_BYTES_MAX as u64 + 1;
            let read = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buffer)?;
            if read == 0 {
                return Ok(None);
            }
            self.bytes_read += read as u64;
            self.number += 1;
            if self.buffer.last() != Some(&b'\n') && read as u64 == limit {
                // Too long: skip to the end of the line without holding it.
                let mut rest = Vec::new();
                loop {
                    rest.clear();
                    let more = (&mut self.reader)
                        .take(64 * 1024)
                        .read_until(b'\n', &mut rest)?;
                    self.bytes_read += more as u64;
                    if more == 0 || rest.last() == Some(&b'\n') {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&self.buffer[..200.min(self.buffer.len())])
                    .into_owned();
                return Ok(Some((
                    self.number,
                    Line::Bad(
                        format!("line is longer than the report limit of {REPORT_BYTES_MAX} bytes"),
                        head,
                    ),
                )));
            }
            while matches!(self.buffer.last(), Some(b'\n' | b'\r')) {
                self.buffer.pop();
            }
            if self.buffer.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(
                match String::from_utf8(std::mem::take(&mut self.buffer)) {
                    Ok(text) => (self.number, Line::Text(text)),
                    Err(error) => (
                        self.number,
                        Line::Bad(
                            "not valid UTF-8".into(),
                            String::from_utf8_lossy(error.as_bytes()).into_owned(),
                        ),
                    ),
                },
            ));
        }
    }
}

fn parse(line: Line, number: u64) -> Result<Report, BadLine> {
    match line {
        Line::Text(text) => Report::from_json(&text).map_err(|error| BadLine {
            line: number,
            error: error.to_string(),
            text,
        }),
        Line::Bad(error, text) => Err(BadLine {
            line: number,
            error,
            text,
        }),
    }
}

fn read_error(source_name: &str, error: std::io::Error) -> IngestError {
    IngestError::Read {
        source_name: source_name.to_owned(),
        message: error.to_string(),
    }
}

/// Validates every line without appending: the malformed lines, in order.
pub fn scan_ndjson(reader: impl BufRead, source_name: &str) -> Result<Vec<BadLine>, IngestError> {
    let mut lines = Lines::new(reader);
    let mut bad = Vec::new();
    while let Some((number, line)) = lines.next_line().map_err(|e| read_error(source_name, e))? {
        if let Err(bad_line) = parse(line, number) {
            bad.push(bad_line);
        }
    }
    Ok(bad)
}

/// Ingests an NDJSON file in line order. `open` is called once per pass (strict mode reads the
/// file twice: validate everything, then append). `progress` gets the bytes read so far.
pub async fn ingest_ndjson<R, F>(
    ledger: &Ledger,
    open: F,
    source_name: &str,
    options: &IngestOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(IngestSummary, Vec<BadLine>), IngestError>
where
    R: BufRead,
    F: Fn() -> std::io::Result<R>,
{
    if !options.skip_invalid {
        let reader = open().map_err(|e| read_error(source_name, e))?;
        let bad = scan_ndjson(reader, source_name)?;
        if !bad.is_empty() {
            return Err(IngestError::Invalid(bad));
        }
    }
    let mut lines = Lines::new(open().map_err(|e| read_error(source_name, e))?);
    let mut summary = IngestSummary::new();
    let mut bad = Vec::new();
    let mut batch = Vec::with_capacity(options.batch_reports_max);
    loop {
        let next = lines.next_line().map_err(|e| read_error(source_name, e))?;
        let done = next.is_none();
        if let Some((number, line)) = next {
            match parse(line, number) {
                Ok(mut report) => {
                    report.principal.clone_from(&options.principal);
                    batch.push(report)
                }
                Err(bad_line) => {
                    summary.invalid += 1;
                    bad.push(bad_line);
                }
            }
        }
        if batch.len() >= options.batch_reports_max.max(1) || (done && !batch.is_empty()) {
            for submitted in ledger.submit_batch(std::mem::take(&mut batch)).await? {
                summary.count(&submitted);
            }
            progress(lines.bytes_read);
        }
        if done {
            break;
        }
    }
    progress(lines.bytes_read);
    Ok((summary, bad))
}

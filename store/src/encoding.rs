//! The sled backend's on-disk records. Every value starts with a format byte and a CRC-32 of the
//! rest, verified on every read, so a torn or rotted record is reported, never decoded.
//!
//! Keys (one sled tree, so that one `apply_batch` is atomic across all of them):
//! - `M` + name                      → metadata (format version)
//! - `L` + first position (u64 BE)   → a commit block: the events of one group commit
//! - `S` + stream + 0x00 + version   → the global positions of one stream append
//!
//! A commit block holds many events under one key: group commit writes one log value per flush
//! instead of one per event, which is most of the difference between sled's ~31k two-key inserts/s
//! and the throughput the ledger needs. Blocks are written LZ4-compressed (format 2; about half
//! the bytes on disk); uncompressed format-1 blocks of earlier builds are still read. Format 3
//! adds each event's chain hash ([`crate::chain`]) to its record; blocks of formats 1 and 2 hold
//! none and are rewritten as format 3 when a `taskledger-sled-2` directory is opened.

use crate::{NewEvent, RecordedEvent, StoreError};
use uuid::Uuid;

/// Format byte of index values, and of the uncompressed commit blocks of earlier builds (still
/// read).
pub const RECORD_FORMAT: u8 = 1;
/// Format byte of the commit blocks this build writes: the event records LZ4-compressed (the
/// events of a commit repeat stream names, ids and JSON keys: a third of the bytes to write and
/// fsync).
pub const COMPRESSED_BLOCK_FORMAT: u8 = 2;
/// Format byte of the commit blocks this build writes: as format 2, each record followed by the
/// event's 32-byte chain hash.
pub const HASHED_BLOCK_FORMAT: u8 = 3;
/// A compressed block's records may claim at most this many bytes decompressed: a block closes
/// at 32 KiB plus the one event that crossed it (at most [`crate::EVENT_BYTES_MAX`]).
pub const BLOCK_DECOMPRESSED_BYTES_MAX: usize = 2 * 1024 * 1024;
pub const LOG_PREFIX: u8 = b'L';
pub const STREAM_PREFIX: u8 = b'S';
pub const META_FORMAT_KEY: &[u8] = b"Mformat";
/// The data directory layout version, stored under [`META_FORMAT_KEY`].
/// `-2`: commits are durable through the write-ahead log ([`crate::wal`]) before sled holds them.
/// `-3`: every event carries its chain hash (block format 3).
pub const DIRECTORY_FORMAT: &str = "taskledger-sled-3";
/// The layout before chain hashes: opened, and its blocks rewritten with hashes, in place.
pub const DIRECTORY_FORMAT_BEFORE_HASHES: &str = "taskledger-sled-2";
/// The layout before the write-ahead log; opened and upgraded in place.
pub const DIRECTORY_FORMAT_BEFORE_WAL: &str = "taskledger-sled-1";

pub fn log_key(first_position: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = LOG_PREFIX;
    key[1..].copy_from_slice(&first_position.to_be_bytes());
    key
}

pub fn log_key_position(key: &[u8]) -> Result<u64, StoreError> {
    if key.len() != 9 || key[0] != LOG_PREFIX {
        return Err(corrupt("log key", "malformed key"));
    }
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[1..]);
    Ok(u64::from_be_bytes(bytes))
}

/// `S` + stream + 0x00: every index key of the stream starts with this.
pub fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(STREAM_PREFIX);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key
}

pub fn stream_key(stream: &str, first_version: u64) -> Vec<u8> {
    let mut key = stream_prefix(stream);
    key.extend_from_slice(&first_version.to_be_bytes());
    key
}

pub fn stream_key_version(key: &[u8]) -> Result<u64, StoreError> {
    if key.len() < 10 {
        return Err(corrupt("stream index key", "too short"));
    }
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[key.len() - 8..]);
    Ok(u64::from_be_bytes(bytes))
}

fn corrupt(location: &str, detail: &str) -> StoreError {
    StoreError::Corrupt {
        location: location.to_owned(),
        detail: detail.to_owned(),
    }
}

fn seal(mut body: Vec<u8>) -> Vec<u8> {
    // body[0] is the format byte, body[1..5] the checksum slot.
    let checksum = crc32fast::hash(&body[5..]);
    body[1..5].copy_from_slice(&checksum.to_le_bytes());
    body
}

fn open<'a>(value: &'a [u8], location: &dyn Fn() -> String) -> Result<&'a [u8], StoreError> {
    if value.len() < 5 {
        return Err(StoreError::Corrupt {
            location: location(),
            detail: "record shorter than its header".into(),
        });
    }
    if value[0] != RECORD_FORMAT {
        return Err(StoreError::Corrupt {
            location: location(),
            detail: format!("unknown record format {}", value[0]),
        });
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&value[1..5]);
    if u32::from_le_bytes(stored) != crc32fast::hash(&value[5..]) {
        return Err(StoreError::Corrupt {
            location: location(),
            detail: "checksum mismatch".into(),
        });
    }
    Ok(&value[5..])
}

/// Builds one commit block.
pub struct BlockWriter {
    bytes: Vec<u8>,
    count: u32,
}

impl BlockWriter {
    pub fn new() -> BlockWriter {
        let mut bytes = Vec::with_capacity(64 * 1024);
        bytes.push(RECORD_FORMAT);
        bytes.extend_from_slice(&[0u8; 4]); // checksum
        bytes.extend_from_slice(&[0u8; 4]); // count
        BlockWriter { bytes, count: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded bytes so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Adds one event with its chain hash. Lengths were checked by the caller against the
    /// store's limits.
    pub fn push(
        &mut self,
        stream: &str,
        version: u64,
        event: &NewEvent,
        hash: &crate::chain::Hash,
    ) {
        let NewEvent {
            event_id,
            event_type,
            schema_version,
            recorded_at_ms,
            data,
        } = event;
        let b = &mut self.bytes;
        b.extend_from_slice(&(stream.len() as u16).to_le_bytes());
        b.extend_from_slice(stream.as_bytes());
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(event_id.as_bytes());
        b.push(event_type.len() as u8);
        b.extend_from_slice(event_type.as_bytes());
        b.extend_from_slice(&schema_version.to_le_bytes());
        b.extend_from_slice(&recorded_at_ms.to_le_bytes());
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
        b.extend_from_slice(hash);
        self.count += 1;
    }

    /// The sealed block: format byte, CRC-32, event count, then the records LZ4-compressed.
    pub fn finish(self) -> Vec<u8> {
        let compressed = lz4_flex::compress_prepend_size(&self.bytes[9..]);
        let mut block = Vec::with_capacity(9 + compressed.len());
        block.push(HASHED_BLOCK_FORMAT);
        block.extend_from_slice(&[0u8; 4]); // checksum
        block.extend_from_slice(&self.count.to_le_bytes());
        block.extend_from_slice(&compressed);
        seal(block)
    }
}

/// A verified commit block: its event count, its records (decompressed when stored so), and
/// whether each record carries its chain hash (format 3).
pub struct BlockRecords<'v> {
    pub count: u32,
    pub records: std::borrow::Cow<'v, [u8]>,
    pub hashed: bool,
}

/// Verifies a commit block's checksum and opens its records.
pub fn block_records(first_position: u64, value: &[u8]) -> Result<BlockRecords<'_>, StoreError> {
    let location = || format!("log block {first_position}");
    let (count, records, hashed) = match value.first() {
        Some(&format @ (COMPRESSED_BLOCK_FORMAT | HASHED_BLOCK_FORMAT)) => {
            if value.len() < 9 {
                return Err(corrupt(&location(), "record shorter than its header"));
            }
            let mut stored = [0u8; 4];
            stored.copy_from_slice(&value[1..5]);
            if u32::from_le_bytes(stored) != crc32fast::hash(&value[5..]) {
                return Err(corrupt(&location(), "checksum mismatch"));
            }
            let compressed = &value[9..];
            let claimed = compressed
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| corrupt(&location(), "no decompressed size"))?;
            if claimed > BLOCK_DECOMPRESSED_BYTES_MAX {
                return Err(corrupt(
                    &location(),
                    &format!("claims {claimed} bytes decompressed, over the {BLOCK_DECOMPRESSED_BYTES_MAX} limit"),
                ));
            }
            let records = lz4_flex::decompress_size_prepended(compressed)
                .map_err(|error| corrupt(&location(), &format!("LZ4: {error}")))?;
            (
                &value[5..9],
                std::borrow::Cow::Owned(records),
                format == HASHED_BLOCK_FORMAT,
            )
        }
        _ => {
            let body = open(value, &location)?;
            let count = body
                .get(..4)
                .ok_or_else(|| corrupt(&location(), "no count"))?;
            (count, std::borrow::Cow::Borrowed(&body[4..]), false)
        }
    };
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(count);
    Ok(BlockRecords {
        count: u32::from_le_bytes(bytes),
        records,
        hashed,
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Some(out)
    }
}

/// Decodes a commit block whose first event has `first_position`, verifying its checksum.
/// Events before `from_position` are skipped without allocating.
pub fn decode_block(
    first_position: u64,
    value: &[u8],
    from_position: u64,
    out: &mut Vec<RecordedEvent>,
    max: usize,
) -> Result<u64, StoreError> {
    let block = block_records(first_position, value)?;
    decode_records(first_position, &block, from_position, out, max)
}

/// Decodes the records of a verified block ([`block_records`]). Records of a block without
/// hashes (formats 1 and 2) get [`crate::chain::GENESIS`]: only the upgrade of a directory from
/// before the hashes reads them, and it computes the chains.
pub fn decode_records(
    first_position: u64,
    block: &BlockRecords<'_>,
    from_position: u64,
    out: &mut Vec<RecordedEvent>,
    max: usize,
) -> Result<u64, StoreError> {
    let location = || format!("log block {first_position}");
    let count = block.count;
    let mut cursor = Cursor {
        bytes: &block.records,
        at: 0,
    };
    let bad = || StoreError::Corrupt {
        location: location(),
        detail: "truncated event record".into(),
    };
    for index in 0..u64::from(count) {
        if out.len() >= max {
            break;
        }
        let position = first_position + index;
        let stream_len = u16::from_le_bytes(cursor.array().ok_or_else(bad)?) as usize;
        let stream = cursor.take(stream_len).ok_or_else(bad)?;
        let version = u64::from_le_bytes(cursor.array().ok_or_else(bad)?);
        let event_id = Uuid::from_bytes(cursor.array().ok_or_else(bad)?);
        let type_len = cursor.array::<1>().ok_or_else(bad)?[0] as usize;
        let event_type = cursor.take(type_len).ok_or_else(bad)?;
        let schema_version = u16::from_le_bytes(cursor.array().ok_or_else(bad)?);
        let recorded_at_ms = i64::from_le_bytes(cursor.array().ok_or_else(bad)?);
        let data_len = u32::from_le_bytes(cursor.array().ok_or_else(bad)?) as usize;
        let data = cursor.take(data_len).ok_or_else(bad)?;
        let hash = if block.hashed {
            cursor.array::<32>().ok_or_else(bad)?
        } else {
            crate::chain::GENESIS
        };
        if position < from_position {
            continue;
        }
        let text = |bytes: &[u8]| {
            String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt {
                location: location(),
                detail: "non-UTF-8 name".into(),
            })
        };
        out.push(RecordedEvent {
            stream: text(stream)?,
            version,
            position,
            event_id,
            event_type: text(event_type)?,
            schema_version,
            recorded_at_ms,
            data: data.to_vec(),
            hash,
        });
    }
    Ok(u64::from(count))
}

/// The number of events in a block (checksum verified).
pub fn block_count(first_position: u64, value: &[u8]) -> Result<u64, StoreError> {
    let location = || format!("log block {first_position}");
    let count = match value.first() {
        Some(&(COMPRESSED_BLOCK_FORMAT | HASHED_BLOCK_FORMAT)) => {
            if value.len() < 9 {
                return Err(corrupt(&location(), "record shorter than its header"));
            }
            let mut stored = [0u8; 4];
            stored.copy_from_slice(&value[1..5]);
            if u32::from_le_bytes(stored) != crc32fast::hash(&value[5..]) {
                return Err(corrupt(&location(), "checksum mismatch"));
            }
            &value[5..9]
        }
        _ => open(value, &location)?
            .get(..4)
            .ok_or_else(|| corrupt(&location(), "no count"))?,
    };
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(count);
    Ok(u64::from(u32::from_le_bytes(bytes)))
}

/// Index value: the positions of one stream append.
pub fn encode_positions(positions: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(5 + positions.len() * 8);
    bytes.push(RECORD_FORMAT);
    bytes.extend_from_slice(&[0u8; 4]);
    for position in positions {
        bytes.extend_from_slice(&position.to_le_bytes());
    }
    seal(bytes)
}

pub fn decode_positions(stream: &str, value: &[u8]) -> Result<Vec<u64>, StoreError> {
    let body = open(value, &|| format!("stream index of {stream:?}"))?;
    if body.len() % 8 != 0 {
        return Err(corrupt("stream index", "length not a multiple of 8"));
    }
    Ok(body
        .chunks_exact(8)
        .map(|chunk| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            u64::from_le_bytes(bytes)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_and_a_flipped_bit_is_caught() {
        let mut writer = BlockWriter::new();
        let event = |n: u128, event_type: &str, data: &[u8]| NewEvent {
            event_id: Uuid::from_u128(n),
            event_type: event_type.into(),
            schema_version: 1,
            recorded_at_ms: n as i64,
            data: data.to_vec(),
        };
        writer.push("q:1", 0, &event(1, "T", b"{}"), &[1; 32]);
        writer.push("q:2", 3, &event(2, "U", b"[1]"), &[2; 32]);
        let block = writer.finish();
        let mut out = Vec::new();
        assert_eq!(
            decode_block(10, &block, 0, &mut out, usize::MAX).unwrap(),
            2
        );
        assert_eq!(out[1].position, 11);
        assert_eq!(out[1].stream, "q:2");
        assert_eq!(out[1].data, b"[1]");
        assert_eq!(out[1].hash, [2; 32]);
        for bit in [8 * 5, 8 * 20, 8 * (block.len() - 1)] {
            let mut damaged = block.clone();
            damaged[bit / 8] ^= 1;
            assert!(matches!(
                decode_block(10, &damaged, 0, &mut Vec::new(), usize::MAX),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }
}

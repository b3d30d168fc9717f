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
//! adds each event's chain hash ([`taskledger_store::chain`]) to its record; blocks of formats 1 and 2 hold
//! none and are rewritten as format 3 when a `taskledger-sled-2` directory is opened. Format 4 is
//! a block that retention ([`crate::segment`]) rewrote: each record starts with a tag, an event
//! (as in format 3) or a stub standing for a run of consecutive positions whose events went to
//! one cold segment, so positions stay dense and implicit.

use crate::segment::ColdRef;
use taskledger_store::{NewEvent, RecordedEvent, StoreError};
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
/// Format byte of a block retention rewrote: as format 3, each record tagged
/// ([`STUB_TAG`] / [`EVENT_TAG`]).
pub const STUBBED_BLOCK_FORMAT: u8 = 4;
/// In a format-4 block: an event record follows (as in format 3).
const EVENT_TAG: u8 = 0;
/// In a format-4 block: a stub follows, segment id u32 + positions u32: that many consecutive
/// positions whose events are in that cold segment.
const STUB_TAG: u8 = 1;
/// A compressed block's records may claim at most this many bytes decompressed: a block closes
/// at 32 KiB plus the one event that crossed it (at most [`taskledger_store::EVENT_BYTES_MAX`]).
pub const BLOCK_DECOMPRESSED_BYTES_MAX: usize = 2 * 1024 * 1024;
pub const LOG_PREFIX: u8 = b'L';
pub const STREAM_PREFIX: u8 = b'S';
pub const META_FORMAT_KEY: &[u8] = b"Mformat";
/// The data directory layout version, stored under [`META_FORMAT_KEY`].
/// `-2`: commits are durable through the write-ahead log ([`crate::wal`]) before sled holds them.
/// `-3`: every event carries its chain hash (block format 3).
/// `-4`: blocks may hold stubs of events moved to cold segments (block format 4); an older build
/// would not read them, so it is refused by the format, not by a corrupt block.
pub const DIRECTORY_FORMAT: &str = "taskledger-sled-4";
/// The layout before cold segments: opened as it is (nothing to rewrite), the key updated.
pub const DIRECTORY_FORMAT_BEFORE_SEGMENTS: &str = "taskledger-sled-3";
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
        hash: &taskledger_store::chain::Hash,
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
    /// Format 4: tagged records, stubs among them.
    pub stubbed: bool,
}

/// Verifies a commit block's checksum and opens its records.
pub fn block_records(first_position: u64, value: &[u8]) -> Result<BlockRecords<'_>, StoreError> {
    let location = || format!("log block {first_position}");
    let format = value.first().copied();
    let (count, records, hashed) = match format {
        Some(format @ (COMPRESSED_BLOCK_FORMAT | HASHED_BLOCK_FORMAT | STUBBED_BLOCK_FORMAT)) => {
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
                format != COMPRESSED_BLOCK_FORMAT,
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
        stubbed: format == Some(STUBBED_BLOCK_FORMAT),
    })
}

/// Reads fixed-size fields off a byte slice; `None` when it runs out.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Some(out)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    pub(crate) fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// Decodes a commit block whose first event has `first_position`, verifying its checksum.
/// Events before `from_position` are skipped without allocating. A stubbed position (its event
/// moved to a cold segment) gets a placeholder in `out` and a [`ColdRef`] in `cold`, for
/// [`crate::segment::Cold::fill`].
pub fn decode_block(
    first_position: u64,
    value: &[u8],
    from_position: u64,
    out: &mut Vec<RecordedEvent>,
    cold: &mut Vec<ColdRef>,
    max: usize,
) -> Result<u64, StoreError> {
    let block = block_records(first_position, value)?;
    decode_records(first_position, &block, from_position, out, cold, max)
}

/// Decodes the records of a verified block ([`block_records`]). Records of a block without
/// hashes (formats 1 and 2) get [`taskledger_store::chain::GENESIS`]: only the upgrade of a directory from
/// before the hashes reads them, and it computes the chains.
pub fn decode_records(
    first_position: u64,
    block: &BlockRecords<'_>,
    from_position: u64,
    out: &mut Vec<RecordedEvent>,
    cold: &mut Vec<ColdRef>,
    max: usize,
) -> Result<u64, StoreError> {
    if block.stubbed {
        return decode_stubbed(first_position, block, from_position, out, cold, max);
    }
    let location = || format!("log block {first_position}");
    let count = block.count;
    let mut cursor = Reader {
        bytes: &block.records,
        at: 0,
    };
    for index in 0..u64::from(count) {
        if out.len() >= max {
            break;
        }
        let position = first_position + index;
        decode_record(
            &mut cursor,
            block.hashed,
            position,
            position >= from_position,
            out,
            &location,
        )?;
    }
    Ok(u64::from(count))
}

/// Decodes the record at `cursor` (pushed to `out` when `keep`).
fn decode_record(
    cursor: &mut Reader<'_>,
    hashed: bool,
    position: u64,
    keep: bool,
    out: &mut Vec<RecordedEvent>,
    location: &dyn Fn() -> String,
) -> Result<(), StoreError> {
    let bad = || StoreError::Corrupt {
        location: location(),
        detail: "truncated event record".into(),
    };
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
    let hash = if hashed {
        cursor.array::<32>().ok_or_else(bad)?
    } else {
        taskledger_store::chain::GENESIS
    };
    if !keep {
        return Ok(());
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
    Ok(())
}

/// Decodes a format-4 block: tagged event records and stubs.
fn decode_stubbed(
    first_position: u64,
    block: &BlockRecords<'_>,
    from_position: u64,
    out: &mut Vec<RecordedEvent>,
    cold: &mut Vec<ColdRef>,
    max: usize,
) -> Result<u64, StoreError> {
    let location = || format!("log block {first_position}");
    let bad = || StoreError::Corrupt {
        location: location(),
        detail: "truncated or malformed record".into(),
    };
    let count = u64::from(block.count);
    let mut cursor = Reader {
        bytes: &block.records,
        at: 0,
    };
    let mut position = first_position;
    let end = first_position + count;
    while position < end && out.len() < max {
        match cursor.array::<1>().ok_or_else(bad)?[0] {
            EVENT_TAG => {
                decode_record(
                    &mut cursor,
                    true,
                    position,
                    position >= from_position,
                    out,
                    &location,
                )?;
                position += 1;
            }
            STUB_TAG => {
                let segment = u32::from_le_bytes(cursor.array().ok_or_else(bad)?);
                let run = u64::from(u32::from_le_bytes(cursor.array().ok_or_else(bad)?));
                if run == 0 || position + run > end {
                    return Err(bad());
                }
                for moved in position.max(from_position)..position + run {
                    if out.len() >= max {
                        break;
                    }
                    cold.push(ColdRef {
                        index: out.len(),
                        position: moved,
                        segment,
                    });
                    out.push(placeholder(moved));
                }
                position += run;
            }
            _ => return Err(bad()),
        }
    }
    Ok(count)
}

/// What stands in `out` for a cold event until [`crate::segment::Cold::fill`] replaces it.
pub(crate) fn placeholder(position: u64) -> RecordedEvent {
    RecordedEvent {
        stream: String::new(),
        version: 0,
        position,
        event_id: Uuid::nil(),
        event_type: String::new(),
        schema_version: 0,
        recorded_at_ms: 0,
        data: Vec::new(),
        hash: taskledger_store::chain::GENESIS,
    }
}

/// One position of a block retention rewrites: the event stays, or it went to a cold segment.
pub enum Slot {
    Event(RecordedEvent),
    Cold(u32),
}

/// A format-4 block of `slots` (consecutive positions): events as in format 3, each run of
/// positions moved to one segment as one stub.
pub fn encode_stubbed_block(slots: &[Slot]) -> Vec<u8> {
    let mut records = Vec::new();
    let mut index = 0;
    while index < slots.len() {
        match &slots[index] {
            Slot::Event(event) => {
                records.push(EVENT_TAG);
                let mut writer = BlockWriter::new();
                writer.push(
                    &event.stream,
                    event.version,
                    &NewEvent {
                        event_id: event.event_id,
                        event_type: event.event_type.clone(),
                        schema_version: event.schema_version,
                        recorded_at_ms: event.recorded_at_ms,
                        data: event.data.clone(),
                    },
                    &event.hash,
                );
                records.extend_from_slice(&writer.bytes[9..]);
                index += 1;
            }
            Slot::Cold(segment) => {
                let run = slots[index..]
                    .iter()
                    .take_while(|slot| matches!(slot, Slot::Cold(s) if s == segment))
                    .count();
                records.push(STUB_TAG);
                records.extend_from_slice(&segment.to_le_bytes());
                records.extend_from_slice(&(run as u32).to_le_bytes());
                index += run;
            }
        }
    }
    let compressed = lz4_flex::compress_prepend_size(&records);
    let mut block = Vec::with_capacity(9 + compressed.len());
    block.push(STUBBED_BLOCK_FORMAT);
    block.extend_from_slice(&[0u8; 4]); // checksum
    block.extend_from_slice(&(slots.len() as u32).to_le_bytes());
    block.extend_from_slice(&compressed);
    seal(block)
}

/// The number of events in a block (checksum verified).
pub fn block_count(first_position: u64, value: &[u8]) -> Result<u64, StoreError> {
    let location = || format!("log block {first_position}");
    let count = match value.first() {
        Some(&(COMPRESSED_BLOCK_FORMAT | HASHED_BLOCK_FORMAT | STUBBED_BLOCK_FORMAT)) => {
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
    fn a_stubbed_block_keeps_its_events_and_names_the_segments_of_the_others() {
        let event = |position: u64| RecordedEvent {
            stream: format!("q:{position}"),
            version: position,
            position,
            event_id: Uuid::from_u128(u128::from(position)),
            event_type: "T".into(),
            schema_version: 2,
            recorded_at_ms: 7,
            data: vec![position as u8; 3],
            hash: [position as u8; 32],
        };
        let slots = [
            Slot::Event(event(10)),
            Slot::Cold(3),
            Slot::Cold(3),
            Slot::Event(event(13)),
            Slot::Cold(5),
        ];
        let block = encode_stubbed_block(&slots);
        assert_eq!(block_count(10, &block).unwrap(), 5);
        let (mut out, mut cold) = (Vec::new(), Vec::new());
        assert_eq!(
            decode_block(10, &block, 0, &mut out, &mut cold, usize::MAX).unwrap(),
            5
        );
        assert_eq!(out.len(), 5);
        assert_eq!((&out[0], &out[3]), (&event(10), &event(13)));
        let refs: Vec<_> = cold
            .iter()
            .map(|c| (c.index, c.position, c.segment))
            .collect();
        assert_eq!(refs, [(1, 11, 3), (2, 12, 3), (4, 14, 5)]);
        // From inside a run, at most two.
        let (mut out, mut cold) = (Vec::new(), Vec::new());
        decode_block(10, &block, 12, &mut out, &mut cold, 2).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], event(13));
        assert_eq!((cold.len(), cold[0].index, cold[0].position), (1, 0, 12));
        let mut damaged = block.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(decode_block(10, &damaged, 0, &mut Vec::new(), &mut Vec::new(), 9).is_err());
    }

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
            decode_block(10, &block, 0, &mut out, &mut Vec::new(), usize::MAX).unwrap(),
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
                decode_block(
                    10,
                    &damaged,
                    0,
                    &mut Vec::new(),
                    &mut Vec::new(),
                    usize::MAX
                ),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }
}

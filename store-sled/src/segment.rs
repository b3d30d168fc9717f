//! Cold segments: the retained events of the sled backend, in files of their own.
//!
//! `taskledger retain` moves whole streams out of sled (the hot store) into a segment file in the
//! store's `segments/` directory and leaves a compact stub in each commit block where a moved
//! event was (so positions stay dense and implicit). Nothing is erased: every read of the store
//! merges the stubs with the segments' records, byte for byte the events they were.
//!
//! A segment file (`NNNNNNNN.seg`, the segment's id in decimal) is:
//!
//! ```text
//! header   "TLSEG001" | format u32 | segment id u32                         (16 bytes)
//! frames   per frame: CRC-32 of the rest u32 | compressed length u32 | events u32 |
//!          LZ4 (size-prepended) of the records, each: position u64 + the commit block's
//!          format-3 record (stream, version, event id, type, schema version, recordedAt,
//!          payload, chain hash)
//! footer   LZ4 (size-prepended) of: frames u32, per frame: offset u64 | length u32 |
//!          first position u64 | last position u64 | events u32; streams u32, per stream (in
//!          name order): name length u16 | name | first version u64 | events u32 |
//!          last hash [32] | positions u64 × events
//! trailer  footer offset u64 | footer length u32 | footer CRC-32 u32 | "TLSEGEND"   (24 bytes)
//! ```
//!
//! Records are in global order, so a rebuild reads each frame once. Every frame and the footer
//! are checksummed; a mismatch is [`StoreError::Corrupt`] naming the file and the frame. A file
//! is written under a temporary name, fsynced, renamed and its directory fsynced before any sled
//! key refers to it; a file no key refers to (a crash before the sled batch) is ignored.

use crate::encoding::Reader;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use taskledger_store::chain::Hash;
use taskledger_store::{RecordedEvent, StoreError};
use uuid::Uuid;

const HEADER_MAGIC: &[u8; 8] = b"TLSEG001";
const TRAILER_MAGIC: &[u8; 8] = b"TLSEGEND";
const SEGMENT_FORMAT: u32 = 1;
const HEADER_BYTES: u64 = 16;
const TRAILER_BYTES: u64 = 24;
const FRAME_HEADER_BYTES: usize = 12;
/// Records of one frame before it is closed: LZ4's window is 64 KiB, and reading one cold event
/// decompresses its whole frame, so larger frames would cost reads and gain little.
const FRAME_BYTES_TARGET: usize = 64 * 1024;
/// A frame may claim at most this many bytes decompressed: the target plus one record of the
/// largest event ([`taskledger_store::EVENT_BYTES_MAX`]) and its header.
const FRAME_DECOMPRESSED_BYTES_MAX: usize = 2 * 1024 * 1024;
/// A footer may claim at most this many bytes decompressed (about 4 million retained events, far
/// above what one segment is allowed to hold: [`SEGMENT_EVENTS_MAX`]).
const FOOTER_DECOMPRESSED_BYTES_MAX: usize = 1 << 30;
/// Events one segment holds at most: a retention run writes as many segments as it needs, each
/// moved by its own atomic sled batch, so the batch (every block it rewrites) stays bounded.
pub const SEGMENT_EVENTS_MAX: usize = 1 << 20;
/// Payload bytes one segment holds at most (the same reason).
pub const SEGMENT_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The directory of the segments inside the store's directory.
pub const SEGMENTS_DIR: &str = "segments";
/// The meta key prefix under which sled records each segment it refers to (+ id u32 BE).
pub const SEGMENT_META_PREFIX: &[u8] = b"Msegment";

/// The file name of segment `id`.
pub fn file_name(id: u32) -> String {
    format!("{id:08}.seg")
}

/// The sled key that records segment `id`.
pub fn meta_key(id: u32) -> Vec<u8> {
    let mut key = SEGMENT_META_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The id of a [`meta_key`].
pub fn meta_key_id(key: &[u8]) -> Result<u32, StoreError> {
    key.strip_prefix(SEGMENT_META_PREFIX)
        .and_then(|rest| <[u8; 4]>::try_from(rest).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            location: "segment meta key".into(),
            detail: "malformed key".into(),
        })
}

/// What sled records of a segment: its size and its footer's checksum, so the file a key refers
/// to is the file that was written (not a stale one of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSeal {
    pub file_bytes: u64,
    pub footer_crc: u32,
    pub events: u64,
}

impl SegmentSeal {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&self.file_bytes.to_le_bytes());
        bytes.extend_from_slice(&self.footer_crc.to_le_bytes());
        bytes.extend_from_slice(&self.events.to_le_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    pub fn decode(id: u32, value: &[u8]) -> Result<SegmentSeal, StoreError> {
        let bad = || StoreError::Corrupt {
            location: format!("the meta record of segment {}", file_name(id)),
            detail: "malformed or checksum mismatch".into(),
        };
        if value.len() != 24 || crc32fast::hash(&value[..20]).to_le_bytes() != value[20..24] {
            return Err(bad());
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&value[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&value[8..12]);
        Ok(SegmentSeal {
            file_bytes: u64_at(0),
            footer_crc: u32::from_le_bytes(crc),
            events: u64_at(12),
        })
    }
}

/// One frame of a segment, as its footer lists it.
#[derive(Debug, Clone, Copy)]
struct FrameInfo {
    offset: u64,
    length: u32,
    first_position: u64,
    last_position: u64,
    events: u32,
}

/// One stream's part of a segment, read in place from the footer: versions
/// `first_version..first_version + len()`.
#[derive(Debug, Clone, Copy)]
pub struct ColdStream<'a> {
    pub first_version: u64,
    pub last_hash: Hash,
    /// u64 LE each.
    positions: &'a [u8],
}

impl<'a> ColdStream<'a> {
    /// Events of the stream in this segment.
    pub fn len(&self) -> usize {
        self.positions.len() / 8
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The stream's length as far as this segment holds it.
    pub fn end_version(&self) -> u64 {
        self.first_version + self.len() as u64
    }

    /// The global positions of its events, in version order.
    pub fn positions(&self) -> impl Iterator<Item = u64> + 'a {
        self.positions
            .chunks_exact(8)
            .map(|bytes| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])))
    }
}

/// A stream's part of a segment as the writer collects it.
struct WrittenStream {
    first_version: u64,
    last_hash: Hash,
    positions: Vec<u64>,
}

impl WrittenStream {
    fn end_version(&self) -> u64 {
        self.first_version + self.positions.len() as u64
    }
}

/// A stream's entry of a footer at `offset`: its name and its part. The footer was validated
/// by [`parse_footer`], so the entry is whole.
fn footer_entry(footer: &[u8], offset: u32) -> Option<(&[u8], ColdStream<'_>)> {
    let mut reader = Reader {
        bytes: footer,
        at: offset as usize,
    };
    let name_len = reader.u16()? as usize;
    let name = reader.take(name_len)?;
    let first_version = reader.u64()?;
    let count = reader.u32()? as usize;
    let last_hash = reader.array()?;
    let positions = reader.take(count.checked_mul(8)?)?;
    Some((
        name,
        ColdStream {
            first_version,
            last_hash,
            positions,
        },
    ))
}

/// An open segment: its footer in memory, its file open for positioned reads.
pub struct Segment {
    pub id: u32,
    pub path: PathBuf,
    file: std::fs::File,
    frames: Vec<FrameInfo>,
    /// The footer, decompressed: the stream entries are read from it in place (no allocation
    /// per stream: ~100,000 retained streams load in a few milliseconds).
    footer: Vec<u8>,
    /// Where each stream's entry starts in `footer`, in name order.
    streams: Vec<u32>,
    pub seal: SegmentSeal,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("events", &self.seal.events)
            .finish()
    }
}

fn io_error(path: &Path, what: &str, error: std::io::Error) -> StoreError {
    StoreError::from_io(format_args!("{what} {}", path.display()), &error)
}

fn corrupt(path: &Path, place: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        location: format!("segment file {}{place}", path.display()),
        detail: detail.into(),
    }
}

/// Syncs a directory, so a rename (or a new file) in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "cannot fsync the directory", e))
}

/// Writes one segment: [`SegmentWriter::push`] the events in ascending position, then
/// [`SegmentWriter::finish`].
pub struct SegmentWriter {
    id: u32,
    dir: PathBuf,
    temp_path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    offset: u64,
    records: Vec<u8>,
    frame_first: u64,
    frame_last: u64,
    frame_events: u32,
    frames: Vec<FrameInfo>,
    streams: std::collections::BTreeMap<String, WrittenStream>,
    last_position: Option<u64>,
    events: u64,
}

impl SegmentWriter {
    /// Starts segment `id` in `dir` (created if missing), under a temporary name.
    pub fn create(dir: &Path, id: u32) -> Result<SegmentWriter, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "cannot create", e))?;
        let temp_path = dir.join(format!("{}.tmp", file_name(id)));
        let file = std::fs::File::create(&temp_path)
            .map_err(|e| io_error(&temp_path, "cannot create", e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::with_capacity(HEADER_BYTES as usize);
        header.extend_from_slice(HEADER_MAGIC);
        header.extend_from_slice(&SEGMENT_FORMAT.to_le_bytes());
        header.extend_from_slice(&id.to_le_bytes());
        std::io::Write::write_all(&mut out, &header)
            .map_err(|e| io_error(&temp_path, "cannot write", e))?;
        Ok(SegmentWriter {
            id,
            dir: dir.to_owned(),
            temp_path,
            out,
            offset: HEADER_BYTES,
            records: Vec::with_capacity(FRAME_BYTES_TARGET * 2),
            frame_first: 0,
            frame_last: 0,
            frame_events: 0,
            frames: Vec::new(),
            streams: std::collections::BTreeMap::new(),
            last_position: None,
            events: 0,
        })
    }

    /// Adds one event. Positions must ascend, and each stream's versions must follow on from its
    /// previous event in this segment (the caller moves whole runs of a stream).
    pub fn push(&mut self, event: &RecordedEvent) -> Result<(), StoreError> {
        if self
            .last_position
            .is_some_and(|last| event.position <= last)
        {
            return Err(StoreError::Io(format!(
                "segment {}: position {} after {:?}: positions must ascend",
                file_name(self.id),
                event.position,
                self.last_position
            )));
        }
        match self.streams.get_mut(event.stream.as_str()) {
            Some(stream) => {
                if event.version != stream.end_version() {
                    return Err(StoreError::Io(format!(
                        "segment {}: stream {:?} version {} after {}: versions must follow on",
                        file_name(self.id),
                        event.stream,
                        event.version,
                        stream.end_version()
                    )));
                }
                stream.positions.push(event.position);
                stream.last_hash = event.hash;
            }
            None => {
                self.streams.insert(
                    event.stream.clone(),
                    WrittenStream {
                        first_version: event.version,
                        last_hash: event.hash,
                        positions: vec![event.position],
                    },
                );
            }
        }
        if self.frame_events == 0 {
            self.frame_first = event.position;
        }
        self.frame_last = event.position;
        self.frame_events += 1;
        self.last_position = Some(event.position);
        self.events += 1;
        encode_record(&mut self.records, event);
        if self.records.len() >= FRAME_BYTES_TARGET {
            self.close_frame()?;
        }
        Ok(())
    }

    fn close_frame(&mut self) -> Result<(), StoreError> {
        if self.frame_events == 0 {
            return Ok(());
        }
        let compressed = lz4_flex::compress_prepend_size(&self.records);
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + compressed.len());
        frame.extend_from_slice(&[0u8; 4]);
        frame.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
        frame.extend_from_slice(&self.frame_events.to_le_bytes());
        frame.extend_from_slice(&compressed);
        let crc = crc32fast::hash(&frame[4..]);
        frame[..4].copy_from_slice(&crc.to_le_bytes());
        std::io::Write::write_all(&mut self.out, &frame)
            .map_err(|e| io_error(&self.temp_path, "cannot write", e))?;
        self.frames.push(FrameInfo {
            offset: self.offset,
            length: frame.len() as u32,
            first_position: self.frame_first,
            last_position: self.frame_last,
            events: self.frame_events,
        });
        self.offset += frame.len() as u64;
        self.records.clear();
        self.frame_events = 0;
        Ok(())
    }

    /// Events pushed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Writes the footer, fsyncs the file, renames it to its final name and fsyncs the directory;
    /// returns the segment, open.
    pub fn finish(mut self) -> Result<Segment, StoreError> {
        self.close_frame()?;
        let mut footer = Vec::new();
        footer.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        for frame in &self.frames {
            footer.extend_from_slice(&frame.offset.to_le_bytes());
            footer.extend_from_slice(&frame.length.to_le_bytes());
            footer.extend_from_slice(&frame.first_position.to_le_bytes());
            footer.extend_from_slice(&frame.last_position.to_le_bytes());
            footer.extend_from_slice(&frame.events.to_le_bytes());
        }
        footer.extend_from_slice(&(self.streams.len() as u32).to_le_bytes());
        for (name, stream) in &self.streams {
            footer.extend_from_slice(&(name.len() as u16).to_le_bytes());
            footer.extend_from_slice(name.as_bytes());
            footer.extend_from_slice(&stream.first_version.to_le_bytes());
            footer.extend_from_slice(&(stream.positions.len() as u32).to_le_bytes());
            footer.extend_from_slice(&stream.last_hash);
            for position in stream.positions.iter() {
                footer.extend_from_slice(&position.to_le_bytes());
            }
        }
        let (_, streams) = parse_footer(&footer, self.offset).ok_or_else(|| {
            StoreError::Io(format!(
                "segment {}: the footer written does not parse back",
                file_name(self.id)
            ))
        })?;
        let raw_footer = footer;
        let footer = lz4_flex::compress_prepend_size(&raw_footer);
        let footer_crc = crc32fast::hash(&footer);
        let mut trailer = Vec::with_capacity(TRAILER_BYTES as usize);
        trailer.extend_from_slice(&self.offset.to_le_bytes());
        trailer.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        trailer.extend_from_slice(&footer_crc.to_le_bytes());
        trailer.extend_from_slice(TRAILER_MAGIC);
        let path = &self.temp_path;
        std::io::Write::write_all(&mut self.out, &footer)
            .and_then(|()| std::io::Write::write_all(&mut self.out, &trailer))
            .map_err(|e| io_error(path, "cannot write", e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_error(path, "cannot write", e.into_error()))?;
        file.sync_all()
            .map_err(|e| io_error(path, "cannot fsync", e))?;
        drop(file);
        let final_path = self.dir.join(file_name(self.id));
        std::fs::rename(path, &final_path).map_err(|e| io_error(path, "cannot rename", e))?;
        sync_dir(&self.dir)?;
        let file_bytes = self.offset + footer.len() as u64 + TRAILER_BYTES;
        let file = std::fs::File::open(&final_path)
            .map_err(|e| io_error(&final_path, "cannot open", e))?;
        Ok(Segment {
            id: self.id,
            path: final_path,
            file,
            frames: self.frames,
            footer: raw_footer,
            streams,
            seal: SegmentSeal {
                file_bytes,
                footer_crc,
                events: self.events,
            },
        })
    }
}

fn encode_record(b: &mut Vec<u8>, event: &RecordedEvent) {
    b.extend_from_slice(&event.position.to_le_bytes());
    b.extend_from_slice(&(event.stream.len() as u16).to_le_bytes());
    b.extend_from_slice(event.stream.as_bytes());
    b.extend_from_slice(&event.version.to_le_bytes());
    b.extend_from_slice(event.event_id.as_bytes());
    b.push(event.event_type.len() as u8);
    b.extend_from_slice(event.event_type.as_bytes());
    b.extend_from_slice(&event.schema_version.to_le_bytes());
    b.extend_from_slice(&event.recorded_at_ms.to_le_bytes());
    b.extend_from_slice(&(event.data.len() as u32).to_le_bytes());
    b.extend_from_slice(&event.data);
    b.extend_from_slice(&event.hash);
}

fn decode_record(reader: &mut Reader<'_>) -> Option<RecordedEvent> {
    let position = reader.u64()?;
    let stream_len = reader.u16()? as usize;
    let stream = String::from_utf8(reader.take(stream_len)?.to_vec()).ok()?;
    let version = reader.u64()?;
    let event_id = Uuid::from_bytes(reader.array()?);
    let type_len = reader.array::<1>()?[0] as usize;
    let event_type = String::from_utf8(reader.take(type_len)?.to_vec()).ok()?;
    let schema_version = reader.u16()?;
    let recorded_at_ms = i64::from_le_bytes(reader.array()?);
    let data_len = reader.u32()? as usize;
    let data = reader.take(data_len)?.to_vec();
    let hash = reader.array()?;
    Some(RecordedEvent {
        stream,
        version,
        position,
        event_id,
        event_type,
        schema_version,
        recorded_at_ms,
        data,
        hash,
    })
}

/// A frame's records, decompressed, and where each starts: (position, offset).
struct Frame {
    index: usize,
    records: Vec<u8>,
    offsets: Vec<(u64, usize)>,
}

/// Steps over one record; returns its position.
fn skip_record(reader: &mut Reader<'_>) -> Option<u64> {
    let position = reader.u64()?;
    let stream_len = reader.u16()? as usize;
    reader.take(stream_len + 8 + 16)?;
    let type_len = reader.array::<1>()?[0] as usize;
    reader.take(type_len + 2 + 8)?;
    let data_len = reader.u32()? as usize;
    reader.take(data_len + 32)?;
    Some(position)
}

impl Segment {
    /// Opens segment `id` in `dir` and checks it against what sled recorded of it.
    pub fn open(dir: &Path, id: u32, seal: SegmentSeal) -> Result<Segment, StoreError> {
        let path = dir.join(file_name(id));
        let file = std::fs::File::open(&path).map_err(|e| {
            io_error(
                &path,
                "cannot open the cold segment (the ledger refers to it)",
                e,
            )
        })?;
        let length = file
            .metadata()
            .map_err(|e| io_error(&path, "cannot stat", e))?
            .len();
        if length != seal.file_bytes {
            return Err(corrupt(
                &path,
                "",
                format!("{length} bytes, but {} were written", seal.file_bytes),
            ));
        }
        if length < HEADER_BYTES + TRAILER_BYTES {
            return Err(corrupt(&path, "", "shorter than its header and trailer"));
        }
        let mut header = [0u8; HEADER_BYTES as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| io_error(&path, "cannot read", e))?;
        if &header[..8] != HEADER_MAGIC
            || header[8..12] != SEGMENT_FORMAT.to_le_bytes()
            || header[12..16] != id.to_le_bytes()
        {
            return Err(corrupt(
                &path,
                " header",
                "not a segment of this build, or of another id",
            ));
        }
        let mut trailer = [0u8; TRAILER_BYTES as usize];
        file.read_exact_at(&mut trailer, length - TRAILER_BYTES)
            .map_err(|e| io_error(&path, "cannot read", e))?;
        let mut reader = Reader {
            bytes: &trailer,
            at: 0,
        };
        let (Some(footer_offset), Some(footer_length), Some(footer_crc)) =
            (reader.u64(), reader.u32(), reader.u32())
        else {
            return Err(corrupt(&path, " trailer", "truncated"));
        };
        if &trailer[16..] != TRAILER_MAGIC
            || footer_offset.checked_add(u64::from(footer_length)) != Some(length - TRAILER_BYTES)
        {
            return Err(corrupt(&path, " trailer", "malformed"));
        }
        if footer_crc != seal.footer_crc {
            return Err(corrupt(
                &path,
                " trailer",
                "footer checksum differs from the one recorded when it was written",
            ));
        }
        let mut footer = vec![0u8; footer_length as usize];
        file.read_exact_at(&mut footer, footer_offset)
            .map_err(|e| io_error(&path, "cannot read", e))?;
        if crc32fast::hash(&footer) != footer_crc {
            return Err(corrupt(&path, " footer", "checksum mismatch"));
        }
        let claimed = footer
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .unwrap_or(usize::MAX);
        if claimed > FOOTER_DECOMPRESSED_BYTES_MAX {
            return Err(corrupt(
                &path,
                " footer",
                "claims too many bytes decompressed",
            ));
        }
        let footer = lz4_flex::decompress_size_prepended(&footer)
            .map_err(|e| corrupt(&path, " footer", format!("LZ4: {e}")))?;
        let (frames, streams) = parse_footer(&footer, footer_offset)
            .ok_or_else(|| corrupt(&path, " footer", "malformed"))?;
        let events: u64 = frames.iter().map(|f| u64::from(f.events)).sum();
        if events != seal.events {
            return Err(corrupt(
                &path,
                " footer",
                format!("lists {events} events, {} were written", seal.events),
            ));
        }
        Ok(Segment {
            id,
            path,
            file,
            frames,
            footer,
            streams,
            seal,
        })
    }

    /// This segment's part of `stream`.
    pub fn stream(&self, stream: &str) -> Option<ColdStream<'_>> {
        let entry = |offset: u32| footer_entry(&self.footer, offset);
        let index = self
            .streams
            .binary_search_by(|&offset| {
                entry(offset).map_or(std::cmp::Ordering::Less, |(name, _)| {
                    name.cmp(stream.as_bytes())
                })
            })
            .ok()?;
        entry(self.streams[index]).map(|(_, part)| part)
    }

    /// Streams in this segment.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The frame that holds `position`, if any.
    fn frame_of(&self, position: u64) -> Option<usize> {
        let index = self
            .frames
            .partition_point(|frame| frame.first_position <= position);
        let index = index.checked_sub(1)?;
        (position <= self.frames[index].last_position).then_some(index)
    }

    /// Reads, verifies and decompresses frame `index`, and finds where each record starts
    /// (records are decoded only when asked for: a read of one stream wants one or two of them).
    fn read_frame(&self, index: usize) -> Result<Frame, StoreError> {
        let frame = self.frames[index];
        let place = format!(", frame {index} at byte {}", frame.offset);
        let mut bytes = vec![0u8; frame.length as usize];
        self.file
            .read_exact_at(&mut bytes, frame.offset)
            .map_err(|e| io_error(&self.path, "cannot read", e))?;
        if bytes.len() < FRAME_HEADER_BYTES {
            return Err(corrupt(&self.path, &place, "shorter than its header"));
        }
        if crc32fast::hash(&bytes[4..]).to_le_bytes() != bytes[..4] {
            return Err(corrupt(&self.path, &place, "checksum mismatch (bit rot?)"));
        }
        let mut head = Reader {
            bytes: &bytes[4..FRAME_HEADER_BYTES],
            at: 0,
        };
        let (compressed, events) = (head.u32().unwrap_or(0), head.u32().unwrap_or(0));
        let body = &bytes[FRAME_HEADER_BYTES..];
        if compressed as usize != body.len() || events != frame.events {
            return Err(corrupt(
                &self.path,
                &place,
                "header disagrees with the footer",
            ));
        }
        let claimed = body
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .unwrap_or(usize::MAX);
        if claimed > FRAME_DECOMPRESSED_BYTES_MAX {
            return Err(corrupt(
                &self.path,
                &place,
                "claims too many bytes decompressed",
            ));
        }
        let records = lz4_flex::decompress_size_prepended(body)
            .map_err(|e| corrupt(&self.path, &place, format!("LZ4: {e}")))?;
        let mut reader = Reader {
            bytes: &records,
            at: 0,
        };
        let mut offsets = Vec::with_capacity(events as usize);
        for _ in 0..events {
            let at = reader.at;
            let position = skip_record(&mut reader)
                .ok_or_else(|| corrupt(&self.path, &place, "truncated or malformed record"))?;
            offsets.push((position, at));
        }
        if !reader.done() {
            return Err(corrupt(&self.path, &place, "bytes after its last record"));
        }
        Ok(Frame {
            index,
            records,
            offsets,
        })
    }
}

/// Validates a decompressed footer: frames contiguous from the header to `frames_end`, in
/// ascending positions; stream entries whole, in strictly ascending name order. Returns the
/// frames and where each stream entry starts.
fn parse_footer(footer: &[u8], frames_end: u64) -> Option<(Vec<FrameInfo>, Vec<u32>)> {
    let mut reader = Reader {
        bytes: footer,
        at: 0,
    };
    let frame_count = reader.u32()? as usize;
    let mut frames = Vec::with_capacity(frame_count.min(footer.len() / 32));
    let mut expected_offset = HEADER_BYTES;
    for _ in 0..frame_count {
        let frame = FrameInfo {
            offset: reader.u64()?,
            length: reader.u32()?,
            first_position: reader.u64()?,
            last_position: reader.u64()?,
            events: reader.u32()?,
        };
        let previous_last = frames.last().map(|f: &FrameInfo| f.last_position);
        if frame.offset != expected_offset
            || frame.first_position > frame.last_position
            || previous_last.is_some_and(|last| frame.first_position <= last)
            || frame.events == 0
        {
            return None;
        }
        expected_offset = frame.offset.checked_add(u64::from(frame.length))?;
        frames.push(frame);
    }
    if expected_offset != frames_end {
        return None;
    }
    let stream_count = reader.u32()? as usize;
    let mut streams: Vec<u32> = Vec::with_capacity(stream_count.min(footer.len() / 48));
    let mut previous: Option<&[u8]> = None;
    for _ in 0..stream_count {
        let offset = u32::try_from(reader.at).ok()?;
        let name_len = reader.u16()? as usize;
        let name = reader.take(name_len)?;
        std::str::from_utf8(name).ok()?;
        reader.u64()?;
        let count = reader.u32()? as usize;
        reader.take(32)?;
        if count == 0 {
            return None;
        }
        reader.take(count.checked_mul(8)?)?;
        if previous.is_some_and(|last| last >= name) {
            return None;
        }
        previous = Some(name);
        streams.push(offset);
    }
    reader.done().then_some((frames, streams))
}

/// Where a stubbed position's event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdRef {
    /// Index of the placeholder in the output being filled.
    pub index: usize,
    pub position: u64,
    pub segment: u32,
}

/// Every segment the store refers to.
#[derive(Debug, Default)]
pub struct Cold {
    segments: std::collections::BTreeMap<u32, std::sync::Arc<Segment>>,
}

impl Cold {
    pub fn insert(&mut self, segment: std::sync::Arc<Segment>) {
        self.segments.insert(segment.id, segment);
    }

    pub fn remove(&mut self, id: u32) {
        self.segments.remove(&id);
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn segments(&self) -> impl Iterator<Item = &std::sync::Arc<Segment>> {
        self.segments.values()
    }

    /// The id the next segment gets.
    pub fn next_id(&self) -> u32 {
        self.segments.keys().next_back().map_or(1, |id| id + 1)
    }

    /// A cold stream's length and last hash (from the newest segment that holds it: later
    /// segments hold later versions).
    pub fn head(&self, stream: &str) -> Option<(u64, Hash)> {
        self.segments
            .values()
            .rev()
            .find_map(|segment| segment.stream(stream))
            .map(|part| (part.end_version(), part.last_hash))
    }

    /// Every cold version of `stream`: (version, position, segment), in version order.
    pub fn stream_positions(&self, stream: &str) -> Vec<(u64, u64, u32)> {
        let mut out = Vec::new();
        for segment in self.segments.values() {
            if let Some(part) = segment.stream(stream) {
                for (offset, position) in part.positions().enumerate() {
                    out.push((part.first_version + offset as u64, position, segment.id));
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Replaces the placeholders `refs` name in `out` with their events, read from the segments.
    /// Taken by segment and position, so each frame is read once per call.
    pub fn fill(&self, out: &mut [RecordedEvent], refs: &[ColdRef]) -> Result<(), StoreError> {
        let mut refs = refs.to_vec();
        refs.sort_unstable_by_key(|cold| (cold.segment, cold.position));
        let mut frame: Option<(u32, Frame)> = None;
        for cold in &refs {
            let segment = self
                .segments
                .get(&cold.segment)
                .ok_or_else(|| StoreError::Corrupt {
                    location: format!("position {}", cold.position),
                    detail: format!(
                        "moved to cold segment {}, which the store does not refer to",
                        file_name(cold.segment)
                    ),
                })?;
            let index = segment.frame_of(cold.position).ok_or_else(|| {
                corrupt(
                    &segment.path,
                    "",
                    format!("holds no event at position {}", cold.position),
                )
            })?;
            if !matches!(&frame, Some((id, at)) if *id == cold.segment && at.index == index) {
                frame = Some((cold.segment, segment.read_frame(index)?));
            }
            let Some((_, current)) = &frame else {
                unreachable!("set just above")
            };
            let place = format!(", frame {index}");
            let found = current
                .offsets
                .binary_search_by_key(&cold.position, |(position, _)| *position)
                .map_err(|_| {
                    corrupt(
                        &segment.path,
                        &place,
                        format!("holds no event at position {}", cold.position),
                    )
                })?;
            let mut reader = Reader {
                bytes: &current.records,
                at: current.offsets[found].1,
            };
            let event = decode_record(&mut reader)
                .ok_or_else(|| corrupt(&segment.path, &place, "malformed record"))?;
            let slot = out.get_mut(cold.index).ok_or_else(|| StoreError::Corrupt {
                location: format!("position {}", cold.position),
                detail: "a cold reference past the events read".into(),
            })?;
            *slot = event;
        }
        Ok(())
    }

    /// Events held cold.
    pub fn events(&self) -> u64 {
        self.segments.values().map(|s| s.seal.events).sum()
    }
}

/// The segments' directory: removes temporary files a crash left (a segment never finished) and
/// lists the finished files no sled key refers to (a crash before the sled batch). Returns the
/// highest id found on disk, so a new segment never takes the name of one left behind.
pub fn sweep(dir: &Path, referenced: &Cold) -> Result<u32, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(io_error(dir, "cannot list", error)),
    };
    let mut highest = 0;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, "cannot list", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".seg.tmp") {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| io_error(&path, "cannot remove", e))?;
            tracing::info!(file = %path.display(), "removed a cold segment a crash left unfinished");
            continue;
        }
        let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|stem| stem.parse::<u32>().ok())
        else {
            continue;
        };
        highest = highest.max(id);
        if !referenced.segments.contains_key(&id) {
            tracing::warn!(
                file = %entry.path().display(),
                "ignoring a cold segment the ledger does not refer to (a retention that a crash \
                 stopped before it moved anything); it may be deleted"
            );
        }
    }
    Ok(highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64, stream: &str, version: u64) -> RecordedEvent {
        RecordedEvent {
            stream: stream.into(),
            version,
            position,
            event_id: Uuid::from_u128(u128::from(position)),
            event_type: "ExecutionEnqueued".into(),
            schema_version: 1,
            recorded_at_ms: position as i64,
            data: format!("{{\"n\":{position}}}").into_bytes().repeat(40),
            hash: [position as u8; 32],
        }
    }

    /// A flipped bit anywhere in a segment file is an error, at open or at the read of the
    /// event it damaged: never a panic, never an event served wrong.
    #[test]
    fn every_flipped_bit_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::create(dir.path(), 3).unwrap();
        let events: Vec<_> = (0..40u64)
            .map(|n| {
                let mut e = event(n * 3, &format!("q:{}", n % 4), n / 4);
                e.data.truncate(20 + n as usize);
                e
            })
            .collect();
        for e in &events {
            writer.push(e).unwrap();
        }
        let seal = writer.finish().unwrap().seal;
        let path = dir.path().join(file_name(3));
        let clean = std::fs::read(&path).unwrap();
        let refs: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(index, e)| ColdRef {
                index,
                position: e.position,
                segment: 3,
            })
            .collect();
        for offset in 0..clean.len() {
            let mut damaged = clean.clone();
            damaged[offset] ^= 1 << (offset % 8);
            std::fs::write(&path, &damaged).unwrap();
            let outcome = Segment::open(dir.path(), 3, seal).and_then(|segment| {
                let mut cold = Cold::default();
                cold.insert(std::sync::Arc::new(segment));
                let mut out = vec![event(0, "", 0); events.len()];
                cold.fill(&mut out, &refs).map(|()| out)
            });
            assert!(outcome.is_err(), "a flip at byte {offset} went unnoticed");
        }
        std::fs::write(&path, &clean[..clean.len() - 1]).unwrap();
        assert!(Segment::open(dir.path(), 3, seal).is_err());
    }

    #[test]
    fn a_segment_round_trips_and_bit_rot_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::create(dir.path(), 7).unwrap();
        let events: Vec<_> = (0..3000u64)
            .map(|n| event(n * 2, &format!("q:{}", n % 10), n / 10))
            .collect();
        for e in &events {
            writer.push(e).unwrap();
        }
        assert!(
            writer.push(&event(10, "q:0", 300)).is_err(),
            "positions ascend"
        );
        let segment = writer.finish().unwrap();
        assert!(segment.frames.len() > 1);
        let seal = segment.seal;
        let segment = Segment::open(dir.path(), 7, seal).unwrap();
        let part = segment.stream("q:3").unwrap();
        assert_eq!((part.first_version, part.len()), (0, 300));
        assert_eq!(part.last_hash, events[2993].hash);
        let mut cold = Cold::default();
        cold.insert(std::sync::Arc::new(segment));
        assert_eq!(cold.head("q:3"), Some((300, events[2993].hash)));
        let wanted = [0usize, 1, 1500, 2999];
        let refs: Vec<_> = wanted
            .iter()
            .enumerate()
            .map(|(index, &n)| ColdRef {
                index,
                position: events[n].position,
                segment: 7,
            })
            .collect();
        let mut out = vec![event(0, "", 0); wanted.len()];
        cold.fill(&mut out, &refs).unwrap();
        for (slot, &n) in out.iter().zip(&wanted) {
            assert_eq!(slot, &events[n]);
        }
        // One flipped bit in a frame: the read names the file and the frame.
        let path = dir.path().join(file_name(7));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES as usize + 40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let rotten = Segment::open(dir.path(), 7, seal).unwrap();
        let mut cold = Cold::default();
        cold.insert(std::sync::Arc::new(rotten));
        let error = cold.fill(&mut out, &refs[..1]).unwrap_err().to_string();
        assert!(
            error.contains("00000007.seg") && error.contains("frame 0"),
            "{error}"
        );
        // A damaged footer is refused on open.
        let footer_at = bytes.len() - TRAILER_BYTES as usize - 3;
        bytes[footer_at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = Segment::open(dir.path(), 7, seal).unwrap_err().to_string();
        assert!(error.contains("00000007.seg"), "{error}");
    }
}

//! Segment files: the append-only log, the source of truth.
//!
//! Layout (all integers little-endian; see `docs/design/log-format.md`):
//!
//! ```text
//! header  (24 bytes): magic "VTLOG\0\0\x01" | ordinal u32 | first_seq u64 | crc32c(previous 20 bytes) u32
//! record  (17 + len): len u32 | crc32c(kind ‖ seq ‖ payload) u32 | kind u8 | seq u64 | payload[len]
//! ```
//!
//! A record is valid when its length fits the file and its checksum holds. Damage at the very end
//! of the newest segment that looks like an interrupted write is a *torn tail* and is cut off by
//! recovery; any other damage is reported and never served.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The 8-byte magic that opens every segment (the last byte is the format version).
pub const MAGIC: [u8; 8] = *b"VTLOG\0\0\x01";
/// Bytes in a segment header.
pub const HEADER_LEN: u64 = 24;
/// Bytes in a record header.
pub const RECORD_HEADER_LEN: usize = 17;
/// Largest payload a record may hold: a leaf document is at most a few hundred KiB.
pub const MAX_PAYLOAD: u32 = 4 * 1024 * 1024;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// The canonical bytes of a leaf document.
    Event = 1,
    /// A signed checkpoint note, recorded so that the log tells how far its checkpoint history
    /// reached. Not a leaf: its `seq` field holds the checkpoint's tree size.
    Checkpoint = 2,
}

impl RecordKind {
    fn from_u8(b: u8) -> Option<RecordKind> {
        match b {
            1 => Some(RecordKind::Event),
            2 => Some(RecordKind::Checkpoint),
            _ => None,
        }
    }
}

/// A record read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub kind: RecordKind,
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// File name of segment `ordinal`.
pub fn file_name(ordinal: u32) -> String {
    format!("{ordinal:08}.seg")
}

/// Parses a segment file name back into its ordinal.
pub fn parse_file_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".seg")?;
    (stem.len() == 8).then(|| stem.parse().ok()).flatten()
}

fn record_crc(kind: u8, seq: u64, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&[kind]);
    let c = crc32c::crc32c_append(c, &seq.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

/// Appends the encoded record to `out`.
pub fn encode_record(kind: RecordKind, seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_PAYLOAD as usize);
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(kind as u8, seq, payload).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

fn encode_header(ordinal: u32, first_seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&ordinal.to_le_bytes());
    h[12..20].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A segment header that did not read back.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a Veritrail segment (bad magic or header checksum)")]
    BadHeader { path: PathBuf },
    #[error("{path}: header says ordinal {found}, file name says {expected}")]
    WrongOrdinal {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and checks a segment header; returns its first sequence number.
pub fn read_header<R: ReadAt + ?Sized>(
    file: &R,
    path: &Path,
    ordinal: u32,
) -> Result<u64, SegmentError> {
    let mut h = [0u8; HEADER_LEN as usize];
    file.fill_at(&mut h, 0).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SegmentError::BadHeader {
                path: path.to_path_buf(),
            }
        } else {
            SegmentError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    if h[..8] != MAGIC || crc32c::crc32c(&h[..20]) != crc {
        return Err(SegmentError::BadHeader {
            path: path.to_path_buf(),
        });
    }
    let found = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if found != ordinal {
        return Err(SegmentError::WrongOrdinal {
            path: path.to_path_buf(),
            found,
            expected: ordinal,
        });
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[12..20]);
    Ok(u64::from_le_bytes(first))
}

/// Says what it means that the segment at `path` starts at `first` where the log so far ends at
/// `expected`. A later start is a gap: the events between were acknowledged once (the writer
/// creates a segment only after its predecessor's last group was synced) and are missing now.
pub fn misplaced_start(path: &Path, first: u64, expected: u64) -> String {
    if first > expected {
        format!(
            "{} starts at seq {first}, but the segments before it end at seq {expected}: \
             events {expected}..{first} are gone, acknowledged events are missing from the log",
            path.display()
        )
    } else {
        format!(
            "{} starts at seq {first}, but the segments before it already hold seq {expected}: \
             two segments overlap",
            path.display()
        )
    }
}

/// Makes the creation of `path` durable by syncing the directory that holds it.
pub fn sync_parent(path: &Path) -> Result<(), SegmentError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Creates `dir` (and its parents) and makes each new directory's existence durable.
pub fn create_dir_durable(dir: &Path) -> Result<(), SegmentError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_parent(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SegmentError::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Creates a new, empty segment and makes its existence durable (file and directory fsync).
pub fn create(dir: &Path, ordinal: u32, first_seq: u64) -> Result<File, SegmentError> {
    let path = dir.join(file_name(ordinal));
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.write_all(&encode_header(ordinal, first_seq))
        .map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(file)
}

/// Why a record could not be read at some offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The record's declared length runs past the end of the file.
    Incomplete,
    /// The header is all zeros (space the file system extended but never filled).
    Zeroed,
    /// The length is impossible, the kind unknown, or the checksum fails.
    Corrupt(String),
}

/// Outcome of reading the record at one offset.
#[derive(Debug)]
pub enum ReadOutcome {
    /// A valid record and the offset just past it.
    Record(RawRecord, u64),
    /// Clean end of file.
    End,
    /// A complete record whose checksum fails, with the offset just past it: the bytes are
    /// returned so that fsck can name the event, never so that anything serves them.
    BadChecksum(RawRecord, u64),
    /// Damage at this offset.
    Damaged(Damage),
}

/// Something records are read from: an open segment, or a segment's bytes already in memory.
pub trait ReadAt {
    /// Fills `buf` with the bytes at `offset`, or fails.
    fn fill_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn fill_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl ReadAt for [u8] {
    fn fill_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let from = usize::try_from(offset).map_err(io::Error::other)?;
        let bytes = from
            .checked_add(buf.len())
            .and_then(|to| self.get(from..to))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// Reads the record starting at `offset`; `file_len` bounds it.
pub fn read_record<R: ReadAt + ?Sized>(
    file: &R,
    offset: u64,
    file_len: u64,
) -> io::Result<ReadOutcome> {
    if offset == file_len {
        return Ok(ReadOutcome::End);
    }
    if offset + RECORD_HEADER_LEN as u64 > file_len {
        return Ok(ReadOutcome::Damaged(Damage::Incomplete));
    }
    let mut h = [0u8; RECORD_HEADER_LEN];
    file.fill_at(&mut h, offset)?;
    if h.iter().all(|b| *b == 0) {
        return Ok(ReadOutcome::Damaged(Damage::Zeroed));
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&h[9..17]);
    let seq = u64::from_le_bytes(seq_bytes);
    if len > MAX_PAYLOAD {
        return Ok(ReadOutcome::Damaged(Damage::Corrupt(format!(
            "impossible record length {len}"
        ))));
    }
    let end = offset + RECORD_HEADER_LEN as u64 + u64::from(len);
    if end > file_len {
        return Ok(ReadOutcome::Damaged(Damage::Incomplete));
    }
    let mut payload = vec![0u8; len as usize];
    file.fill_at(&mut payload, offset + RECORD_HEADER_LEN as u64)?;
    let Some(kind) = RecordKind::from_u8(h[8]) else {
        return Ok(ReadOutcome::Damaged(Damage::Corrupt(format!(
            "unknown record kind {}",
            h[8]
        ))));
    };
    let record = RawRecord { kind, seq, payload };
    if record_crc(h[8], seq, &record.payload) != crc {
        return Ok(ReadOutcome::BadChecksum(record, end));
    }
    Ok(ReadOutcome::Record(record, end))
}

/// Bytes read ahead at the start of a record: most records fit, so one read fetches them.
const READ_AHEAD: usize = 2048;

/// A file read through a buffer of the bytes at one offset: reads inside it cost no system call.
struct ReadAhead<'a> {
    file: &'a File,
    at: u64,
    bytes: Vec<u8>,
}

impl ReadAt for ReadAhead<'_> {
    fn fill_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let inside = offset
            .checked_sub(self.at)
            .and_then(|from| usize::try_from(from).ok())
            .and_then(|from| Some(from..from.checked_add(buf.len())?))
            .and_then(|range| self.bytes.get(range));
        match inside {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => self.file.read_exact_at(buf, offset),
        }
    }
}

/// Reads the record at `offset` of a segment that is known to hold one there (a position from
/// the index), usually with a single read. A record that runs past the end is `Incomplete`.
pub fn read_record_at(file: &File, offset: u64) -> io::Result<ReadOutcome> {
    let mut bytes = vec![0u8; READ_AHEAD];
    let mut n = 0;
    while n < bytes.len() {
        match file.read_at(&mut bytes[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(n);
    if n == 0 {
        return Ok(ReadOutcome::End);
    }
    if n < RECORD_HEADER_LEN {
        return Ok(ReadOutcome::Damaged(Damage::Incomplete));
    }
    let ahead = ReadAhead {
        file,
        at: offset,
        bytes,
    };
    match read_record(&ahead, offset, u64::MAX) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Ok(ReadOutcome::Damaged(Damage::Incomplete))
        }
        other => other,
    }
}

/// True when every byte from `offset` to the end of the file is zero (an interrupted extension).
pub fn rest_is_zero(file: &File, offset: u64, file_len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = offset;
    while at < file_len {
        let n = ((file_len - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_classified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = create(dir.path(), 1, 0).expect("create");
        let mut buf = Vec::new();
        encode_record(RecordKind::Event, 0, b"hello", &mut buf);
        encode_record(RecordKind::Event, 1, b"world", &mut buf);
        file.write_all(&buf).expect("write");
        let len = file.metadata().expect("meta").len();
        assert_eq!(read_header(&file, dir.path(), 1).expect("header"), 0);
        let ReadOutcome::Record(r, next) = read_record(&file, HEADER_LEN, len).expect("read")
        else {
            panic!("first record must read back");
        };
        assert_eq!((r.seq, r.payload.as_slice()), (0, &b"hello"[..]));
        assert!(matches!(
            read_record(&file, next, len - 1).expect("read"),
            ReadOutcome::Damaged(Damage::Incomplete)
        ));
        // Flip one payload byte of the second record.
        // A separate handle: pwrite on an O_APPEND file appends on Linux.
        let writer = OpenOptions::new()
            .write(true)
            .open(dir.path().join(file_name(1)))
            .expect("open");
        writer
            .write_all_at(b"W", next + RECORD_HEADER_LEN as u64)
            .expect("flip");
        assert!(matches!(
            read_record(&file, next, len).expect("read"),
            ReadOutcome::BadChecksum(..)
        ));
    }
}

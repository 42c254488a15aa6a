//! Sealed segments: a full segment rewritten once as zstd-compressed blocks with a block index.
//!
//! A segment is written as records appended to a `.seg` file (see [`crate::embedded::segment`]). Once the
//! writer has moved on to the next segment, the full one is *sealed*: its records, byte for byte
//! as they were appended (17-byte record header with its CRC-32C, then the payload), are cut into
//! blocks of about [`BLOCK_BYTES`], each block is compressed as one zstd frame, and a block index
//! and a footer follow. The sealed file replaces the `.seg` file.
//!
//! Layout (all integers little-endian; see `docs/design/log-format.md`):
//!
//! ```text
//! header (32 bytes):  magic "VTSEAL\0\x01" | ordinal u32 | first_seq u64 | raw_len u64 | crc32c(previous 28 bytes) u32
//! blocks:             zstd frame of block 0 | zstd frame of block 1 | …  (each compressed with the dictionary, if any)
//! dictionary:         a zstd dictionary trained on the segment's records; empty when training found none
//! block index:        one 40-byte entry per block:
//!                     raw_offset u64 | first_seq u64 | records u32 | raw_len u32 | file_offset u64 | packed_len u32 | crc32c(frame) u32
//! footer (32 bytes):  index_offset u64 | blocks u32 | dictionary length u32 | crc32c(block index) u32 | crc32c(dictionary) u32
//!                     | crc32c(previous 24 bytes) u32 | magic "VTSE"
//! ```
//!
//! `raw_offset` is where the block's first record sat in the `.seg` file, so a record keeps its
//! position (segment ordinal, byte offset) when its segment is sealed: the index's positions stay
//! valid. Every record keeps its own checksum, and every frame has one more, so that a flipped
//! byte inside a compressed block is detected before decompression and named by its seq range.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::embedded::codec::{u32_le, u64_le};
use crate::embedded::segment::{self, RawRecord, ReadOutcome, RecordKind, HEADER_LEN};

/// The 8-byte magic that opens every sealed segment (the last byte is the format version).
pub const MAGIC: [u8; 8] = *b"VTSEAL\0\x01";
/// The 4 bytes that end every sealed segment.
pub const END_MAGIC: [u8; 4] = *b"VTSE";
/// Bytes in a sealed segment's header.
pub const SEALED_HEADER_LEN: u64 = 32;
/// Bytes in one block index entry.
pub const BLOCK_ENTRY_LEN: usize = 40;
/// Bytes in the footer.
pub const FOOTER_LEN: u64 = 32;
/// Uncompressed bytes per block, at most (a larger record gets a block of its own): small enough
/// that one read decompresses little, large enough that zstd finds the repetition between
/// events.
pub const BLOCK_BYTES: usize = 16 * 1024;
/// Largest dictionary trained for a segment. A dictionary carries what events have in common
/// (field names, event types, services), which lets small blocks compress almost as well as
/// large ones.
pub const DICT_BYTES: usize = 32 * 1024;
/// Records sampled to train the dictionary.
const DICT_SAMPLES: usize = 2000;
/// zstd level of sealed blocks. Sealing runs off the ingest path, once per segment.
pub const LEVEL: i32 = 3;

/// File name of sealed segment `ordinal`.
pub fn file_name(ordinal: u32) -> String {
    format!("{ordinal:08}.zseg")
}

/// Parses a sealed segment file name back into its ordinal.
pub fn parse_file_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".zseg")?;
    (stem.len() == 8).then(|| stem.parse().ok()).flatten()
}

/// Name of the file a seal is written to before it is complete.
fn temp_name(ordinal: u32) -> String {
    format!("{}.tmp", file_name(ordinal))
}

/// True for a sealed segment that was being written when the process stopped.
pub fn is_temp_name(name: &str) -> bool {
    name.strip_suffix(".tmp")
        .and_then(parse_file_name)
        .is_some()
}

/// One block of a sealed segment, as its index entry describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Offset of the block's first record in the segment as appended.
    pub raw_offset: u64,
    pub first_seq: u64,
    pub records: u32,
    /// Uncompressed bytes.
    pub raw_len: u32,
    /// Where the frame starts in the sealed file.
    pub file_offset: u64,
    /// Compressed bytes.
    pub packed_len: u32,
    /// CRC-32C of the frame.
    pub crc: u32,
}

impl Block {
    /// The seqs the block holds.
    pub fn seqs(&self) -> Range<u64> {
        self.first_seq..self.first_seq + u64::from(self.records)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.raw_offset.to_le_bytes());
        out.extend_from_slice(&self.first_seq.to_le_bytes());
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.file_offset.to_le_bytes());
        out.extend_from_slice(&self.packed_len.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Block {
        Block {
            raw_offset: u64_le(b, 0),
            first_seq: u64_le(b, 8),
            records: u32_le(b, 16),
            raw_len: u32_le(b, 20),
            file_offset: u64_le(b, 24),
            packed_len: u32_le(b, 32),
            crc: u32_le(b, 36),
        }
    }
}

/// Why a sealed segment, or one of its blocks, could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The header, footer or block index fails its checks: nothing in the file can be located.
    #[error("{path}: not a readable sealed segment: {why}")]
    BadFile { path: PathBuf, why: String },
    /// One block fails its checks; the rest of the file is readable.
    #[error("{path} block {block} (seq {first}–{last}): {why}", first = seqs.start, last = seqs.end.saturating_sub(1))]
    BadBlock {
        path: PathBuf,
        block: usize,
        seqs: Range<u64>,
        why: String,
    },
    /// The segment to seal does not read back cleanly: it stays as it is.
    #[error("{path}: cannot be sealed: {why}")]
    Unsealable { path: PathBuf, why: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SealedError + '_ {
    move |source| SealedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open sealed segment: its file and its block index.
pub struct SealedSegment {
    file: File,
    path: PathBuf,
    pub ordinal: u32,
    pub first_seq: u64,
    /// Length of the segment as appended (header included): the end of its last record.
    pub raw_len: u64,
    pub blocks: Vec<Block>,
    /// Each block's first seq, apart from the rest of its entry: a lookup by seq searches these
    /// few cache lines rather than the whole block index.
    first_seqs: Vec<u64>,
    /// The dictionary the blocks were compressed with, prepared for decompression.
    dict: Option<zstd::dict::DecoderDictionary<'static>>,
    /// Bytes of the file.
    len: u64,
}

impl std::fmt::Debug for SealedSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSegment")
            .field("path", &self.path)
            .field("first_seq", &self.first_seq)
            .field("blocks", &self.blocks.len())
            .field("dictionary", &self.dict.is_some())
            .finish()
    }
}

impl SealedSegment {
    /// Opens `path` and checks its header, footer and block index.
    pub fn open(path: &Path, ordinal: u32) -> Result<SealedSegment, SealedError> {
        let file = File::open(path).map_err(io_err(path))?;
        let bad = |why: String| SealedError::BadFile {
            path: path.to_path_buf(),
            why,
        };
        let len = file.metadata().map_err(io_err(path))?.len();
        if len < SEALED_HEADER_LEN + FOOTER_LEN {
            return Err(bad(format!("{len} bytes is too short")));
        }
        let mut h = [0u8; SEALED_HEADER_LEN as usize];
        file.read_exact_at(&mut h, 0).map_err(io_err(path))?;
        if h[..8] != MAGIC || crc32c::crc32c(&h[..28]) != u32_le(&h, 28) {
            return Err(bad("bad magic or header checksum".into()));
        }
        if u32_le(&h, 8) != ordinal {
            return Err(bad(format!(
                "header says ordinal {}, file name says {ordinal}",
                u32_le(&h, 8)
            )));
        }
        let (first_seq, raw_len) = (u64_le(&h, 12), u64_le(&h, 20));
        let mut f = [0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut f, len - FOOTER_LEN)
            .map_err(io_err(path))?;
        if f[28..] != END_MAGIC || crc32c::crc32c(&f[..24]) != u32_le(&f, 24) {
            return Err(bad("bad footer (the file is incomplete or damaged)".into()));
        }
        let (index_offset, count) = (u64_le(&f, 0), u32_le(&f, 8) as usize);
        let dict_len = u64::from(u32_le(&f, 12));
        let dict_offset = index_offset
            .checked_sub(dict_len)
            .filter(|o| *o >= SEALED_HEADER_LEN)
            .ok_or_else(|| bad("the footer's dictionary does not fit the file".into()))?;
        let index_len = count
            .checked_mul(BLOCK_ENTRY_LEN)
            .filter(|n| index_offset.checked_add(*n as u64) == Some(len - FOOTER_LEN))
            .ok_or_else(|| bad("the footer's block index does not fit the file".into()))?;
        let mut index = vec![0u8; index_len];
        file.read_exact_at(&mut index, index_offset)
            .map_err(io_err(path))?;
        if crc32c::crc32c(&index) != u32_le(&f, 16) {
            return Err(bad("block index checksum fails".into()));
        }
        let mut dict = vec![0u8; dict_len as usize];
        file.read_exact_at(&mut dict, dict_offset)
            .map_err(io_err(path))?;
        if crc32c::crc32c(&dict) != u32_le(&f, 20) {
            return Err(bad("dictionary checksum fails".into()));
        }
        let blocks: Vec<Block> = index
            .chunks_exact(BLOCK_ENTRY_LEN)
            .map(Block::decode)
            .collect();
        check_blocks(&blocks, first_seq, raw_len, dict_offset).map_err(bad)?;
        Ok(SealedSegment {
            file,
            path: path.to_path_buf(),
            ordinal,
            first_seq,
            raw_len,
            first_seqs: blocks.iter().map(|b| b.first_seq).collect(),
            blocks,
            dict: (!dict.is_empty()).then(|| zstd::dict::DecoderDictionary::copy(&dict)),
            len,
        })
    }

    /// The seq just past the segment's last record.
    pub fn end_seq(&self) -> u64 {
        self.blocks.last().map_or(self.first_seq, |b| b.seqs().end)
    }

    /// Bytes of the sealed file.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The block that holds the record at `raw_offset`.
    /// The block that holds event `seq`, if any.
    pub fn block_of(&self, seq: u64) -> Option<usize> {
        let k = self
            .first_seqs
            .partition_point(|f| *f <= seq)
            .checked_sub(1)?;
        self.blocks[k].seqs().contains(&seq).then_some(k)
    }

    pub fn block_at(&self, raw_offset: u64) -> Option<usize> {
        let k = self
            .blocks
            .partition_point(|b| b.raw_offset <= raw_offset)
            .checked_sub(1)?;
        let b = &self.blocks[k];
        (raw_offset < b.raw_offset + u64::from(b.raw_len)).then_some(k)
    }

    /// The error of block `k`, named by its seqs.
    fn bad_block(&self, k: usize, why: String) -> SealedError {
        SealedError::BadBlock {
            path: self.path.clone(),
            block: k,
            seqs: self.blocks[k].seqs(),
            why,
        }
    }

    /// Reads, checks and decompresses block `k`: its records, as appended.
    pub fn read_block(&self, k: usize) -> Result<Vec<u8>, SealedError> {
        let b = self.blocks[k];
        let bad = |why: String| self.bad_block(k, why);
        let mut packed = vec![0u8; b.packed_len as usize];
        self.file
            .read_exact_at(&mut packed, b.file_offset)
            .map_err(io_err(&self.path))?;
        if crc32c::crc32c(&packed) != b.crc {
            return Err(bad("compressed block checksum fails".into()));
        }
        let raw = match &self.dict {
            Some(dict) => decompress_with(dict, &packed, b.raw_len as usize),
            None => zstd::bulk::decompress(&packed, b.raw_len as usize),
        }
        .map_err(|e| bad(format!("does not decompress: {e}")))?;
        if raw.len() != b.raw_len as usize {
            return Err(bad(format!(
                "decompresses to {} bytes, the index says {}",
                raw.len(),
                b.raw_len
            )));
        }
        Ok(raw)
    }

    /// Cuts the records out of block `k`'s bytes (from [`SealedSegment::read_block`]) with their
    /// offsets in the segment as appended: its events in seq order, and any checkpoint markers
    /// between them. Any damage is an error: a sealed block was complete
    /// and checked when it was written.
    pub fn records(&self, k: usize, bytes: &[u8]) -> Result<Vec<(RawRecord, u64)>, SealedError> {
        let b = self.blocks[k];
        let bad = |why: String| self.bad_block(k, why);
        let mut out = Vec::with_capacity(b.records as usize);
        let (mut at, mut events) = (0u64, 0u64);
        loop {
            match segment::read_record(bytes, at, bytes.len() as u64)
                .map_err(|e| bad(e.to_string()))?
            {
                ReadOutcome::End => break,
                ReadOutcome::Record(r, end) => {
                    if r.kind == RecordKind::Event {
                        let expected = b.first_seq + events;
                        if r.seq != expected {
                            return Err(bad(format!(
                                "holds seq {} where {expected} belongs",
                                r.seq
                            )));
                        }
                        events += 1;
                    }
                    out.push((r, b.raw_offset + at));
                    at = end;
                }
                ReadOutcome::BadChecksum(r, _) => {
                    return Err(bad(format!("record seq {}: checksum fails", r.seq)))
                }
                ReadOutcome::Damaged(d) => return Err(bad(crate::embedded::log::describe(&d))),
            }
        }
        if events != u64::from(b.records) {
            return Err(bad(format!(
                "holds {events} events, the index says {}",
                b.records
            )));
        }
        Ok(out)
    }
}

thread_local! {
    /// One decompression context per thread, reused: creating one costs more than decompressing
    /// a small block.
    static DCTX: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
        std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
}

/// Decompresses a frame made with `dict` into at most `capacity` bytes.
fn decompress_with(
    dict: &zstd::dict::DecoderDictionary<'_>,
    packed: &[u8],
    capacity: usize,
) -> io::Result<Vec<u8>> {
    DCTX.with(|dctx| {
        let mut out = Vec::with_capacity(capacity);
        dctx.borrow_mut()
            .decompress_using_ddict(&mut out, packed, dict.as_ddict())
            .map_err(|code| io::Error::other(zstd::zstd_safe::get_error_name(code)))?;
        Ok(out)
    })
}

/// The block index must tile the appended segment and the sealed file without gaps or overlap.
fn check_blocks(
    blocks: &[Block],
    first_seq: u64,
    raw_len: u64,
    index_offset: u64,
) -> Result<(), String> {
    let (mut raw, mut seq, mut file) = (HEADER_LEN, first_seq, SEALED_HEADER_LEN);
    for (k, b) in blocks.iter().enumerate() {
        if b.raw_offset != raw || b.first_seq != seq || b.file_offset != file || b.raw_len == 0 {
            return Err(format!(
                "block {k} of the index does not follow block {}",
                k as i64 - 1
            ));
        }
        raw += u64::from(b.raw_len);
        seq += u64::from(b.records);
        file += u64::from(b.packed_len);
    }
    if raw != raw_len || file != index_offset {
        return Err("the block index does not cover the segment".into());
    }
    Ok(())
}

/// Seals the full segment `ordinal` of `dir`: reads its `.seg` file, checks every record, writes
/// the sealed file beside it (durably, then read back and compared), and returns it open. The
/// `.seg` file is left for the caller to remove once readers use the sealed one.
pub fn seal(dir: &Path, ordinal: u32) -> Result<SealedSegment, SealedError> {
    let raw_path = dir.join(segment::file_name(ordinal));
    let unsealable = |why: String| SealedError::Unsealable {
        path: raw_path.clone(),
        why,
    };
    let mut bytes = Vec::new();
    File::open(&raw_path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(&raw_path))?;
    let first_seq = segment::read_header(bytes.as_slice(), &raw_path, ordinal)
        .map_err(|e| unsealable(e.to_string()))?;
    let blocks = cut_blocks(&bytes, first_seq).map_err(unsealable)?;
    let temp = dir.join(temp_name(ordinal));
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io_err(&temp))?;
    let written = write_sealed(&mut out, ordinal, first_seq, &bytes, &blocks)
        .and_then(|()| out.sync_all())
        .map_err(io_err(&temp));
    drop(out);
    if let Err(e) = written.and_then(|()| verify(&temp, ordinal, &bytes)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let path = dir.join(file_name(ordinal));
    std::fs::rename(&temp, &path).map_err(io_err(&path))?;
    segment::sync_parent(&path).map_err(|e| SealedError::Io {
        path: path.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    SealedSegment::open(&path, ordinal)
}

/// The record ranges of the blocks: `(start, end, first_seq, events)` in `bytes`. Checkpoint
/// markers ride in the blocks between the events; they are not counted.
fn cut_blocks(bytes: &[u8], first_seq: u64) -> Result<Vec<(usize, usize, u64, u32)>, String> {
    let mut blocks = Vec::new();
    let (mut start, mut at) = (HEADER_LEN as usize, HEADER_LEN);
    let (mut seq, mut events) = (first_seq, 0u32);
    loop {
        let next =
            match segment::read_record(bytes, at, bytes.len() as u64).map_err(|e| e.to_string())? {
                ReadOutcome::End => None,
                ReadOutcome::Record(r, end) if r.kind == RecordKind::Checkpoint => Some((end, 0)),
                ReadOutcome::Record(r, end) if r.seq == seq + u64::from(events) => Some((end, 1)),
                ReadOutcome::Record(r, _) => {
                    return Err(format!(
                        "offset {at}: record holds seq {}, expected {}",
                        r.seq,
                        seq + u64::from(events)
                    ))
                }
                ReadOutcome::BadChecksum(r, _) => {
                    return Err(format!("offset {at} (seq {}): checksum fails", r.seq))
                }
                ReadOutcome::Damaged(d) => {
                    return Err(format!(
                        "offset {at}: {}",
                        crate::embedded::log::describe(&d)
                    ))
                }
            };
        let end = next.map_or(at, |(end, _)| end);
        let full = (end - start as u64) as usize > BLOCK_BYTES && at as usize > start;
        if next.is_none() || full {
            if at as usize > start {
                blocks.push((start, at as usize, seq, events));
                seq += u64::from(events);
            }
            (start, events) = (at as usize, 0);
        }
        match next {
            None => return Ok(blocks),
            Some((end, counted)) => {
                events += counted;
                at = end;
            }
        }
    }
}

fn write_sealed(
    out: &mut File,
    ordinal: u32,
    first_seq: u64,
    bytes: &[u8],
    blocks: &[(usize, usize, u64, u32)],
) -> io::Result<()> {
    let dict = train(bytes, blocks);
    let mut compressor = zstd::bulk::Compressor::with_dictionary(LEVEL, &dict)?;
    let mut head = Vec::with_capacity(SEALED_HEADER_LEN as usize);
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&ordinal.to_le_bytes());
    head.extend_from_slice(&first_seq.to_le_bytes());
    head.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    head.extend_from_slice(&crc32c::crc32c(&head).to_le_bytes());
    let mut writer = io::BufWriter::with_capacity(1 << 20, out);
    writer.write_all(&head)?;
    let mut index = Vec::with_capacity(blocks.len() * BLOCK_ENTRY_LEN);
    let mut file_offset = SEALED_HEADER_LEN;
    for &(start, end, seq, records) in blocks {
        let packed = compressor.compress(&bytes[start..end])?;
        writer.write_all(&packed)?;
        Block {
            raw_offset: start as u64,
            first_seq: seq,
            records,
            raw_len: (end - start) as u32,
            file_offset,
            packed_len: packed.len() as u32,
            crc: crc32c::crc32c(&packed),
        }
        .encode(&mut index);
        file_offset += packed.len() as u64;
    }
    writer.write_all(&dict)?;
    writer.write_all(&index)?;
    let mut foot = Vec::with_capacity(FOOTER_LEN as usize);
    foot.extend_from_slice(&(file_offset + dict.len() as u64).to_le_bytes());
    foot.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    foot.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    foot.extend_from_slice(&crc32c::crc32c(&index).to_le_bytes());
    foot.extend_from_slice(&crc32c::crc32c(&dict).to_le_bytes());
    foot.extend_from_slice(&crc32c::crc32c(&foot).to_le_bytes());
    foot.extend_from_slice(&END_MAGIC);
    writer.write_all(&foot)?;
    writer.flush()
}

/// A dictionary trained on records sampled evenly from the segment, or none (empty) when the
/// segment is too small for training to find one.
fn train(bytes: &[u8], blocks: &[(usize, usize, u64, u32)]) -> Vec<u8> {
    let mut records = Vec::new();
    for &(start, end, _, _) in blocks {
        let mut at = start as u64;
        while let Ok(ReadOutcome::Record(r, next)) = segment::read_record(bytes, at, end as u64) {
            records.push((at as usize + segment::RECORD_HEADER_LEN, r.payload.len()));
            at = next;
        }
    }
    let step = records.len().div_ceil(DICT_SAMPLES).max(1);
    let samples: Vec<&[u8]> = records
        .iter()
        .step_by(step)
        .map(|&(from, len)| &bytes[from..from + len])
        .collect();
    // Training wants plenty of material; below that a dictionary would not pay for itself.
    if samples.len() < 64 {
        return Vec::new();
    }
    zstd::dict::from_samples(&samples, DICT_BYTES).unwrap_or_default()
}

/// Reads the sealed file back and compares every block with the segment it came from, so that
/// the `.seg` file is only ever removed in favour of a file proven to hold the same bytes.
fn verify(path: &Path, ordinal: u32, bytes: &[u8]) -> Result<(), SealedError> {
    let sealed = SealedSegment::open(path, ordinal)?;
    if sealed.raw_len != bytes.len() as u64 {
        return Err(SealedError::BadFile {
            path: path.to_path_buf(),
            why: "read back with a different length".into(),
        });
    }
    for (k, b) in sealed.blocks.iter().enumerate() {
        let start = b.raw_offset as usize;
        if sealed.read_block(k)? != bytes[start..start + b.raw_len as usize] {
            return Err(SealedError::BadBlock {
                path: path.to_path_buf(),
                block: k,
                seqs: b.seqs(),
                why: "read back different from the segment it seals".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::segment::encode_record;

    /// A segment of `n` records of varied sizes, written the way the log writes it.
    fn raw_segment(dir: &Path, ordinal: u32, first_seq: u64, n: usize) -> Vec<Vec<u8>> {
        let mut file = segment::create(dir, ordinal, first_seq).expect("create");
        let mut buf = Vec::new();
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(i * 37 % 3000)).into_bytes()
            })
            .collect();
        for (i, p) in payloads.iter().enumerate() {
            encode_record(RecordKind::Event, first_seq + i as u64, p, &mut buf);
        }
        file.write_all(&buf).expect("write");
        payloads
    }

    #[test]
    fn a_sealed_segment_gives_back_every_record_at_its_old_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let payloads = raw_segment(dir.path(), 3, 1000, 400);
        let raw = std::fs::read(dir.path().join(segment::file_name(3))).expect("raw");
        let sealed = seal(dir.path(), 3).expect("seal");
        assert!(sealed.blocks.len() > 1, "several blocks");
        assert_eq!((sealed.first_seq, sealed.end_seq()), (1000, 1400));
        assert_eq!(
            sealed.file_len(),
            std::fs::metadata(sealed.path()).expect("meta").len()
        );
        assert!(sealed.file_len() < raw.len() as u64 / 4, "compressed");
        let mut seen = 0;
        for k in 0..sealed.blocks.len() {
            let bytes = sealed.read_block(k).expect("block");
            for (r, offset) in sealed.records(k, &bytes).expect("records") {
                assert_eq!(r.payload, payloads[(r.seq - 1000) as usize]);
                assert_eq!(sealed.block_at(offset), Some(k));
                // The record sits at the same offset of the segment as appended.
                let ReadOutcome::Record(again, _) =
                    segment::read_record(raw.as_slice(), offset, raw.len() as u64).expect("read")
                else {
                    panic!("no record at {offset}");
                };
                assert_eq!(again, r);
                seen += 1;
            }
        }
        assert_eq!(seen, 400);
        assert_eq!(sealed.block_at(raw.len() as u64), None);
        assert_eq!(sealed.block_at(0), None);
    }

    #[test]
    fn a_flipped_byte_in_a_block_is_named_by_its_seq_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        raw_segment(dir.path(), 1, 0, 300);
        let sealed = seal(dir.path(), 1).expect("seal");
        let victim = sealed.blocks[1];
        let path = sealed.path().to_path_buf();
        drop(sealed);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let at = victim.file_offset + u64::from(victim.packed_len) / 2;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).expect("read");
        f.write_all_at(&[b[0] ^ 0x40], at).expect("flip");
        let sealed = SealedSegment::open(&path, 1).expect("the index is intact");
        assert!(sealed.read_block(0).is_ok());
        let err = sealed
            .read_block(1)
            .expect_err("damage is detected")
            .to_string();
        let (first, last) = (victim.first_seq, victim.seqs().end - 1);
        assert!(
            err.contains(&format!("block 1 (seq {first}–{last})")) && err.contains("checksum"),
            "{err}"
        );
    }

    #[test]
    fn damage_outside_the_blocks_makes_the_file_unreadable_not_misread() {
        let dir = tempfile::tempdir().expect("tempdir");
        raw_segment(dir.path(), 1, 0, 50);
        let path = seal(dir.path(), 1).expect("seal").path().to_path_buf();
        let good = std::fs::read(&path).expect("read");
        for at in [0, 9, 20, good.len() - 30, good.len() - 10, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).expect("write");
            assert!(
                matches!(
                    SealedSegment::open(&path, 1),
                    Err(SealedError::BadFile { .. })
                ),
                "byte {at}"
            );
        }
        std::fs::write(&path, &good[..good.len() - 1]).expect("truncate");
        assert!(SealedSegment::open(&path, 1).is_err());
    }

    #[test]
    fn a_damaged_segment_is_not_sealed() {
        let dir = tempfile::tempdir().expect("tempdir");
        raw_segment(dir.path(), 1, 0, 20);
        let raw_path = dir.path().join(segment::file_name(1));
        let f = OpenOptions::new()
            .write(true)
            .open(&raw_path)
            .expect("open");
        f.write_all_at(b"!", HEADER_LEN + 30).expect("flip");
        let err = seal(dir.path(), 1).expect_err("refused");
        assert!(matches!(err, SealedError::Unsealable { .. }), "{err}");
        assert!(!dir.path().join(file_name(1)).exists());
        assert!(!dir.path().join(temp_name(1)).exists());
    }
}

//! The index file of one sealed segment (`index/NNNNNNNN.sidx`): written once when the segment
//! is sealed, never changed, and rebuilt from the segment if it is lost or damaged.
//!
//! Layout (integers little-endian unless a varint; see `docs/design/log-format.md`):
//!
//! ```text
//! header (56 bytes): magic "VTSIDX\0\x01" | ordinal u32 | first_seq u64 | events u32 | min_time i64 | max_time i64
//!                    | marked u64 (largest tree size a checkpoint recorded in the segment commits to; 0: none) | 0 u32 | crc32c(previous 52 bytes) u32
//! postings:          per term, its events as (time, local) in that order, in chunks of 128 pairs:
//!                    chunk directory: per chunk its first pair's time (the first chunk's as zigzag varint, later
//!                                     ones as the increase over the previous chunk's, varint), its first pair's
//!                                     local varint, its length varint and crc32c(chunk) u32
//!                    chunks:          per pair after the chunk's first, the time delta varint (never negative)
//!                                     and the local delta as zigzag varint
//! term blocks:       terms sorted by (field code, value bytes), in blocks of about 4 KiB; per term
//!                    code u8 | value length varint | value | posting offset varint | directory length varint
//!                    | posting length varint | events varint | crc32c(chunk directory) u32
//! id chunks:         (fingerprint, local) sorted, in chunks of 256 (more when equal fingerprints would be split); per entry fingerprint delta varint | local varint
//! resident part:     read whole when the file is opened, and kept in memory:
//!   term directory:  per block its first term (code u8 | value length varint | value) | offset varint | length varint | crc32c(block) u32
//!   id directory:    per chunk first fingerprint u32 | offset varint | length varint | entries varint | crc32c(chunk) u32
//!   filter:          xor filter over the event ids and the values of the fields most values of which are
//!                    unique (correlation, resource, actor): seed u64 | block length u64 | fingerprints; empty when there are none
//!   producers:       every producer's sequence state as of the segment's end: per producer id length varint | id | state length varint | state (JSON)
//! footer (40 bytes): resident offset u64 | term directory length u32 | id directory length u32 | filter length u32 | producers length u32
//!                    | crc32c(resident part) u32 | 0 u32 | crc32c(previous 32 bytes) u32 | magic "VTSI"
//! ```
//!
//! The id fingerprint is the high 32 bits of XXH3-64 of the 16 id bytes: a match is a candidate
//! that the caller confirms on the record itself.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;
use xorf::{Filter, Xor8};

use crate::embedded::codec::{put_signed, put_varint, u32_le, u64_le, Reader};
use crate::embedded::entries::Entries;
use crate::embedded::index::{Selector, SortKey};
use crate::error::StoreError;
use crate::producers::ProducerStatus;

/// The 8-byte magic that opens every segment index (the last byte is the format version).
pub const MAGIC: [u8; 8] = *b"VTSIDX\0\x02";
const END_MAGIC: [u8; 4] = *b"VTSI";
const HEADER_LEN: usize = 56;
const FOOTER_LEN: usize = 40;
/// Bytes of term entries per block, about.
const TERM_BLOCK_BYTES: usize = 4096;
/// Entries per id chunk, at most.
const ID_CHUNK: usize = 256;
/// Pairs per posting chunk: a lookup of the newest (or oldest) few events of a term decodes one
/// chunk of each segment, not the term's whole posting.
const POSTING_CHUNK: usize = 128;
/// Postings up to this many bytes are read in one go; longer ones read their chunk directory,
/// then one chunk at a time as the merge reaches it.
const WHOLE_POSTING_BYTES: usize = 4096;
/// Field codes whose values are mostly unique to a few events: a filter lets lookups skip
/// segments without the value. (correlation_id, resource_id, actor_id in `INDEXED_FIELDS`.)
const FILTERED_CODES: [u8; 3] = [1, 2, 3];
/// Code that marks event ids among the filter's keys.
const ID_CODE: u8 = 0xfe;

/// True when `bytes` open an index file of an earlier format version, which startup rebuilds
/// from its segment like a missing one.
pub fn older_format(bytes: &[u8]) -> bool {
    bytes.len() >= MAGIC.len() && bytes[..7] == MAGIC[..7] && bytes[7] < MAGIC[7]
}

/// File name of the index of segment `ordinal`.
pub fn file_name(ordinal: u32) -> String {
    format!("{ordinal:08}.sidx")
}

fn term_hash(code: u8, value: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&[code]);
    h.update(value);
    h.digest()
}

fn id_fingerprint(id: &Uuid) -> u32 {
    (term_hash(ID_CODE, id.as_bytes()) >> 32) as u32
}

/// A term: field code and value.
type Term<'a> = (u8, &'a str);

/// Encodes the index of `entries` with the producers' state at the segment's end. Deterministic:
/// the same entries give the same bytes (fsck compares them).
pub fn encode(entries: &Entries, producers: &[ProducerStatus]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    // Postings, and the term entries that point at them.
    let mut terms: Vec<(Term<'_>, Vec<(i64, u32)>)> = entries
        .postings()
        .map(|(code, value, p)| ((code, value), p.entries()))
        .collect();
    terms.sort_unstable_by(|a, b| (a.0 .0, a.0 .1.as_bytes()).cmp(&(b.0 .0, b.0 .1.as_bytes())));
    let mut term_entries: Vec<(Term<'_>, Vec<u8>)> = Vec::with_capacity(terms.len());
    let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
    for (term, posting) in &terms {
        let (Some(first), Some(last)) = (posting.first(), posting.last()) else {
            continue;
        };
        min_time = min_time.min(first.0);
        max_time = max_time.max(last.0);
        let start = out.len();
        let (dir, chunks) = encode_posting(posting);
        out.extend_from_slice(&dir);
        out.extend_from_slice(&chunks);
        let mut e = Vec::new();
        e.push(term.0);
        put_varint(&mut e, term.1.len() as u64);
        e.extend_from_slice(term.1.as_bytes());
        put_varint(&mut e, start as u64);
        put_varint(&mut e, dir.len() as u64);
        put_varint(&mut e, (out.len() - start) as u64);
        put_varint(&mut e, posting.len() as u64);
        e.extend_from_slice(&crc32c::crc32c(&dir).to_le_bytes());
        term_entries.push((*term, e));
    }
    // Term blocks and their directory.
    let mut term_dir = Vec::new();
    let mut k = 0;
    while k < term_entries.len() {
        let start = out.len();
        let first = term_entries[k].0;
        while k < term_entries.len() && (out.len() == start || out.len() - start < TERM_BLOCK_BYTES)
        {
            out.extend_from_slice(&term_entries[k].1);
            k += 1;
        }
        term_dir.push(first.0);
        put_varint(&mut term_dir, first.1.len() as u64);
        term_dir.extend_from_slice(first.1.as_bytes());
        put_varint(&mut term_dir, start as u64);
        put_varint(&mut term_dir, (out.len() - start) as u64);
        term_dir.extend_from_slice(&crc32c::crc32c(&out[start..]).to_le_bytes());
    }
    // Id chunks, never splitting equal fingerprints, and their directory.
    let mut ids: Vec<(u32, u32)> = entries
        .ids
        .iter()
        .map(|(id, l)| (id_fingerprint(id), *l))
        .collect();
    ids.sort_unstable();
    let mut id_dir = Vec::new();
    let mut k = 0;
    while k < ids.len() {
        let (start, first, from) = (out.len(), ids[k].0, k);
        let mut prev = first;
        while k < ids.len() && (k - from < ID_CHUNK || ids[k].0 == prev) {
            put_varint(&mut out, u64::from(ids[k].0 - prev));
            put_varint(&mut out, u64::from(ids[k].1));
            prev = ids[k].0;
            k += 1;
        }
        id_dir.extend_from_slice(&first.to_le_bytes());
        put_varint(&mut id_dir, start as u64);
        put_varint(&mut id_dir, (out.len() - start) as u64);
        put_varint(&mut id_dir, (k - from) as u64);
        id_dir.extend_from_slice(&crc32c::crc32c(&out[start..]).to_le_bytes());
    }
    // The filter.
    let mut keys: Vec<u64> = entries
        .ids
        .keys()
        .map(|id| term_hash(ID_CODE, id.as_bytes()))
        .collect();
    keys.extend(
        terms
            .iter()
            .filter(|(t, _)| FILTERED_CODES.contains(&t.0))
            .map(|(t, _)| term_hash(t.0, t.1.as_bytes())),
    );
    keys.sort_unstable();
    keys.dedup();
    let mut filter = Vec::new();
    if !keys.is_empty() {
        let f = Xor8::from(&keys);
        filter.extend_from_slice(&f.seed.to_le_bytes());
        filter.extend_from_slice(&(f.block_length as u64).to_le_bytes());
        filter.extend_from_slice(&f.fingerprints);
    }
    let mut states = Vec::new();
    let mut sorted: Vec<&ProducerStatus> = producers.iter().collect();
    sorted.sort_by(|a, b| a.producer_id.cmp(&b.producer_id));
    for p in sorted {
        put_varint(&mut states, p.producer_id.len() as u64);
        states.extend_from_slice(p.producer_id.as_bytes());
        let state = p.to_bytes();
        put_varint(&mut states, state.len() as u64);
        states.extend_from_slice(&state);
    }
    let resident_offset = out.len() as u64;
    let resident_start = out.len();
    for part in [&term_dir, &id_dir, &filter, &states] {
        out.extend_from_slice(part);
    }
    let resident_crc = crc32c::crc32c(&out[resident_start..]);
    let mut foot = Vec::with_capacity(FOOTER_LEN);
    foot.extend_from_slice(&resident_offset.to_le_bytes());
    for part in [&term_dir, &id_dir, &filter, &states] {
        foot.extend_from_slice(&(part.len() as u32).to_le_bytes());
    }
    foot.extend_from_slice(&resident_crc.to_le_bytes());
    foot.extend_from_slice(&0u32.to_le_bytes());
    foot.extend_from_slice(&crc32c::crc32c(&foot).to_le_bytes());
    foot.extend_from_slice(&END_MAGIC);
    out.extend_from_slice(&foot);
    if entries.is_empty() {
        (min_time, max_time) = (0, -1);
    }
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&entries.ordinal.to_le_bytes());
    h.extend_from_slice(&entries.first_seq.to_le_bytes());
    h.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    h.extend_from_slice(&min_time.to_le_bytes());
    h.extend_from_slice(&max_time.to_le_bytes());
    h.extend_from_slice(&entries.marked.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&crc32c::crc32c(&h).to_le_bytes());
    out[..HEADER_LEN].copy_from_slice(&h);
    out
}

/// A posting's chunk directory and chunks (module docs): pairs sorted, so no delta is negative.
fn encode_posting(posting: &[(i64, u32)]) -> (Vec<u8>, Vec<u8>) {
    let (mut dir, mut body) = (Vec::new(), Vec::new());
    let mut previous_first: Option<i64> = None;
    for chunk in posting.chunks(POSTING_CHUNK) {
        let start = body.len();
        let (t0, l0) = chunk[0];
        match previous_first {
            None => put_signed(&mut dir, t0),
            Some(p) => put_varint(&mut dir, t0.abs_diff(p)),
        }
        previous_first = Some(t0);
        put_varint(&mut dir, u64::from(l0));
        let mut prev = chunk[0];
        for &(t, local) in &chunk[1..] {
            put_varint(&mut body, t.abs_diff(prev.0));
            put_signed(&mut body, i64::from(local) - i64::from(prev.1));
            prev = (t, local);
        }
        put_varint(&mut dir, (body.len() - start) as u64);
        dir.extend_from_slice(&crc32c::crc32c(&body[start..]).to_le_bytes());
    }
    (dir, body)
}

/// Writes the index of `entries` to `dir` (through a temporary file and a rename, so that the
/// file is whole or absent) and opens it.
pub fn write(
    dir: &Path,
    entries: &Entries,
    producers: &[ProducerStatus],
) -> Result<SegmentIndex, StoreError> {
    let path = dir.join(file_name(entries.ordinal));
    let temp = path.with_extension("sidx.tmp");
    let bytes = encode(entries, producers);
    let io = |what: &str, p: &Path| StoreError::io(format!("{what} {}", p.display()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io("creating", &temp))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_data())
        .map_err(io("writing", &temp))?;
    std::fs::rename(&temp, &path).map_err(io("renaming", &temp))?;
    SegmentIndex::open(&path)
}

/// One entry of the term directory.
#[derive(Debug)]
struct TermBlock {
    first: (u8, Vec<u8>),
    offset: u64,
    len: usize,
    crc: u32,
}

/// One entry of the id directory.
#[derive(Debug)]
struct IdChunk {
    first: u32,
    offset: u64,
    len: usize,
    crc: u32,
}

/// An open segment index: its header and resident part in memory, the rest read on demand.
#[derive(Debug)]
pub struct SegmentIndex {
    file: File,
    path: PathBuf,
    pub ordinal: u32,
    pub first_seq: u64,
    pub events: u64,
    /// Earliest and latest event time (µs); `min > max` when empty.
    pub min_time: i64,
    pub max_time: i64,
    /// The largest tree size a checkpoint recorded in the segment commits to (0: none).
    pub marked: u64,
    terms: Vec<TermBlock>,
    ids: Vec<IdChunk>,
    filter: Option<Xor8>,
    producers: Vec<ProducerStatus>,
}

impl SegmentIndex {
    /// Opens and checks the index file at `path`.
    pub fn open(path: &Path) -> Result<SegmentIndex, StoreError> {
        let damaged = |why: &str| {
            StoreError::Damaged(format!(
                "{}: {why}; the index is derived from the log: with the server stopped, `veritrail reindex` rebuilds it",
                path.display()
            ))
        };
        let file =
            File::open(path).map_err(StoreError::io(format!("opening {}", path.display())))?;
        let len = file
            .metadata()
            .map_err(StoreError::io(format!("reading {}", path.display())))?
            .len() as usize;
        if len < HEADER_LEN + FOOTER_LEN {
            return Err(damaged("too short"));
        }
        let read = |at: u64, n: usize| -> Result<Vec<u8>, StoreError> {
            let mut b = vec![0u8; n];
            file.read_exact_at(&mut b, at)
                .map_err(StoreError::io(format!("reading {}", path.display())))?;
            Ok(b)
        };
        let h = read(0, HEADER_LEN)?;
        if older_format(&h) {
            return Err(damaged(&format!(
                "written in index format {} (this version reads format {})",
                h[7], MAGIC[7]
            )));
        }
        if h[..8] != MAGIC || crc32c::crc32c(&h[..52]) != u32_le(&h, 52) {
            return Err(damaged("bad header"));
        }
        let f = read((len - FOOTER_LEN) as u64, FOOTER_LEN)?;
        if f[36..] != END_MAGIC || crc32c::crc32c(&f[..32]) != u32_le(&f, 32) {
            return Err(damaged("bad footer"));
        }
        let resident_offset = u64_le(&f, 0);
        let lens = [
            u32_le(&f, 8),
            u32_le(&f, 12),
            u32_le(&f, 16),
            u32_le(&f, 20),
        ]
        .map(|l| l as usize);
        let resident_len: usize = lens.iter().sum();
        if resident_offset as usize + resident_len + FOOTER_LEN != len {
            return Err(damaged("the footer does not fit the file"));
        }
        let resident = read(resident_offset, resident_len)?;
        if crc32c::crc32c(&resident) != u32_le(&f, 24) {
            return Err(damaged("checksum of the resident part fails"));
        }
        let (term_dir, rest) = resident.split_at(lens[0]);
        let (id_dir, rest) = rest.split_at(lens[1]);
        let (filter, states) = rest.split_at(lens[2]);
        let bad = || damaged("the resident part does not decode");
        Ok(SegmentIndex {
            ordinal: u32_le(&h, 8),
            first_seq: u64_le(&h, 12),
            events: u64::from(u32_le(&h, 20)),
            min_time: u64_le(&h, 24) as i64,
            max_time: u64_le(&h, 32) as i64,
            marked: u64_le(&h, 40),
            terms: decode_term_dir(term_dir).ok_or_else(bad)?,
            ids: decode_id_dir(id_dir).ok_or_else(bad)?,
            filter: decode_filter(filter).ok_or_else(bad)?,
            producers: decode_producers(states).ok_or_else(bad)?,
            file,
            path: path.to_path_buf(),
        })
    }

    /// The seq just past the segment's last event.
    pub fn end(&self) -> u64 {
        self.first_seq + self.events
    }

    /// Every producer's sequence state as of the segment's end.
    pub fn producers(&self) -> &[ProducerStatus] {
        &self.producers
    }

    fn damaged(&self, what: &str) -> StoreError {
        StoreError::Damaged(format!(
            "{}: {what} fails its checksum or does not decode; the index is derived from the log: with the server stopped, `veritrail reindex` rebuilds it",
            self.path.display()
        ))
    }

    /// Reads `len` bytes at `offset`.
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let mut b = vec![0u8; len];
        self.file
            .read_exact_at(&mut b, offset)
            .map_err(StoreError::io(format!("reading {}", self.path.display())))?;
        Ok(b)
    }

    /// Reads `len` bytes at `offset` and checks them against `crc`.
    fn read_checked(
        &self,
        offset: u64,
        len: usize,
        crc: u32,
        what: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let b = self.read_at(offset, len)?;
        self.check(&b, crc, what)?;
        Ok(b)
    }

    fn check(&self, bytes: &[u8], crc: u32, what: &str) -> Result<(), StoreError> {
        if crc32c::crc32c(bytes) == crc {
            Ok(())
        } else {
            Err(self.damaged(what))
        }
    }

    /// False when the filter proves the segment has no event with this term.
    fn may_hold(&self, code: u8, value: &[u8]) -> bool {
        if !FILTERED_CODES.contains(&code) && code != ID_CODE {
            return true;
        }
        self.filter
            .as_ref()
            .is_some_and(|f| f.contains(&term_hash(code, value)))
    }

    /// The terms `selector` picks, with their postings' place: `(value, offset, len, events, crc)`.
    fn terms(&self, selector: &Selector) -> Result<Vec<TermEntry>, StoreError> {
        let (code, value, prefix) = match selector {
            Selector::All => (crate::embedded::entries::ALL, "", false),
            Selector::Exact(c, v) => (*c, v.as_str(), false),
            Selector::Prefix(c, p) => (*c, p.as_str(), true),
        };
        if !prefix && !self.may_hold(code, value.as_bytes()) {
            return Ok(Vec::new());
        }
        let target = (code, value.as_bytes());
        let in_range = |c: u8, v: &[u8]| {
            c == code
                && if prefix {
                    v.starts_with(value.as_bytes())
                } else {
                    v == value.as_bytes()
                }
        };
        // Terms are sorted, so the ones picked are contiguous from the first at or after `target`.
        let from = self
            .terms
            .partition_point(|b| (b.first.0, b.first.1.as_slice()) <= target)
            .saturating_sub(1);
        let mut out = Vec::new();
        for (k, block) in self.terms.iter().enumerate().skip(from) {
            if k > from && !in_range(block.first.0, &block.first.1) {
                break;
            }
            let bytes = self.read_checked(block.offset, block.len, block.crc, "a term block")?;
            let mut r = Reader::new(&bytes);
            while !r.done() {
                let e = read_term(&mut r).ok_or_else(|| self.damaged("a term block"))?;
                if in_range(e.code, &e.value) {
                    out.push(e);
                } else if (e.code, e.value.as_slice()) > target {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// One run per term `selector` picks, handing out its sort keys in `[lo, hi)` and below
    /// `size` in merge order (newest first when `descending`). Only the chunks that meet the range
    /// are read, and each only when the merge reaches it.
    pub fn runs(
        self: &Arc<Self>,
        selector: &Selector,
        bounds: RunBounds,
    ) -> Result<Vec<PostingRun>, StoreError> {
        if self.events == 0 || self.max_time < bounds.lo.0 || self.min_time > bounds.hi.0 {
            return Ok(Vec::new());
        }
        self.terms(selector)?
            .iter()
            .map(|t| self.run(t, bounds))
            .collect()
    }

    fn run(self: &Arc<Self>, t: &TermEntry, bounds: RunBounds) -> Result<PostingRun, StoreError> {
        let damaged = || self.damaged("a posting's chunk directory");
        let dir_end = Some(t.dir_len)
            .filter(|n| *n <= t.len)
            .ok_or_else(damaged)?;
        // A small posting is read whole, a long one its directory first.
        let whole = t.len <= WHOLE_POSTING_BYTES;
        let bytes = self.read_at(t.offset, if whole { t.len } else { dir_end })?;
        let dir = &bytes[..dir_end];
        self.check(dir, t.crc, "a posting's chunk directory")?;
        let body = t.offset + dir_end as u64;
        let chunks = decode_posting_dir(dir, t.events, body).ok_or_else(damaged)?;
        if chunks
            .last()
            .is_some_and(|c| c.offset + c.len as u64 > t.offset + t.len as u64)
        {
            return Err(damaged());
        }
        let key = |c: &PostingChunk| (c.first.0, self.first_seq + u64::from(c.first.1));
        // Chunk k holds the keys from its first up to (not including) the next chunk's first.
        let mut wanted: Vec<PostingChunk> = chunks
            .iter()
            .enumerate()
            .filter(|(k, c)| {
                key(c) < bounds.hi && chunks.get(k + 1).is_none_or(|n| key(n) > bounds.lo)
            })
            .map(|(_, c)| *c)
            .collect();
        if !bounds.descending {
            wanted.reverse();
        }
        Ok(PostingRun {
            index: Arc::clone(self),
            chunks: wanted,
            whole: whole.then_some((t.offset, bytes)),
            keys: Vec::new(),
            bounds,
        })
    }

    /// Events per value of field `code`.
    pub fn counts(&self, code: u8) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .terms(&Selector::Prefix(code, String::new()))?
            .into_iter()
            .map(|t| (String::from_utf8_lossy(&t.value).into_owned(), t.events))
            .collect())
    }

    /// Seqs whose event id may be `id` (same fingerprint): the caller confirms on the record.
    pub fn id_candidates(&self, id: &Uuid) -> Result<Vec<u64>, StoreError> {
        if !self.may_hold(ID_CODE, id.as_bytes()) {
            return Ok(Vec::new());
        }
        let fp = id_fingerprint(id);
        let k = self.ids.partition_point(|c| c.first <= fp);
        let Some(chunk) = k.checked_sub(1).map(|k| &self.ids[k]) else {
            return Ok(Vec::new());
        };
        let bytes = self.read_checked(chunk.offset, chunk.len, chunk.crc, "an id chunk")?;
        let mut r = Reader::new(&bytes);
        let mut out = Vec::new();
        let mut prev = chunk.first;
        while !r.done() {
            let (d, local) = r
                .varint()
                .zip(r.varint())
                .ok_or_else(|| self.damaged("an id chunk"))?;
            prev = prev.wrapping_add(d as u32);
            if prev == fp {
                out.push(self.first_seq + local);
            }
        }
        Ok(out)
    }
}

/// What a run hands out: keys in `[lo, hi)` below `size`, newest first when `descending`.
#[derive(Debug, Clone, Copy)]
pub struct RunBounds {
    pub lo: SortKey,
    pub hi: SortKey,
    pub size: u64,
    pub descending: bool,
}

impl RunBounds {
    fn admits(&self, key: &SortKey) -> bool {
        key.1 < self.size && *key >= self.lo && *key < self.hi
    }
}

/// One chunk of a posting, as its directory describes it.
#[derive(Debug, Clone, Copy)]
struct PostingChunk {
    first: (i64, u32),
    offset: u64,
    len: usize,
    pairs: usize,
    crc: u32,
}

/// One term's keys in one sealed segment, read a chunk at a time in merge order.
pub struct PostingRun {
    index: Arc<SegmentIndex>,
    /// Chunks still to read; the next one last.
    chunks: Vec<PostingChunk>,
    /// The whole posting, with its file offset, when it was read in one go.
    whole: Option<(u64, Vec<u8>)>,
    /// The current chunk's keys still to hand out; the next one last.
    keys: Vec<SortKey>,
    bounds: RunBounds,
}

impl PostingRun {
    /// The next key in merge order, reading the next chunk when the current one is used up.
    pub fn next_key(&mut self) -> Result<Option<SortKey>, StoreError> {
        loop {
            if let Some(k) = self.keys.pop() {
                return Ok(Some(k));
            }
            let Some(c) = self.chunks.pop() else {
                return Ok(None);
            };
            let what = "a posting chunk";
            let read;
            let bytes = match &self.whole {
                Some((base, b)) => {
                    let from =
                        usize::try_from(c.offset.saturating_sub(*base)).unwrap_or(usize::MAX);
                    let part = from
                        .checked_add(c.len)
                        .and_then(|to| b.get(from..to))
                        .ok_or_else(|| self.index.damaged(what))?;
                    self.index.check(part, c.crc, what)?;
                    part
                }
                None => {
                    read = self.index.read_checked(c.offset, c.len, c.crc, what)?;
                    &read[..]
                }
            };
            let first_seq = self.index.first_seq;
            let mut keys =
                decode_chunk(&c, bytes, first_seq).ok_or_else(|| self.index.damaged(what))?;
            keys.retain(|k| self.bounds.admits(k));
            if !self.bounds.descending {
                keys.reverse();
            }
            self.keys = keys;
        }
    }
}

/// The keys of one chunk, in increasing order; `None` when its bytes do not decode to its pairs.
fn decode_chunk(c: &PostingChunk, bytes: &[u8], first_seq: u64) -> Option<Vec<SortKey>> {
    let mut r = Reader::new(bytes);
    let (mut time, mut local) = (c.first.0, i64::from(c.first.1));
    let mut out = Vec::with_capacity(c.pairs);
    out.push((time, first_seq.wrapping_add(local as u64)));
    for _ in 1..c.pairs {
        time = time.wrapping_add(r.varint()? as i64);
        local = local.wrapping_add(r.signed()?);
        out.push((time, first_seq.wrapping_add(local as u64)));
    }
    r.done().then_some(out)
}

/// A posting's chunk directory; `body` is the file offset of its first chunk.
fn decode_posting_dir(b: &[u8], events: u64, body: u64) -> Option<Vec<PostingChunk>> {
    let events = usize::try_from(events).ok()?;
    let count = events.div_ceil(POSTING_CHUNK);
    let mut r = Reader::new(b);
    let mut out = Vec::with_capacity(count);
    let (mut time, mut offset) = (0i64, body);
    for k in 0..count {
        time = if k == 0 {
            r.signed()?
        } else {
            time.checked_add(i64::try_from(r.varint()?).ok()?)?
        };
        let local = u32::try_from(r.varint()?).ok()?;
        let len = usize::try_from(r.varint()?).ok()?;
        let crc = u32_le(r.bytes(4)?, 0);
        out.push(PostingChunk {
            first: (time, local),
            offset,
            len,
            pairs: (events - k * POSTING_CHUNK).min(POSTING_CHUNK),
            crc,
        });
        offset = offset.checked_add(len as u64)?;
    }
    r.done().then_some(out)
}

/// A term entry of a term block.
struct TermEntry {
    code: u8,
    value: Vec<u8>,
    offset: u64,
    dir_len: usize,
    len: usize,
    events: u64,
    crc: u32,
}

fn read_term(r: &mut Reader<'_>) -> Option<TermEntry> {
    let code = r.u8()?;
    let n = usize::try_from(r.varint()?).ok()?;
    let value = r.bytes(n)?.to_vec();
    let offset = r.varint()?;
    let dir_len = usize::try_from(r.varint()?).ok()?;
    let len = usize::try_from(r.varint()?).ok()?;
    let events = r.varint()?;
    let crc = u32_le(r.bytes(4)?, 0);
    Some(TermEntry {
        code,
        value,
        offset,
        dir_len,
        len,
        events,
        crc,
    })
}

fn decode_term_dir(b: &[u8]) -> Option<Vec<TermBlock>> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    while !r.done() {
        let code = r.u8()?;
        let n = usize::try_from(r.varint()?).ok()?;
        let value = r.bytes(n)?.to_vec();
        out.push(TermBlock {
            first: (code, value),
            offset: r.varint()?,
            len: usize::try_from(r.varint()?).ok()?,
            crc: u32_le(r.bytes(4)?, 0),
        });
    }
    Some(out)
}

fn decode_id_dir(b: &[u8]) -> Option<Vec<IdChunk>> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    while !r.done() {
        let first = u32_le(r.bytes(4)?, 0);
        let offset = r.varint()?;
        let len = usize::try_from(r.varint()?).ok()?;
        let _entries = r.varint()?;
        out.push(IdChunk {
            first,
            offset,
            len,
            crc: u32_le(r.bytes(4)?, 0),
        });
    }
    Some(out)
}

fn decode_filter(b: &[u8]) -> Option<Option<Xor8>> {
    if b.is_empty() {
        return Some(None);
    }
    let seed = u64_le(b.get(..16)?, 0);
    let block_length = usize::try_from(u64_le(b, 8)).ok()?;
    let fingerprints: Box<[u8]> = b[16..].into();
    (fingerprints.len() == block_length.checked_mul(3)?).then_some(Some(Xor8 {
        seed,
        block_length,
        fingerprints,
    }))
}

fn decode_producers(b: &[u8]) -> Option<Vec<ProducerStatus>> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    while !r.done() {
        let n = usize::try_from(r.varint()?).ok()?;
        let id = std::str::from_utf8(r.bytes(n)?).ok()?;
        let n = usize::try_from(r.varint()?).ok()?;
        out.push(ProducerStatus::from_bytes(id, r.bytes(n)?)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of `docs/design/log-format.md`, byte for byte.
    #[test]
    fn the_documented_posting() {
        let t = 1_735_689_600_000_000i64;
        let (dir, chunks) = encode_posting(&[(t, 0), (t + 1_000_000, 2), (t + 1_000_000, 5)]);
        let mut want = vec![0x80, 0x80, 0xe3, 0xa0, 0xb7, 0xa6, 0x95, 0x06, 0x00, 0x06];
        want.extend_from_slice(&crc32c::crc32c(&chunks).to_le_bytes());
        assert_eq!(dir, want);
        assert_eq!(chunks, [0xc0, 0x84, 0x3d, 0x04, 0x00, 0x06]);
        let parsed = decode_posting_dir(&dir, 3, 100).expect("directory");
        assert_eq!(parsed.len(), 1);
        let keys = decode_chunk(&parsed[0], &chunks, 1000).expect("chunk");
        assert_eq!(
            keys,
            [(t, 1000), (t + 1_000_000, 1002), (t + 1_000_000, 1005)]
        );
    }

    /// A posting of several chunks decodes back to its pairs, chunk by chunk.
    #[test]
    fn chunks_decode_back_to_their_pairs() {
        let pairs: Vec<(i64, u32)> = (0..300u32)
            .map(|i| (-5_000 + i64::from(i / 3) * 7, (i * 37) % 301))
            .collect();
        let mut sorted = pairs.clone();
        sorted.sort_unstable();
        let (dir, chunks) = encode_posting(&sorted);
        let parsed = decode_posting_dir(&dir, 300, 0).expect("directory");
        assert_eq!(
            parsed.iter().map(|c| c.pairs).collect::<Vec<_>>(),
            [128, 128, 44]
        );
        let mut back = Vec::new();
        for c in &parsed {
            let bytes = &chunks[c.offset as usize..c.offset as usize + c.len];
            assert_eq!(crc32c::crc32c(bytes), c.crc);
            back.extend(decode_chunk(c, bytes, 0).expect("chunk"));
        }
        let want: Vec<SortKey> = sorted.iter().map(|&(t, l)| (t, u64::from(l))).collect();
        assert_eq!(back, want);
        // A directory that does not match the number of events does not decode.
        assert!(decode_posting_dir(&dir, 400, 0).is_none());
        assert!(decode_posting_dir(&dir, 200, 0).is_none());
    }
}

//! The segment files of one log: reading records by position, whether their segment is still as
//! appended (`.seg`) or sealed (`.zseg`, see [`crate::embedded::sealed`]), and sealing full segments in the
//! background.
//!
//! A position (segment ordinal, byte offset) stays valid when its segment is sealed: a sealed
//! segment's block index maps offsets of the segment as appended to its blocks. The sealer renames
//! a sealed file into place before it removes the `.seg` file, so at every moment one of the two
//! exists, and a reader that still holds the removed file open keeps reading it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};

use std::time::Instant;

use crate::embedded::entries::Entries;
use crate::embedded::index::{Index, Place, Pos};
use crate::embedded::sealed::{self, SealedError, SealedSegment};
use crate::embedded::seg_index;
use crate::embedded::segment::{self, RawRecord, ReadOutcome};
use crate::error::StoreError;
use crate::producers::ProducerStatus;

/// An open segment file.
#[derive(Clone)]
pub(crate) enum SegmentFile {
    /// As appended: the segment being written, or one not sealed yet.
    Appended(Arc<File>),
    Sealed(Arc<SealedSegment>),
}

/// A decompressed block, with where each of its event records starts.
pub(crate) struct CachedBlock {
    pub(crate) bytes: Vec<u8>,
    /// Offset in `bytes` of the record of each event, by seq from the block's first: found once
    /// when the block is decompressed, so a read jumps to its record instead of walking the
    /// headers before it. Shorter than the block's events when a header does not read (the read
    /// then fails, naming the place).
    events: Vec<u32>,
}

impl CachedBlock {
    fn new(bytes: Vec<u8>) -> CachedBlock {
        let mut events = Vec::new();
        let mut at = 0usize;
        while let Some(h) = bytes.get(at..at + segment::RECORD_HEADER_LEN) {
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if h[8] == segment::RecordKind::Event as u8 {
                let Ok(offset) = u32::try_from(at) else { break };
                events.push(offset);
            }
            at += segment::RECORD_HEADER_LEN + len;
        }
        CachedBlock { bytes, events }
    }
}

/// Weighs a cached block by its bytes.
#[derive(Clone)]
struct BlockBytes;

impl quick_cache::Weighter<(u32, usize), Arc<CachedBlock>> for BlockBytes {
    fn weight(&self, _: &(u32, usize), block: &Arc<CachedBlock>) -> u64 {
        (block.bytes.len() + 4 * block.events.len()).max(1) as u64
    }
}

/// Open segment files of one log, and a bounded cache of decompressed blocks.
pub(crate) struct Segments {
    dir: PathBuf,
    files: RwLock<HashMap<u32, SegmentFile>>,
    /// Decompressed blocks of sealed segments, by (ordinal, block).
    blocks: quick_cache::sync::Cache<(u32, usize), Arc<CachedBlock>, BlockBytes>,
}

fn poisoned() -> StoreError {
    StoreError::Failed("an internal lock was poisoned by a panic".into())
}

impl Segments {
    /// The segments in `dir`, caching up to `cache_bytes` of decompressed blocks.
    pub(crate) fn new(dir: &Path, cache_bytes: u64) -> Segments {
        let blocks = (cache_bytes / sealed::BLOCK_BYTES as u64).max(1) as usize;
        Segments {
            dir: dir.to_path_buf(),
            files: RwLock::new(HashMap::new()),
            blocks: quick_cache::sync::Cache::with_weighter(blocks, cache_bytes.max(1), BlockBytes),
        }
    }

    /// The directory of the segment files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The open file of segment `ordinal`.
    pub(crate) fn file(&self, ordinal: u32) -> Result<SegmentFile, StoreError> {
        if let Some(f) = self.files.read().map_err(|_| poisoned())?.get(&ordinal) {
            return Ok(f.clone());
        }
        let f = self.open(ordinal)?;
        self.files
            .write()
            .map_err(|_| poisoned())?
            .insert(ordinal, f.clone());
        Ok(f)
    }

    fn open(&self, ordinal: u32) -> Result<SegmentFile, StoreError> {
        // Sealed first: the sealer renames its file into place before it removes the other, so
        // a `.seg` file found missing means the sealed one is there now.
        for _ in 0..2 {
            match open_sealed(&self.dir, ordinal) {
                Ok(Some(s)) => return Ok(SegmentFile::Sealed(Arc::new(s))),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            let path = self.dir.join(segment::file_name(ordinal));
            match File::open(&path) {
                Ok(f) => return Ok(SegmentFile::Appended(Arc::new(f))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("opening {}", path.display()))(e)),
            }
        }
        Err(StoreError::Damaged(format!(
            "segment {ordinal} is missing from {} (neither {} nor {})",
            self.dir.display(),
            segment::file_name(ordinal),
            sealed::file_name(ordinal)
        )))
    }

    /// Serves `sealed` for its ordinal from now on.
    fn install(&self, sealed: Arc<SealedSegment>) -> Result<(), StoreError> {
        self.files
            .write()
            .map_err(|_| poisoned())?
            .insert(sealed.ordinal, SegmentFile::Sealed(sealed));
        Ok(())
    }

    /// Block `k` of a sealed segment, decompressed (from the cache when it is there).
    pub(crate) fn block(
        &self,
        seg: &SealedSegment,
        k: usize,
    ) -> Result<Arc<CachedBlock>, StoreError> {
        Ok(self.blocks.get_or_insert_with(&(seg.ordinal, k), || {
            seg.read_block(k).map(|b| Arc::new(CachedBlock::new(b)))
        })?)
    }

    /// Reads the record of `seq` at `place`; damage is an error naming it.
    pub(crate) fn read_place(&self, place: Place, seq: u64) -> Result<RawRecord, StoreError> {
        let ordinal = match place {
            Place::At(pos) => return self.read(pos),
            Place::Sealed(ordinal) => ordinal,
        };
        let SegmentFile::Sealed(seg) = self.file(ordinal)? else {
            return Err(StoreError::Damaged(format!(
                "seq {seq}: its index is sealed but {} is not",
                segment::file_name(ordinal)
            )));
        };
        let k = seg.block_of(seq).ok_or_else(|| {
            StoreError::Damaged(format!(
                "seq {seq}: no block of {} holds it",
                sealed::file_name(ordinal)
            ))
        })?;
        let block = self.block(&seg, k)?;
        let place = || format!("{} seq {seq}", sealed::file_name(ordinal));
        let at = usize::try_from(seq - seg.blocks[k].first_seq)
            .ok()
            .and_then(|i| block.events.get(i))
            .ok_or_else(|| StoreError::Damaged(format!("{}: not in its block", place())))?;
        let bytes = &block.bytes;
        let outcome = segment::read_record(bytes.as_slice(), u64::from(*at), bytes.len() as u64)
            .map_err(StoreError::io(place()))?;
        let record = served(outcome, place)?;
        // The record checked itself; it must also be the one wanted.
        if record.seq != seq {
            return Err(StoreError::Damaged(format!(
                "{}: the block holds seq {} there",
                place(),
                record.seq
            )));
        }
        Ok(record)
    }

    /// Reads the record at `pos`; damage is an error naming the place.
    pub(crate) fn read(&self, pos: Pos) -> Result<RawRecord, StoreError> {
        match self.file(pos.ordinal)? {
            SegmentFile::Appended(file) => {
                let place = || {
                    format!(
                        "segment {} offset {}",
                        segment::file_name(pos.ordinal),
                        pos.offset
                    )
                };
                let outcome =
                    segment::read_record_at(&file, pos.offset).map_err(StoreError::io(place()))?;
                served(outcome, place)
            }
            SegmentFile::Sealed(seg) => {
                let place = || {
                    format!(
                        "segment {} offset {}",
                        sealed::file_name(pos.ordinal),
                        pos.offset
                    )
                };
                let k = seg.block_at(pos.offset).ok_or_else(|| {
                    StoreError::Damaged(format!("{}: no block holds this offset", place()))
                })?;
                let bytes = &self.block(&seg, k)?.bytes;
                let within = pos.offset - seg.blocks[k].raw_offset;
                let outcome = segment::read_record(bytes.as_slice(), within, bytes.len() as u64)
                    .map_err(StoreError::io(place()))?;
                served(outcome, place)
            }
        }
    }
}

/// Opens sealed segment `ordinal` of `dir`; `None` when it has none.
pub(crate) fn open_sealed(dir: &Path, ordinal: u32) -> Result<Option<SealedSegment>, StoreError> {
    match SealedSegment::open(&dir.join(sealed::file_name(ordinal)), ordinal) {
        Ok(s) => Ok(Some(s)),
        Err(SealedError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The record of a read outcome, or the damage as an error naming `place`.
fn served(outcome: ReadOutcome, place: impl Fn() -> String) -> Result<RawRecord, StoreError> {
    match outcome {
        ReadOutcome::Record(r, _) => Ok(r),
        ReadOutcome::End => Err(StoreError::Damaged(format!(
            "{}: record missing (log truncated?)",
            place()
        ))),
        ReadOutcome::BadChecksum(r, _) => Err(StoreError::Damaged(format!(
            "{} (seq {}): checksum mismatch",
            place(),
            r.seq
        ))),
        ReadOutcome::Damaged(d) => Err(StoreError::Damaged(format!(
            "{}: {}",
            place(),
            crate::embedded::log::describe(&d)
        ))),
    }
}

/// A full segment for the sealer: its ordinal, its entries and the producers' state at its end.
pub(crate) struct SealJob {
    pub ordinal: u32,
    pub entries: Arc<RwLock<Entries>>,
    pub producers: Vec<ProducerStatus>,
}

/// Seals the full segments it is sent, one at a time, in its own thread.
pub(crate) struct Sealer {
    pub(crate) tenant: String,
    pub(crate) segments: Arc<Segments>,
    pub(crate) index: Arc<Index>,
    /// Set at close: the sealer finishes the segment in hand and leaves the rest for the next
    /// start, so that shutdown never waits for a backlog.
    pub(crate) stop: Arc<AtomicBool>,
}

impl Sealer {
    pub(crate) fn run(self, jobs: Receiver<SealJob>) {
        while let Ok(job) = jobs.recv() {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let ordinal = job.ordinal;
            if let Err(e) = self.seal(job) {
                // The segment stays as appended, readable and checked as before; `fsck` names
                // any damage that kept it from sealing.
                metrics::counter!("veritrail_seal_failures_total", "tenant" => self.tenant.clone())
                    .increment(1);
                tracing::error!(tenant = %self.tenant, ordinal, error = %e, "could not seal a segment; it stays as appended");
            }
        }
    }

    /// Compresses the segment, then writes its index, then removes the appended file: readers
    /// that find a sealed index always find a sealed segment.
    fn seal(&self, job: SealJob) -> Result<(), StoreError> {
        let started = Instant::now();
        let dir = &self.segments.dir;
        let sealed = Arc::new(sealed::seal(dir, job.ordinal)?);
        self.segments.install(sealed.clone())?;
        let entries = job
            .entries
            .read()
            .map_err(|_| StoreError::Failed("segment entries lock poisoned".into()))?
            .clone();
        let index = seg_index::write(self.index.dir(), &entries, &job.producers)?;
        self.index.install(Arc::new(index))?;
        let raw = dir.join(segment::file_name(job.ordinal));
        std::fs::remove_file(&raw)
            .map_err(StoreError::io(format!("removing {}", raw.display())))?;
        segment::sync_parent(&raw)?;
        metrics::histogram!("veritrail_seal_seconds", "tenant" => self.tenant.clone())
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(tenant = %self.tenant, ordinal = job.ordinal, bytes = sealed.file_len(), raw_bytes = sealed.raw_len, "sealed a segment");
        Ok(())
    }
}

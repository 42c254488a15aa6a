//! Startup recovery: bring the derived state up to the log, and cut a torn tail.
//!
//! Only the records the index does not cover yet are scanned (after a process crash the index
//! usually has them all; after a machine crash it may have lost its unsynced tail), so startup
//! time does not grow with the log. The rules, from `docs/design/log-format.md`:
//! - an incomplete record, or zeros up to the end, at the end of the newest segment is a torn
//!   write (it was never acknowledged, because acknowledgement follows fsync): it is cut off;
//! - any other damage (a complete record whose checksum fails, a sequence gap, a missing
//!   segment, an index that points past the log) stops startup with a message naming the place.

use std::fs::File;
use std::path::Path;

use veritrail_core::event::Record;
use veritrail_core::hash::leaf_hash;
use veritrail_core::merkle::Frontier;

use crate::error::StoreError;
use crate::index::{Index, LeafEntry, Pos};
use crate::log::{describe, open_for_append, Segments};
use crate::segment::{self, Damage, ReadOutcome, HEADER_LEN};

/// Leaves applied to the index per recovery transaction.
const RECOVERY_BATCH: usize = 10_000;

/// Where the writer continues after recovery.
pub(crate) struct Recovered {
    pub file: File,
    pub ordinal: u32,
    pub seg_len: u64,
    pub frontier: Frontier,
}

/// Lists segment ordinals in `dir`, checking they run 1, 2, 3, … without gaps.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u32>, StoreError> {
    let mut ordinals = Vec::new();
    for entry in
        std::fs::read_dir(dir).map_err(StoreError::io(format!("listing {}", dir.display())))?
    {
        let entry = entry.map_err(StoreError::io(format!("listing {}", dir.display())))?;
        if let Some(o) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        {
            ordinals.push(o);
        }
    }
    ordinals.sort_unstable();
    for (i, o) in ordinals.iter().enumerate() {
        if *o != i as u32 + 1 {
            return Err(StoreError::Damaged(format!(
                "segment {} is missing from {} (found {})",
                segment::file_name(i as u32 + 1),
                dir.display(),
                segment::file_name(*o)
            )));
        }
    }
    Ok(ordinals)
}

/// Recovers the log in `dir` against `index`.
pub(crate) fn recover(
    dir: &Path,
    index: &Index,
    segments: &Segments,
    _tenant: &str,
) -> Result<Recovered, StoreError> {
    let mut ordinals = list_segments(dir)?;
    drop_unfinished_segment(dir, &mut ordinals)?;
    let indexed = index.indexed_size()?;
    if ordinals.is_empty() {
        if indexed > 0 {
            return Err(StoreError::Damaged(format!(
                "{} holds no segments but the index covers {indexed} events: the log was deleted",
                dir.display()
            )));
        }
        let file = segment::create(dir, 1, 0)?;
        return Ok(Recovered {
            file,
            ordinal: 1,
            seg_len: HEADER_LEN,
            frontier: Frontier::new(),
        });
    }
    let reader = index.reader()?;
    let frontier = Frontier::from_nodes(indexed, &mut reader.nodes()?)?;
    let (start_ordinal, start_offset) = resume_point(&reader, segments, indexed)?;
    drop(reader);
    let mut scan = Scan {
        index,
        frontier,
        batch: Vec::new(),
        next_seq: indexed,
    };
    let last = *ordinals.last().unwrap_or(&1);
    let mut seg_len = HEADER_LEN;
    for ordinal in start_ordinal..=last {
        let path = dir.join(segment::file_name(ordinal));
        let file =
            File::open(&path).map_err(StoreError::io(format!("opening {}", path.display())))?;
        let first_seq = segment::read_header(&file, &path, ordinal)?;
        let offset = if ordinal == start_ordinal {
            start_offset
        } else {
            HEADER_LEN
        };
        if offset == HEADER_LEN && first_seq != scan.next_seq {
            return Err(StoreError::Damaged(format!(
                "{} starts at seq {first_seq}, expected {}",
                path.display(),
                scan.next_seq
            )));
        }
        seg_len = scan.segment(&file, &path, ordinal, offset, ordinal == last)?;
    }
    scan.flush()?;
    index.sync()?;
    let path = dir.join(segment::file_name(last));
    Ok(Recovered {
        file: open_for_append(&path)?,
        ordinal: last,
        seg_len,
        frontier: scan.frontier,
    })
}

/// A crash while creating a segment can leave a newest file shorter than its header: remove it.
fn drop_unfinished_segment(dir: &Path, ordinals: &mut Vec<u32>) -> Result<(), StoreError> {
    let Some(&last) = ordinals.last() else {
        return Ok(());
    };
    let path = dir.join(segment::file_name(last));
    let len = std::fs::metadata(&path)
        .map_err(StoreError::io(format!("reading {}", path.display())))?
        .len();
    if len < HEADER_LEN {
        tracing::warn!(path = %path.display(), len, "removing a segment whose creation was interrupted");
        std::fs::remove_file(&path)
            .map_err(StoreError::io(format!("removing {}", path.display())))?;
        ordinals.pop();
    }
    Ok(())
}

/// Where scanning resumes: just past the last record the index covers, after checking that
/// record is the one the index believes it is.
fn resume_point(
    reader: &crate::index::IndexReader,
    segments: &Segments,
    indexed: u64,
) -> Result<(u32, u64), StoreError> {
    if indexed == 0 {
        return Ok((1, HEADER_LEN));
    }
    let seq = indexed - 1;
    let pos = reader.position(seq)?.ok_or_else(|| {
        StoreError::Damaged(format!(
            "index covers {indexed} events but has no position for seq {seq}"
        ))
    })?;
    let raw = segments.read(pos).map_err(|e| {
        StoreError::Damaged(format!(
            "acknowledged events are missing or damaged: the index covers {indexed} events but the log \
             cannot give back seq {seq} ({e}). Nothing was changed. Run `veritrail fsck` to see the damage; \
             `veritrail reindex` rebuilds the index from what the log still holds"
        ))
    })?;
    if raw.seq != seq || leaf_hash(&raw.payload) != reader.nodes()?(0, seq)? {
        return Err(StoreError::Damaged(format!(
            "the index does not match the log at seq {seq}; run `veritrail reindex`"
        )));
    }
    let end = pos.offset + segment::RECORD_HEADER_LEN as u64 + raw.payload.len() as u64;
    Ok((pos.ordinal, end))
}

/// Replays records into the frontier and the index.
struct Scan<'a> {
    index: &'a Index,
    frontier: Frontier,
    batch: Vec<(u64, Pos, Record, veritrail_core::hash::Hash)>,
    next_seq: u64,
}

impl Scan<'_> {
    /// Scans one segment from `offset`; returns the length of its valid prefix.
    fn segment(
        &mut self,
        file: &File,
        path: &Path,
        ordinal: u32,
        mut offset: u64,
        is_last: bool,
    ) -> Result<u64, StoreError> {
        let len = file
            .metadata()
            .map_err(StoreError::io(format!("reading {}", path.display())))?
            .len();
        loop {
            let outcome = segment::read_record(file, offset, len)
                .map_err(StoreError::io(format!("reading {}", path.display())))?;
            match outcome {
                ReadOutcome::End => return Ok(offset),
                ReadOutcome::Record(raw, end) => {
                    self.replay(raw, Pos { ordinal, offset }, path)?;
                    offset = end;
                }
                ReadOutcome::BadChecksum(..) => {
                    let d = Damage::Corrupt("checksum mismatch on a complete record".into());
                    return self.damaged(file, path, offset, len, d, is_last);
                }
                ReadOutcome::Damaged(d) => {
                    return self.damaged(file, path, offset, len, d, is_last)
                }
            }
        }
    }

    fn replay(&mut self, raw: segment::RawRecord, pos: Pos, path: &Path) -> Result<(), StoreError> {
        if raw.seq != self.next_seq {
            return Err(StoreError::Damaged(format!(
                "{} offset {}: record holds seq {}, expected {}",
                path.display(),
                pos.offset,
                raw.seq,
                self.next_seq
            )));
        }
        let record = Record::from_bytes(&raw.payload)
            .map_err(|e| StoreError::Damaged(format!("{} seq {}: {e}", path.display(), raw.seq)))?;
        self.batch
            .push((raw.seq, pos, record, leaf_hash(&raw.payload)));
        self.next_seq += 1;
        if self.batch.len() >= RECOVERY_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let mut nodes = Vec::new();
        for (_, _, _, leaf) in &self.batch {
            self.frontier
                .append(*leaf, |l, i, h| nodes.push((l, i, *h)));
        }
        let entries: Vec<LeafEntry<'_>> = self
            .batch
            .iter()
            .map(|(seq, pos, record, _)| LeafEntry {
                seq: *seq,
                pos: *pos,
                event: &record.event,
                ingested_at_us: record.ingested_at.timestamp_micros(),
            })
            .collect();
        self.index
            .apply(&entries, &nodes, self.frontier.size(), false)?;
        self.batch.clear();
        Ok(())
    }

    fn damaged(
        &self,
        file: &File,
        path: &Path,
        offset: u64,
        len: u64,
        d: Damage,
        is_last: bool,
    ) -> Result<u64, StoreError> {
        let torn = is_last
            && match d {
                Damage::Incomplete => true,
                Damage::Zeroed => segment::rest_is_zero(file, offset, len)
                    .map_err(StoreError::io("reading the tail"))?,
                Damage::Corrupt(_) => false,
            };
        if !torn {
            return Err(StoreError::Damaged(format!(
                "{} offset {offset} (seq {}): {}; this is not an interrupted write. Run `veritrail fsck` to see the damage",
                path.display(),
                self.next_seq,
                describe(&d)
            )));
        }
        tracing::warn!(path = %path.display(), offset, cut_bytes = len - offset, "cutting a torn tail left by an interrupted write");
        let f = open_for_append(path)?;
        f.set_len(offset)
            .and_then(|()| f.sync_all())
            .map_err(StoreError::io(format!("truncating {}", path.display())))?;
        Ok(offset)
    }
}

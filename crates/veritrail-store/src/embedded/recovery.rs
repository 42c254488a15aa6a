//! Startup recovery: rebuild the in-memory indexes from the log, complete the derived state, and
//! cut a torn tail.
//!
//! Sealed segments with a valid index file are not read at all; the segments still as appended
//! (the newest, and any full one a previous run did not seal) are read once, so startup time is
//! bounded by the segment size, not the log. The rules, from `docs/design/log-format.md`:
//! - an incomplete record, or zeros up to the end, at the end of the newest segment is a torn
//!   write (it was never acknowledged, because acknowledgement follows fsync): it is cut off;
//! - a complete record whose checksum fails keeps its place when the tree's node files hold its
//!   leaf (written only once it was durable): it is never served, and `fsck` names it; without
//!   that leaf nothing vouches for the log after it, and startup stops;
//! - any other damage (a sequence gap, a missing segment, a sealed segment whose header, footer
//!   or block index does not read, leaf hashes past the log's end) stops startup with a message
//!   naming the place; damage inside a sealed block is found when the block is read;
//! - a sealed segment's index file that is missing or damaged is rebuilt from the segment.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, RwLock};

use veritrail_core::event::Record;
use veritrail_core::hash::{leaf_hash, Hash};
use veritrail_core::merkle::Frontier;

use crate::embedded::entries::Entries;
use crate::embedded::index::{track_producers, Index, View};
use crate::embedded::log::describe;
use crate::embedded::medium::open_for_append;
use crate::embedded::sealed::{self, SealedSegment};
use crate::embedded::seg_index::{self, SegmentIndex};
use crate::embedded::segment::{self, Damage, RawRecord, ReadOutcome, RecordKind, HEADER_LEN};
use crate::embedded::segments::{open_sealed, SealJob};
use crate::error::StoreError;
use crate::producers::ProducerStatus;

/// Tree nodes written per batch while recomputing them.
const NODE_BATCH: usize = 64 * 1024;

/// Where the writer continues after recovery.
pub(crate) struct Recovered {
    pub file: File,
    pub ordinal: u32,
    pub seg_len: u64,
    pub frontier: Frontier,
    /// Full segments still as appended: the sealer's work.
    pub unsealed: Vec<SealJob>,
    /// The largest tree size a checkpoint recorded in the log commits to (0: none).
    pub marked: u64,
}

/// How a segment is kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// As appended (`.seg`).
    Appended,
    /// Sealed (`.zseg`).
    Sealed,
}

/// Lists the segments in `dir` and how each is kept, checking their ordinals run 1, 2, 3, …
/// without gaps. An ordinal with both files (a seal interrupted after its sealed file was in
/// place) is listed as appended: that file is the original.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u32, Stored)>, StoreError> {
    let mut found = BTreeMap::new();
    for entry in
        std::fs::read_dir(dir).map_err(StoreError::io(format!("listing {}", dir.display())))?
    {
        let entry = entry.map_err(StoreError::io(format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(o) = segment::parse_file_name(name) {
            found.insert(o, Stored::Appended);
        } else if let Some(o) = sealed::parse_file_name(name) {
            found.entry(o).or_insert(Stored::Sealed);
        }
    }
    for (i, o) in found.keys().enumerate() {
        if *o != i as u32 + 1 {
            return Err(StoreError::Damaged(format!(
                "segment {} is missing from {} (found {}): the events it held are gone, \
                 acknowledged events are missing from the log",
                segment::file_name(i as u32 + 1),
                dir.display(),
                segment::file_name(*o)
            )));
        }
    }
    Ok(found.into_iter().collect())
}

/// Removes what an interrupted seal left: an unfinished sealed file, or a finished one whose
/// appended original was not removed yet (the original stays, and is sealed again).
fn tidy_seals(dir: &Path) -> Result<(), StoreError> {
    let mut removed = false;
    for entry in
        std::fs::read_dir(dir).map_err(StoreError::io(format!("listing {}", dir.display())))?
    {
        let entry = entry.map_err(StoreError::io(format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let duplicate =
            sealed::parse_file_name(name).is_some_and(|o| dir.join(segment::file_name(o)).exists());
        if duplicate || sealed::is_temp_name(name) {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing what an interrupted seal left");
            std::fs::remove_file(&path)
                .map_err(StoreError::io(format!("removing {}", path.display())))?;
            removed = true;
        }
    }
    if removed {
        segment::sync_parent(&dir.join("."))?;
    }
    Ok(())
}

/// Recovers the log in `dir` into `index`.
///
/// The tree is taken from the node files only up to the latest signed checkpoint (`trusted`) and
/// to the first segment still as appended; from there on it is recomputed from the records, so
/// that the leaves the open segments serve from memory are part of the tree that is held against
/// the signed checkpoint.
pub(crate) fn recover(
    dir: &Path,
    index: &Index,
    trusted: Option<u64>,
) -> Result<Recovered, StoreError> {
    tidy_seals(dir)?;
    let mut listed = list_segments(dir)?;
    drop_unfinished_segment(dir, &mut listed)?;
    let synced = index.synced();
    let base = trusted.map_or(synced, |t| t.min(synced));
    let mut scan = Scan {
        index,
        frontier: index.frontier(base)?,
        nodes: Vec::new(),
        producers: BTreeMap::new(),
        next_seq: 0,
        marked: 0,
    };
    let mut views = Vec::new();
    let mut unsealed = Vec::new();
    let mut seg_len = HEADER_LEN;
    let last = listed.last().copied();
    for &(ordinal, stored) in &listed {
        let is_last = Some((ordinal, stored)) == last;
        match stored {
            Stored::Sealed => views.push(View::Sealed(scan.sealed(dir, index.dir(), ordinal)?)),
            Stored::Appended => {
                let (entries, len) = scan.appended(dir, ordinal, is_last)?;
                seg_len = len;
                let entries = Arc::new(RwLock::new(entries));
                if !is_last {
                    unsealed.push(SealJob {
                        ordinal,
                        entries: entries.clone(),
                        producers: scan.producers.values().cloned().collect(),
                    });
                }
                views.push(View::Open(entries));
            }
        }
    }
    // Leaf hashes are written only once their event is durable: one past the log's end is an
    // acknowledged event the log lost.
    let stored = index.stored_leaves()?;
    for seq in scan.next_seq..stored {
        if index.stored_leaf(seq)?.is_some() {
            return Err(StoreError::Damaged(format!(
                "{} holds {} events, but the tree's node files hold the leaf hash of seq {seq}, written only once that event was durable: \
                 acknowledged events are missing from the log. Nothing was changed. Run `veritrail fsck` to see the damage; \
                 to accept the loss, `veritrail reindex` rebuilds the derived state from what the log holds",
                dir.display(),
                scan.next_seq
            )));
        }
    }
    if scan.next_seq < synced {
        return Err(StoreError::Damaged(format!(
            "{} holds {} events but the tree's node files cover {synced}: acknowledged events are missing",
            dir.display(),
            scan.next_seq
        )));
    }
    index.cut_tree(scan.next_seq)?;
    scan.flush_nodes()?;
    let (file, ordinal) = match last {
        Some((ordinal, Stored::Appended)) => (
            {
                // Records a killed process wrote but never synced are in the page cache and were
                // just recovered: make them durable before they are served and signed.
                let path = dir.join(segment::file_name(ordinal));
                let file = open_for_append(&path)
                    .map_err(StoreError::io(format!("opening {}", path.display())))?;
                file.sync_data()
                    .map_err(StoreError::io(format!("syncing {}", path.display())))?;
                file
            },
            ordinal,
        ),
        // No segment yet, or the newest is sealed (its successor's creation never completed):
        // continue in a new one.
        other => {
            let ordinal = other.map_or(1, |(o, _)| o + 1);
            seg_len = HEADER_LEN;
            views.push(View::Open(Arc::new(RwLock::new(Entries::new(
                ordinal,
                scan.next_seq,
            )))));
            (segment::create(dir, ordinal, scan.next_seq)?, ordinal)
        }
    };
    let head = crate::engine::Head {
        size: scan.frontier.size(),
        root: scan.frontier.root(),
    };
    index.load(views, scan.producers, head)?;
    index.sync()?;
    Ok(Recovered {
        file,
        ordinal,
        seg_len,
        frontier: scan.frontier,
        unsealed,
        marked: scan.marked,
    })
}

/// A crash while creating a segment can leave a newest file shorter than its header: remove it.
fn drop_unfinished_segment(dir: &Path, listed: &mut Vec<(u32, Stored)>) -> Result<(), StoreError> {
    let Some(&(last, Stored::Appended)) = listed.last() else {
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
        listed.pop();
    }
    Ok(())
}

/// The state carried from segment to segment.
struct Scan<'a> {
    index: &'a Index,
    /// The tree: from the durable node files, continued with the leaves after them.
    frontier: Frontier,
    /// Nodes completed since the last write.
    nodes: Vec<(u32, u64, Hash)>,
    producers: BTreeMap<String, ProducerStatus>,
    next_seq: u64,
    /// The largest tree size a checkpoint recorded in the log commits to.
    marked: u64,
}

impl Scan<'_> {
    fn expect_start(&self, path: &Path, first_seq: u64) -> Result<(), StoreError> {
        if first_seq != self.next_seq {
            return Err(StoreError::Damaged(segment::misplaced_start(
                path,
                first_seq,
                self.next_seq,
            )));
        }
        Ok(())
    }

    /// Takes the next record: its entries, its producer's sequence, its leaf for the tree.
    fn replay(
        &mut self,
        raw: RawRecord,
        offset: u64,
        path: &Path,
        entries: Option<&mut Entries>,
    ) -> Result<(), StoreError> {
        if raw.seq != self.next_seq {
            return Err(StoreError::Damaged(format!(
                "{} offset {offset}: record holds seq {}, expected {}",
                path.display(),
                raw.seq,
                self.next_seq
            )));
        }
        let leaf = leaf_hash(&raw.payload);
        if let Some(entries) = entries {
            let record = Record::from_bytes(&raw.payload).map_err(|e| {
                StoreError::Damaged(format!("{} seq {}: {e}", path.display(), raw.seq))
            })?;
            entries.add(&record.event, offset, leaf);
            track_producers(
                &mut self.producers,
                std::iter::once((&record.event, record.ingested_at.timestamp_micros())),
            );
        }
        if raw.seq >= self.frontier.size() {
            let nodes = &mut self.nodes;
            self.frontier.append(leaf, |l, i, h| nodes.push((l, i, *h)));
            if self.nodes.len() >= NODE_BATCH {
                self.flush_nodes()?;
            }
        }
        self.next_seq += 1;
        Ok(())
    }

    fn flush_nodes(&mut self) -> Result<(), StoreError> {
        self.index.put_nodes(&self.nodes)?;
        self.nodes.clear();
        Ok(())
    }

    /// A sealed segment: its index file, rebuilt from the segment when it is missing or does not
    /// match. Its records are read only when the index must be rebuilt or the tree's nodes of its
    /// leaves recomputed.
    fn sealed(
        &mut self,
        dir: &Path,
        index_dir: &Path,
        ordinal: u32,
    ) -> Result<Arc<SegmentIndex>, StoreError> {
        let seg = open_sealed(dir, ordinal)?.ok_or_else(|| {
            StoreError::Damaged(format!("{} vanished", sealed::file_name(ordinal)))
        })?;
        self.expect_start(seg.path(), seg.first_seq)?;
        let path = index_dir.join(seg_index::file_name(ordinal));
        let existing = match SegmentIndex::open(&path) {
            Ok(s)
                if s.ordinal == ordinal
                    && s.first_seq == seg.first_seq
                    && s.end() == seg.end_seq() =>
            {
                Some(s)
            }
            Ok(_) => None,
            Err(e) => {
                if path.exists() {
                    tracing::warn!(error = %e, "rebuilding a segment index");
                }
                None
            }
        };
        if existing.is_none() || seg.end_seq() > self.frontier.size() {
            let mut entries = existing
                .is_none()
                .then(|| Entries::new(ordinal, seg.first_seq));
            self.records_of_sealed(&seg, entries.as_mut())?;
            if let Some(entries) = entries {
                let producers: Vec<_> = self.producers.values().cloned().collect();
                return Ok(Arc::new(seg_index::write(index_dir, &entries, &producers)?));
            }
        } else {
            self.next_seq = seg.end_seq();
        }
        let sidx = existing.ok_or_else(|| StoreError::Failed("segment index vanished".into()))?;
        self.marked = self.marked.max(sidx.marked);
        self.producers = sidx
            .producers()
            .iter()
            .map(|p| (p.producer_id.clone(), p.clone()))
            .collect();
        Ok(Arc::new(sidx))
    }

    fn records_of_sealed(
        &mut self,
        seg: &SealedSegment,
        mut entries: Option<&mut Entries>,
    ) -> Result<(), StoreError> {
        for k in 0..seg.blocks.len() {
            let bytes = seg.read_block(k)?;
            for (raw, offset) in seg.records(k, &bytes)? {
                if raw.kind == RecordKind::Checkpoint {
                    self.marked = self.marked.max(raw.seq);
                    if let Some(e) = entries.as_deref_mut() {
                        e.marked = e.marked.max(raw.seq);
                    }
                    continue;
                }
                self.replay(raw, offset, seg.path(), entries.as_deref_mut())?;
            }
        }
        Ok(())
    }

    /// A segment as appended: every record into new entries; a torn tail of the newest is cut.
    /// Returns the entries and the length of the valid prefix.
    fn appended(
        &mut self,
        dir: &Path,
        ordinal: u32,
        is_last: bool,
    ) -> Result<(Entries, u64), StoreError> {
        let path = dir.join(segment::file_name(ordinal));
        let file =
            File::open(&path).map_err(StoreError::io(format!("opening {}", path.display())))?;
        let first_seq = segment::read_header(&file, &path, ordinal)?;
        self.expect_start(&path, first_seq)?;
        if first_seq < self.frontier.size() {
            // Its leaves are served from memory: recompute them into the tree.
            self.flush_nodes()?;
            self.frontier = self.index.frontier(first_seq)?;
        }
        let mut entries = Entries::new(ordinal, first_seq);
        let len = file
            .metadata()
            .map_err(StoreError::io(format!("reading {}", path.display())))?
            .len();
        let mut offset = HEADER_LEN;
        loop {
            let outcome = segment::read_record(&file, offset, len)
                .map_err(StoreError::io(format!("reading {}", path.display())))?;
            match outcome {
                ReadOutcome::End => return Ok((entries, offset)),
                ReadOutcome::Record(raw, end) if raw.kind == RecordKind::Checkpoint => {
                    entries.marked = entries.marked.max(raw.seq);
                    self.marked = self.marked.max(raw.seq);
                    offset = end;
                }
                ReadOutcome::Record(raw, end) => {
                    self.replay(raw, offset, &path, Some(&mut entries))?;
                    offset = end;
                }
                ReadOutcome::BadChecksum(raw, end) if raw.kind == RecordKind::Checkpoint => {
                    // Not an event: its loss only weakens the history check; the history itself
                    // is in checkpoints.log.
                    tracing::error!(path = %path.display(), offset, "a checkpoint marker is damaged; `veritrail fsck` names it");
                    offset = end;
                }
                ReadOutcome::BadChecksum(raw, end) => {
                    if self.unreadable(&raw, offset, &path, &mut entries)? {
                        offset = end;
                        continue;
                    }
                    let d = Damage::Corrupt("checksum mismatch on a complete record".into());
                    let len = self.damaged(&file, &path, offset, len, d, is_last)?;
                    return Ok((entries, len));
                }
                ReadOutcome::Damaged(d) => {
                    let len = self.damaged(&file, &path, offset, len, d, is_last)?;
                    return Ok((entries, len));
                }
            }
        }
    }

    /// Takes a complete record whose checksum fails as the next event, when the tree already
    /// knows its leaf: it keeps its place and is never served (every read of it verifies, and
    /// fails; `fsck` names it; see [`Entries::add_damaged`]). False when the tree does not know
    /// its leaf: then nothing can vouch for the log after it.
    fn unreadable(
        &mut self,
        raw: &RawRecord,
        offset: u64,
        path: &Path,
        entries: &mut Entries,
    ) -> Result<bool, StoreError> {
        let seq = self.next_seq;
        let Some(leaf) = self.index.stored_leaf(seq)? else {
            return Ok(false);
        };
        if seq >= self.frontier.size() {
            let nodes = &mut self.nodes;
            self.frontier.append(leaf, |l, i, h| nodes.push((l, i, *h)));
        }
        tracing::error!(path = %path.display(), offset, seq, "a stored event is damaged (its checksum fails): it is never served; `veritrail fsck` names it");
        let id = Record::from_bytes(&raw.payload)
            .ok()
            .map(|r| r.event.event_id);
        entries.add_damaged(offset, id, leaf);
        self.next_seq += 1;
        Ok(true)
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
        let f =
            open_for_append(path).map_err(StoreError::io(format!("opening {}", path.display())))?;
        f.set_len(offset)
            .and_then(|()| f.sync_all())
            .map_err(StoreError::io(format!("truncating {}", path.display())))?;
        Ok(offset)
    }
}

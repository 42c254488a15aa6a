//! Offline integrity check of one tenant's store: re-hash every record, rebuild the tree,
//! compare it with the tree's node files and the latest signed checkpoint, and rebuild every
//! sealed segment's index to compare it with its file. Run with the server stopped (the index is
//! locked exclusively). Nothing of the log or its derived state is changed (opening the
//! checkpoint history cuts a torn last entry, as the server would).
//!
//! What a stop without a clean shutdown leaves (a torn tail on the newest segment, tree nodes not
//! yet written for the newest events, a sealed segment whose index file was not yet written) is
//! not damage: the report says the store *needs recovery*, which the next server start does.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use veritrail_core::event::LeafSummary;
use veritrail_core::hash::{leaf_hash, to_b64, Hash};
use veritrail_core::merkle::{self, Frontier};
use veritrail_core::note::NoteVerifier;

use crate::embedded::checkpoints::Checkpoints;
use crate::embedded::entries::Entries;
use crate::embedded::flat::FlatFiles;
use crate::embedded::index::track_producers;
use crate::embedded::log::describe;
use crate::embedded::recovery::{list_segments, Stored};
use crate::embedded::sealed::{self, SealedSegment};
use crate::embedded::seg_index;
use crate::embedded::segment::{self, Damage, RawRecord, ReadOutcome, RecordKind, HEADER_LEN};
use crate::error::StoreError;

/// The finding of a checkpoint history that does not reach the checkpoints the log recorded.
pub fn history_removed(marked: u64, latest: Option<u64>) -> String {
    let held = match latest {
        Some(size) => format!("its latest is at {size}"),
        None => "it holds none".into(),
    };
    format!(
        "the log records a signed checkpoint of {marked} events, but checkpoints.log does not reach it ({held}): \
         the checkpoint history was removed or cut back. Restore checkpoints.log from a backup; to start a new history \
         deliberately, start the server once with --reset-checkpoint-history"
    )
}

/// What fsck found.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub events: u64,
    pub segments: u32,
    pub bytes: u64,
    pub checkpoint_size: Option<u64>,
    /// The root of the tree of every event in the log, as its records hash.
    pub root: Hash,
    /// Full segments still as appended (the server seals them).
    pub unsealed: u32,
    /// What an interrupted run left, which starting the server completes (not damage).
    pub needs_recovery: Vec<String>,
    /// One line per problem, each naming the event or file concerned.
    pub problems: Vec<String>,
}

impl FsckReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the tenant directory `dir`; `progress(bytes_done, bytes_total)` is called as it goes.
pub fn check(
    dir: &Path,
    vkey: &NoteVerifier,
    mut progress: impl FnMut(u64, u64),
) -> Result<FsckReport, StoreError> {
    let index_dir = dir.join(crate::embedded::index::INDEX_DIR);
    let _lock = crate::embedded::index::lock(&index_dir)?;
    let flat = FlatFiles::open_existing(&index_dir)
        .map_err(StoreError::io(format!("opening {}", index_dir.display())))?;
    let log_dir = dir.join("log");
    let listed = list_segments(&log_dir)?;
    let path_of = |(ordinal, stored): (u32, Stored)| match stored {
        Stored::Appended => log_dir.join(segment::file_name(ordinal)),
        Stored::Sealed => log_dir.join(sealed::file_name(ordinal)),
    };
    let mut total = 0;
    for l in &listed {
        let path = path_of(*l);
        total += std::fs::metadata(&path)
            .map_err(StoreError::io(format!("reading {}", path.display())))?
            .len();
    }
    // A checkpoint history that does not read or verify is a finding, not a reason to stop.
    let (latest, checkpoint_problem) = match Checkpoints::open(&dir.join("checkpoints.log"), vkey) {
        Ok(c) => (c.latest(), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let stored_leaves = flat
        .leaves()
        .map_err(StoreError::io("reading the tree's node files"))?;
    let mut run = Run {
        flat: &flat,
        stored_leaves,
        index_dir: &index_dir,
        durable: crate::embedded::index::read_tree_meta(&index_dir),
        report: FsckReport::default(),
        frontier: Frontier::new(),
        cp_root: None,
        durable_root: None,
        completed: Vec::new(),
        altered: Default::default(),
        producers: Default::default(),
        marked: 0,
        segment_marked: 0,
    };
    run.report.checkpoint_size = latest.as_ref().map(|c| c.checkpoint.size);
    run.report.problems.extend(checkpoint_problem);
    let cp_size = run.report.checkpoint_size;
    let mut done = 0;
    let last = listed.last().copied();
    // A sealed segment's index file is checked on a thread of its own while the next segment is
    // read and hashed; one such check at a time.
    std::thread::scope(|scope| -> Result<(), StoreError> {
        let mut pending: Option<std::thread::ScopedJoinHandle<'_, IndexChecked>> = None;
        for (ordinal, stored) in listed {
            let is_last = Some((ordinal, stored)) == last;
            let path = path_of((ordinal, stored));
            let (len, index_check) = run.segment(&path, ordinal, stored, is_last, cp_size)?;
            if let Some((check, records)) = index_check {
                if let Some(previous) = pending.take() {
                    run.index_finding(previous.join())?;
                }
                pending = Some(scope.spawn(move || check.run(&records)));
            }
            done += len;
            progress(done, total);
        }
        if let Some(previous) = pending.take() {
            run.index_finding(previous.join())?;
        }
        Ok(())
    })?;
    run.report.bytes = total;
    run.finish(latest.map(|c| c.note), vkey)?;
    run.report.root = run.frontier.root();
    Ok(run.report)
}

/// One record cut from a segment, with the work done on it before the in-order checks.
struct Scanned {
    raw: RawRecord,
    /// Its place in the log (which the record's own `seq` should equal).
    seq: u64,
    /// Offset in the segment as appended.
    offset: u64,
    bad_checksum: bool,
    /// In a sealed block that does not read: only its place in the log is known.
    lost: bool,
    leaf: Hash,
    /// The decoded record (what the index and the producers' state need of it), or why it does
    /// not decode.
    record: Option<Result<LeafSummary<'static>, String>>,
}

impl Scanned {
    fn new(raw: RawRecord, seq: u64, offset: u64, bad_checksum: bool) -> Scanned {
        Scanned {
            raw,
            seq,
            offset,
            bad_checksum,
            lost: false,
            leaf: [0; 32],
            record: None,
        }
    }

    fn prepare(&mut self) {
        if self.lost {
            return;
        }
        self.leaf = leaf_hash(&self.raw.payload);
        self.record = Some(
            LeafSummary::from_bytes(&self.raw.payload)
                .map(LeafSummary::into_owned)
                .map_err(|e| e.to_string()),
        );
    }
}

/// A segment's records in log order, and the damage that ended it early.
type Loaded = (Vec<Scanned>, Option<String>);

/// The check of one sealed segment's index file: what it needs of the in-order scan (the
/// producers' state at the segment's end), so that it runs while the next segment is read.
struct IndexCheck {
    path: PathBuf,
    ordinal: u32,
    first_seq: u64,
    marked: u64,
    producers: Vec<crate::producers::ProducerStatus>,
}

/// An index check to run, with the records of its segment.
type IndexJob = (IndexCheck, Vec<Scanned>);

/// What an index check gives back.
type IndexChecked = Result<Option<IndexFinding>, StoreError>;

/// What an [`IndexCheck`] found: a problem, or work that starting the server does.
enum IndexFinding {
    Problem(String),
    NeedsRecovery(String),
}

impl IndexCheck {
    /// Rebuilds the index from the segment's records and compares it with its file.
    fn run(&self, records: &[Scanned]) -> Result<Option<IndexFinding>, StoreError> {
        let mut entries = Entries::new(self.ordinal, self.first_seq);
        entries.marked = self.marked;
        for r in records {
            match &r.record {
                Some(Ok(rec)) if !r.bad_checksum => entries.add(&rec.event, r.offset, r.leaf),
                // Damage already reported: the index cannot be compared.
                _ => return Ok(None),
            }
        }
        let expected = seg_index::encode(&entries, &self.producers);
        let path = self.path.display();
        Ok(match std::fs::read(&self.path) {
            Ok(found) if found == expected => None,
            Ok(found) if seg_index::older_format(&found) => Some(IndexFinding::NeedsRecovery(
                format!("{path} is in an older index format: starting the server rewrites it"),
            )),
            Ok(_) => Some(IndexFinding::Problem(format!(
                "{path}: the segment's index does not match its events; it is derived from the log: `veritrail reindex` rebuilds it"
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(
                IndexFinding::NeedsRecovery(format!(
                    "{path} is not written yet: starting the server writes it"
                )),
            ),
            Err(e) => return Err(StoreError::io(format!("reading {path}"))(e)),
        })
    }
}

struct Run<'a> {
    flat: &'a FlatFiles,
    /// Leaf hashes the tree's node files hold.
    stored_leaves: u64,
    index_dir: &'a Path,
    /// Leaves whose nodes `index/tree.meta` records as durable: beyond them, after a crash, a
    /// node may not be written yet (startup computes it), so the node files are judged up to it.
    durable: u64,
    report: FsckReport,
    frontier: Frontier,
    /// The log's root at the latest checkpoint's size, and at `durable`.
    cp_root: Option<Hash>,
    durable_root: Option<Hash>,
    /// The stored nodes above the leaves completed by the segment being checked: (level, index,
    /// hash).
    completed: Vec<(u32, u64, Hash)>,
    /// The seqs whose record does not match its stored leaf hash.
    altered: std::collections::BTreeSet<u64>,
    /// Producers' sequence state, replayed in log order (sealed indexes record it).
    producers: std::collections::BTreeMap<String, crate::producers::ProducerStatus>,
    /// The largest tree size a checkpoint recorded in the log commits to.
    marked: u64,
    /// The same, within the sealed segment being checked.
    segment_marked: u64,
}

impl Run<'_> {
    fn problem(&mut self, p: String) {
        self.report.problems.push(p);
    }

    /// Checks one segment file in log order: its length, and for a sealed segment read without
    /// damage, the check of its index file still to run.
    fn segment(
        &mut self,
        path: &Path,
        ordinal: u32,
        stored: Stored,
        is_last: bool,
        cp_size: Option<u64>,
    ) -> Result<(u64, Option<IndexJob>), StoreError> {
        let file =
            File::open(path).map_err(StoreError::io(format!("opening {}", path.display())))?;
        let len = file
            .metadata()
            .map_err(StoreError::io("segment metadata"))?
            .len();
        self.report.segments += 1;
        if stored == Stored::Appended && !is_last {
            self.report.unsealed += 1;
        }
        let loaded = match stored {
            Stored::Appended => self.appended(&file, path, ordinal, len, is_last)?,
            Stored::Sealed => self.sealed(path, ordinal),
        };
        let Some((mut records, damage)) = loaded else {
            return Ok((len, None));
        };
        let first = records.first().map_or(self.frontier.size(), |r| r.seq);
        self.check_segment(&mut records, cp_size)?;
        if let Some(d) = damage {
            self.problem(d);
            return Ok((len, None));
        }
        let job = (stored == Stored::Sealed).then(|| {
            let check = IndexCheck {
                path: self.index_dir.join(seg_index::file_name(ordinal)),
                ordinal,
                first_seq: first,
                marked: self.segment_marked,
                producers: self.producers.values().cloned().collect(),
            };
            (check, records)
        });
        Ok((len, job))
    }

    /// Takes in what an index check found (a check that panicked is a failure of fsck itself).
    fn index_finding(
        &mut self,
        joined: std::thread::Result<IndexChecked>,
    ) -> Result<(), StoreError> {
        let finding =
            joined.map_err(|_| StoreError::Failed("an index check panicked".into()))??;
        match finding {
            Some(IndexFinding::Problem(p)) => self.problem(p),
            Some(IndexFinding::NeedsRecovery(n)) => self.report.needs_recovery.push(n),
            None => {}
        }
        Ok(())
    }

    /// Cuts the records out of a segment as appended. `None` when its header does not read.
    fn appended(
        &mut self,
        file: &File,
        path: &Path,
        ordinal: u32,
        len: u64,
        is_last: bool,
    ) -> Result<Option<Loaded>, StoreError> {
        match segment::read_header(file, path, ordinal) {
            Ok(first) if first != self.frontier.size() => {
                self.problem(segment::misplaced_start(path, first, self.frontier.size()))
            }
            Ok(_) => {}
            Err(e) => {
                self.problem(e.to_string());
                return Ok(None);
            }
        }
        // One sequential read of the whole segment, then the records are cut from memory.
        let io = || StoreError::io(format!("reading {}", path.display()));
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(len).read_to_end(&mut bytes).map_err(io())?;
        let mut records = Vec::new();
        let mut offset = HEADER_LEN;
        let damage = loop {
            let seq = self.frontier.size() + records.len() as u64;
            match segment::read_record(bytes.as_slice(), offset, len).map_err(io())? {
                ReadOutcome::End => break None,
                ReadOutcome::Record(raw, end) if raw.kind == RecordKind::Checkpoint => {
                    self.marked = self.marked.max(raw.seq);
                    offset = end;
                }
                ReadOutcome::Record(raw, end) => {
                    records.push(Scanned::new(raw, seq, offset, false));
                    offset = end;
                }
                ReadOutcome::BadChecksum(raw, end) if raw.kind == RecordKind::Checkpoint => {
                    self.problem(format!(
                        "{} offset {offset}: a checkpoint marker's checksum fails (the events are not affected)",
                        path.display()
                    ));
                    offset = end;
                }
                ReadOutcome::BadChecksum(raw, end) => {
                    records.push(Scanned::new(raw, seq, offset, true));
                    offset = end;
                }
                ReadOutcome::Damaged(d) => {
                    let torn = is_last
                        && match d {
                            Damage::Incomplete => true,
                            Damage::Zeroed => bytes[offset as usize..].iter().all(|b| *b == 0),
                            Damage::Corrupt(_) => false,
                        };
                    if torn {
                        self.report.needs_recovery.push(format!(
                            "{} ends with an interrupted write at offset {offset} ({} bytes, never acknowledged): starting the server cuts it",
                            path.display(),
                            len - offset
                        ));
                        break None;
                    }
                    break Some(format!(
                        "{} offset {offset} (after seq {}): {}; the rest of this segment cannot be read",
                        path.display(),
                        seq.wrapping_sub(1),
                        describe(&d)
                    ));
                }
            }
        };
        Ok(Some((records, damage)))
    }

    /// The records of a sealed segment, block by block. A block that does not read is one
    /// finding naming its seqs; its records are carried as lost, so that the ones after it are
    /// still checked. `None` when the file's header, footer or block index does not read.
    fn sealed(&mut self, path: &Path, ordinal: u32) -> Option<Loaded> {
        let seg = match SealedSegment::open(path, ordinal) {
            Ok(seg) => seg,
            Err(e) => {
                self.problem(format!("{e}; its events cannot be checked"));
                return None;
            }
        };
        if seg.first_seq != self.frontier.size() {
            self.problem(segment::misplaced_start(
                path,
                seg.first_seq,
                self.frontier.size(),
            ));
        }
        let first = self.frontier.size();
        let mut records: Vec<Scanned> = Vec::new();
        self.segment_marked = 0;
        for (k, block) in seg.blocks.iter().enumerate() {
            match seg.read_block(k).and_then(|bytes| seg.records(k, &bytes)) {
                Ok(cut) => {
                    for (raw, offset) in cut {
                        if raw.kind == RecordKind::Checkpoint {
                            self.segment_marked = self.segment_marked.max(raw.seq);
                            continue;
                        }
                        let seq = first + records.len() as u64;
                        records.push(Scanned::new(raw, seq, offset, false));
                    }
                }
                Err(e) => {
                    self.problem(format!("{e}: these events cannot be read"));
                    for _ in block.seqs() {
                        let seq = first + records.len() as u64;
                        let raw = RawRecord {
                            kind: segment::RecordKind::Event,
                            seq,
                            payload: Vec::new(),
                        };
                        records.push(Scanned {
                            lost: true,
                            ..Scanned::new(raw, seq, block.raw_offset, false)
                        });
                    }
                }
            }
        }
        self.marked = self.marked.max(self.segment_marked);
        Some((records, None))
    }

    /// Checks the records of one segment in log order.
    fn check_segment(
        &mut self,
        records: &mut [Scanned],
        cp_size: Option<u64>,
    ) -> Result<(), StoreError> {
        // The per-record work that needs no order (hashing, decoding) is spread over the cores;
        // the tree and the findings then follow log order.
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk = records.len().div_ceil(workers).max(1);
        std::thread::scope(|s| {
            for part in records.chunks_mut(chunk) {
                s.spawn(move || part.iter_mut().for_each(Scanned::prepare));
            }
        });
        let first = self.frontier.size();
        let end = first + records.len() as u64;
        let stored = self
            .flat
            .leaf_range(first.min(self.stored_leaves), end.min(self.stored_leaves))
            .map_err(StoreError::io("reading leaf hashes"))?;
        for (i, r) in records.iter().enumerate() {
            self.note_roots(cp_size);
            self.record(r, stored.get(i).copied());
        }
        self.note_roots(cp_size);
        self.check_nodes();
        Ok(())
    }

    /// Compares the nodes above the leaves that the log's records completed with those stored,
    /// one read per level, so that a damaged node is found even where the root does not use it.
    /// Only nodes whose leaves are all recorded durable are judged (see `durable`).
    fn check_nodes(&mut self) {
        let mut completed = std::mem::take(&mut self.completed);
        completed.sort_unstable_by_key(|&(level, index, _)| (level, index));
        let limit = self.durable.min(self.stored_leaves);
        for run in completed.chunk_by(|a, b| a.0 == b.0 && a.1 + 1 == b.1) {
            let (level, first) = (run[0].0, run[0].1);
            let judged = run
                .iter()
                .take_while(|(_, index, _)| (index + 1) << level <= limit)
                .count();
            if judged == 0 {
                continue;
            }
            let stored = match self.flat.node_range(level, first, first + judged as u64) {
                Ok(stored) if stored.len() == judged => stored,
                // A node file cut short or missing is damage to report, not a reason to stop.
                _ => {
                    self.problem(format!(
                        "the tree's node file of level {level} does not hold nodes {first} to {}; run `veritrail reindex`",
                        first + judged as u64 - 1
                    ));
                    continue;
                }
            };
            // Above an event already reported altered, the nodes differ because of it: not news.
            let altered = &self.altered;
            let explained = |index: u64| {
                altered
                    .range(index << level..(index + 1) << level)
                    .next()
                    .is_some()
            };
            if let Some((_, index, _)) = run
                .iter()
                .zip(&stored)
                .find(|((_, index, hash), kept)| hash != *kept && !explained(*index))
                .map(|(node, _)| *node)
            {
                self.problem(format!(
                    "the tree's node {index} of level {level} (leaves {} to {}) does not match the log; run `veritrail reindex`",
                    index << level,
                    ((index + 1) << level) - 1
                ));
            }
        }
        completed.clear();
        self.completed = completed;
    }

    /// Keeps the log's root when the tree has reached a size judged at the end.
    fn note_roots(&mut self, cp_size: Option<u64>) {
        let size = self.frontier.size();
        if cp_size == Some(size) && self.cp_root.is_none() {
            self.cp_root = Some(self.frontier.root());
        }
        if size == self.durable && self.durable_root.is_none() {
            self.durable_root = Some(self.frontier.root());
        }
    }

    /// Checks one record against the tree's stored leaf hash `tree_leaf`.
    fn record(&mut self, r: &Scanned, tree_leaf: Option<Hash>) {
        let seq = r.seq;
        self.report.events += 1;
        if r.lost {
            // Named once, with its block; the tree continues with the stored leaf.
            self.frontier
                .append(tree_leaf.unwrap_or_default(), |_, _, _| {});
            return;
        }
        let name = match &r.record {
            Some(Ok(rec)) => format!("seq {seq} (event {})", rec.event.event_id),
            _ => format!("seq {seq}"),
        };
        if r.raw.seq != seq {
            self.problem(format!("{name}: the record says seq {}", r.raw.seq));
        }
        if r.bad_checksum {
            self.problem(format!(
                "{name}: its checksum fails: the stored event was altered or damaged"
            ));
        } else if tree_leaf.is_some_and(|t| t != r.leaf) {
            self.altered.insert(seq);
            self.problem(format!(
                "{name}: the stored bytes do not match the leaf hash in the tree's node files: the event was altered \
                 (if the checkpoint check below passes, the node files are what is damaged: run `veritrail reindex`)"
            ));
        }
        // The log is the source of truth: continue the tree with the record's own hash, unless its
        // bytes are known bad, so that the checkpoint comparison judges the log itself. A record
        // whose checksum fails continues with the stored leaf, so that one damaged event does
        // not hide the state of every later one.
        let continue_with = if r.bad_checksum {
            tree_leaf.unwrap_or(r.leaf)
        } else {
            r.leaf
        };
        let completed = &mut self.completed;
        self.frontier.append(continue_with, |level, index, hash| {
            // Leaves are judged one by one, and the computed levels are made of them.
            if level > 0 && !crate::embedded::flat::computed(level) {
                completed.push((level, index, *hash));
            }
        });
        match &r.record {
            Some(Err(e)) if !r.bad_checksum => {
                self.problem(format!("{name}: does not decode: {e}"))
            }
            Some(Ok(rec)) => {
                track_producers(
                    &mut self.producers,
                    std::iter::once((&rec.event, rec.ingested_at_us())),
                );
            }
            _ => {}
        }
    }

    /// The checks of the whole: the tree's node files and the signed checkpoint.
    fn finish(&mut self, note: Option<String>, vkey: &NoteVerifier) -> Result<(), StoreError> {
        let size = self.frontier.size();
        self.note_roots(self.report.checkpoint_size);
        // Leaf hashes are written only once their event is durable: one past the log's end is an
        // acknowledged event the log lost (startup refuses such a store).
        if self.stored_leaves > size {
            let extra = self
                .flat
                .leaf_range(size, self.stored_leaves)
                .map_err(StoreError::io("reading leaf hashes"))?;
            if let Some(k) = extra.iter().position(|h| *h != [0u8; 32]) {
                self.problem(format!(
                    "the log holds {size} events, but the tree's node files hold the leaf hash of seq {}, written only once that event was durable: acknowledged events are missing from the log",
                    size + k as u64
                ));
            }
        }
        let durable = self.durable;
        if durable < size && self.stored_leaves >= size {
            self.report.needs_recovery.push(format!(
                "index/tree.meta records {durable} of the {size} leaves as durable (the server stopped without a clean shutdown): starting the server recomputes the nodes of the rest from the log"
            ));
        }
        if self.stored_leaves < size {
            self.report.needs_recovery.push(format!(
                "the tree's node files hold {} of the {size} leaves (the server stopped without a clean shutdown): starting the server computes the rest",
                self.stored_leaves
            ));
        } else {
            // Judged as far as they are recorded durable (all of them after a clean stop).
            let (judged, root) = if durable < size {
                (durable, self.durable_root)
            } else {
                (size, Some(self.frontier.root()))
            };
            let flat = self.flat;
            let mut nodes = |level, index| flat.stored_node(level, index);
            if judged > 0 && merkle::root(judged, &mut nodes).ok() != root {
                self.problem(
                    "the tree's node files do not match the log; run `veritrail reindex`".into(),
                );
            }
        }
        let history = self.report.checkpoint_size.unwrap_or(0);
        if self.marked > history {
            self.problem(history_removed(self.marked, self.report.checkpoint_size));
        }
        if let Some(note) = note {
            self.check_checkpoint(&note, vkey);
        }
        Ok(())
    }

    fn check_checkpoint(&mut self, note: &str, vkey: &NoteVerifier) {
        let cp = match veritrail_core::checkpoint::open_checkpoint(note, std::slice::from_ref(vkey))
        {
            Ok(cp) => cp,
            Err(e) => {
                return self.problem(format!(
                    "the latest checkpoint does not verify with {}: {e}",
                    vkey.vkey()
                ))
            }
        };
        match self.cp_root {
            None => self.problem(format!("the latest checkpoint commits to {} events but the log holds {}", cp.size, self.frontier.size())),
            Some(root) if root != cp.root => self.problem(format!(
                "the log's first {} events hash to {} but the signed checkpoint says {}: the log was altered",
                cp.size,
                to_b64(&root),
                to_b64(&cp.root)
            )),
            Some(_) => {}
        }
    }
}

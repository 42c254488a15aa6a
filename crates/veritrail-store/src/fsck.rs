//! Offline integrity check of one tenant's store: re-hash every record, rebuild the tree,
//! compare it with the derived state and the latest signed checkpoint, and cross-check the
//! indexes. Run with the server stopped (the index database is opened exclusively).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use veritrail_core::event::{LeafSummary, Record};
use veritrail_core::hash::{leaf_hash, to_b64, Hash};
use veritrail_core::merkle::{self, Frontier};
use veritrail_core::note::NoteVerifier;

use crate::checkpoints::Checkpoints;
use crate::error::StoreError;
use crate::index::{Digest, Index, IndexReader, Pos};
use crate::log::describe;
use crate::recovery::list_segments;
use crate::segment::{self, RawRecord, ReadOutcome, HEADER_LEN};

/// What fsck found.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub events: u64,
    pub segments: u32,
    pub bytes: u64,
    pub checkpoint_size: Option<u64>,
    /// The fast pass found the index's entries differ from the log's (the report then comes
    /// from the slow pass, which names each event concerned).
    pub index_differs: bool,
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
    let index = Index::open_for_check(&dir.join(crate::index::INDEX_DIR))?;
    // A fast pass compares fingerprints of the index with what the log calls for; only when they
    // differ does a second pass look every entry up, to name the damage.
    let report = pass(dir, &index, vkey, false, &mut progress)?;
    if !report.index_differs {
        return Ok(report);
    }
    let mut named = pass(dir, &index, vkey, true, &mut progress)?;
    named.index_differs = true;
    // Entries that belong to no record (extra ones) are only seen by the fingerprint.
    if !named.problems.iter().any(|p| p.contains("index")) {
        named.problems.extend(
            report
                .problems
                .into_iter()
                .filter(|p| p.contains("index's entries")),
        );
    }
    Ok(named)
}

fn pass(
    dir: &Path,
    index: &Index,
    vkey: &NoteVerifier,
    name_index_damage: bool,
    progress: &mut impl FnMut(u64, u64),
) -> Result<FsckReport, StoreError> {
    let log_dir = dir.join("log");
    let reader = index.reader()?;
    let ordinals = list_segments(&log_dir)?;
    let mut total = 0;
    for o in &ordinals {
        let path = log_dir.join(segment::file_name(*o));
        total += std::fs::metadata(&path)
            .map_err(StoreError::io(format!("reading {}", path.display())))?
            .len();
    }
    // A checkpoint history that does not read or verify is a finding, not a reason to stop.
    let (latest, checkpoint_problem) = match Checkpoints::open(&dir.join("checkpoints.log"), vkey) {
        Ok(c) => (c.latest(), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut run = Run {
        reader: &reader,
        report: FsckReport::default(),
        frontier: Frontier::new(),
        cp_root: None,
        expected: Digest::default(),
        name_index_damage,
    };
    run.report.checkpoint_size = latest.as_ref().map(|c| c.checkpoint.size);
    run.report.problems.extend(checkpoint_problem);
    let cp_size = run.report.checkpoint_size;
    std::thread::scope(|s| {
        // The fast pass fingerprints the index's entries while it reads the log.
        let found = (!name_index_damage).then(|| s.spawn(|| reader.entries_digest()));
        let mut done = 0;
        for ordinal in ordinals {
            let path = log_dir.join(segment::file_name(ordinal));
            let file =
                File::open(&path).map_err(StoreError::io(format!("opening {}", path.display())))?;
            let len = file
                .metadata()
                .map_err(StoreError::io("segment metadata"))?
                .len();
            run.report.segments += 1;
            run.segment(&file, &path, ordinal, len, cp_size)?;
            done += len;
            progress(done, total);
        }
        run.report.bytes = total;
        let found = match found {
            Some(h) => Some(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?),
            None => None,
        };
        run.finish(index, found, latest.map(|c| c.note), vkey)
    })?;
    Ok(run.report)
}

/// One record cut from a segment, with the work done on it before the in-order checks.
struct Scanned {
    raw: RawRecord,
    /// Its place in the log (which the record's own `seq` should equal).
    seq: u64,
    pos: Pos,
    bad_checksum: bool,
    leaf: Hash,
    /// Fast pass: the event id and the fingerprint of the index entries the record calls for,
    /// or why its indexed fields do not read. `None` in the slow pass, which decodes fully.
    summary: Option<Result<(uuid::Uuid, Digest), String>>,
}

impl Scanned {
    fn new(raw: RawRecord, seq: u64, pos: Pos, bad_checksum: bool) -> Scanned {
        Scanned {
            raw,
            seq,
            pos,
            bad_checksum,
            leaf: [0; 32],
            summary: None,
        }
    }

    fn prepare(&mut self, fast: bool) {
        self.leaf = leaf_hash(&self.raw.payload);
        if fast {
            self.summary = Some(
                LeafSummary::from_bytes(&self.raw.payload)
                    .map(|s| {
                        let mut d = Digest::default();
                        d.add_expected(&s.event, self.seq);
                        (s.event.event_id, d)
                    })
                    .map_err(|e| e.to_string()),
            );
        }
    }
}

struct Run<'a> {
    reader: &'a IndexReader,
    report: FsckReport,
    frontier: Frontier,
    cp_root: Option<veritrail_core::hash::Hash>,
    /// Fingerprint of the index entries the records call for.
    expected: Digest,
    /// The slow pass: look up each record's entries instead of fingerprinting them.
    name_index_damage: bool,
}

impl Run<'_> {
    fn problem(&mut self, p: String) {
        self.report.problems.push(p);
    }

    fn segment(
        &mut self,
        file: &File,
        path: &Path,
        ordinal: u32,
        len: u64,
        cp_size: Option<u64>,
    ) -> Result<(), StoreError> {
        match segment::read_header(file, path, ordinal) {
            Ok(first) if first != self.frontier.size() => self.problem(format!(
                "{}: starts at seq {first}, expected {}",
                path.display(),
                self.frontier.size()
            )),
            Ok(_) => {}
            Err(e) => {
                self.problem(e.to_string());
                return Ok(());
            }
        }
        // One sequential read of the whole segment, then the records are cut from memory.
        let io = || StoreError::io(format!("reading {}", path.display()));
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(len).read_to_end(&mut bytes).map_err(io())?;
        let mut records = Vec::new();
        let mut offset = HEADER_LEN;
        let damage = loop {
            match segment::read_record(bytes.as_slice(), offset, len).map_err(io())? {
                ReadOutcome::End => break None,
                ReadOutcome::Record(raw, end) => {
                    let seq = self.frontier.size() + records.len() as u64;
                    records.push(Scanned::new(raw, seq, Pos { ordinal, offset }, false));
                    offset = end;
                }
                ReadOutcome::BadChecksum(raw, end) => {
                    let seq = self.frontier.size() + records.len() as u64;
                    records.push(Scanned::new(raw, seq, Pos { ordinal, offset }, true));
                    offset = end;
                }
                ReadOutcome::Damaged(d) => break Some((offset, d)),
            }
        };
        drop(bytes);
        // The per-record work that needs no order (hashing, reading the indexed fields) is
        // spread over the cores; the tree and the findings then follow log order.
        let fast = !self.name_index_damage;
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk = records.len().div_ceil(workers).max(1);
        std::thread::scope(|s| {
            for part in records.chunks_mut(chunk) {
                s.spawn(move || part.iter_mut().for_each(|r| r.prepare(fast)));
            }
        });
        let first = self.frontier.size();
        let stored = self.reader.leaves(first, first + records.len() as u64)?;
        for (r, (pos, leaf)) in records.iter().zip(stored) {
            if cp_size == Some(self.frontier.size()) && self.cp_root.is_none() {
                self.cp_root = Some(self.frontier.root());
            }
            self.record(r, pos, leaf)?;
        }
        if cp_size == Some(self.frontier.size()) && self.cp_root.is_none() {
            self.cp_root = Some(self.frontier.root());
        }
        if let Some((offset, d)) = damage {
            self.problem(format!(
                "{} offset {offset} (after seq {}): {}; the rest of this segment cannot be read",
                path.display(),
                self.frontier.size().wrapping_sub(1),
                describe(&d)
            ));
        }
        Ok(())
    }

    /// Checks one record against the index's position `stored_pos` and leaf hash `tree_leaf`.
    fn record(
        &mut self,
        r: &Scanned,
        stored_pos: Option<Pos>,
        tree_leaf: Option<Hash>,
    ) -> Result<(), StoreError> {
        let seq = r.seq;
        let full = match r.summary {
            Some(_) => None,
            None => Some(Record::from_bytes(&r.raw.payload)),
        };
        let id = match (&r.summary, &full) {
            (Some(Ok((id, _))), _) => Some(*id),
            (_, Some(Ok(rec))) => Some(rec.event.event_id),
            _ => None,
        };
        let name = match id {
            Some(id) => format!("seq {seq} (event {id})"),
            None => format!("seq {seq}"),
        };
        if r.raw.seq != seq {
            self.problem(format!("{name}: the record says seq {}", r.raw.seq));
        }
        if r.bad_checksum {
            self.problem(format!(
                "{name}: its checksum fails: the stored event was altered or damaged"
            ));
        } else if tree_leaf.is_some_and(|t| t != r.leaf) {
            self.problem(format!(
                "{name}: the stored bytes do not match the leaf hash in the index: the event was altered \
                 (if the checkpoint check below passes, the index is what is damaged: run `veritrail reindex`)"
            ));
        }
        // The log is the source of truth: continue the tree with the record's own hash, unless its
        // bytes are known bad, so that the checkpoint comparison judges the log itself. A record
        // whose checksum fails continues with the index's leaf, so that one damaged event does
        // not hide the state of every later one.
        let continue_with = if r.bad_checksum {
            tree_leaf.unwrap_or(r.leaf)
        } else {
            r.leaf
        };
        self.frontier.append(continue_with, |_, _, _| {});
        if stored_pos != Some(r.pos) {
            self.problem(format!("{name}: the position index is wrong"));
        }
        let decode_error = match (&r.summary, &full) {
            (Some(Err(e)), _) => Some(e.clone()),
            (_, Some(Err(e))) => Some(e.to_string()),
            _ => None,
        };
        match decode_error {
            Some(e) if !r.bad_checksum => self.problem(format!("{name}: does not decode: {e}")),
            Some(_) => {}
            None => {
                if let Some(Ok((_, digest))) = &r.summary {
                    self.expected.merge(digest);
                }
                if let Some(Ok(rec)) = &full {
                    self.check_index(&name, rec, seq)?;
                }
            }
        }
        self.report.events += 1;
        Ok(())
    }

    /// The slow pass, run only when the fingerprints disagree: look every entry up, to name it.
    fn check_index(&mut self, name: &str, r: &Record, seq: u64) -> Result<(), StoreError> {
        let e = &r.event;
        if self.reader.seq_of(&e.event_id)? != Some(seq) {
            self.problem(format!("{name}: the id index does not point at it"));
        }
        if !self.reader.has_entries_for(e, seq)? {
            self.problem(format!("{name}: secondary index entries are missing"));
        }
        Ok(())
    }

    /// The checks of the whole: sizes, tree, index fingerprint (`found`, in the fast pass) and
    /// the signed checkpoint.
    fn finish(
        &mut self,
        index: &Index,
        found: Option<Digest>,
        note: Option<String>,
        vkey: &NoteVerifier,
    ) -> Result<(), StoreError> {
        let size = self.frontier.size();
        if self.report.checkpoint_size == Some(size) && self.cp_root.is_none() {
            self.cp_root = Some(self.frontier.root());
        }
        let indexed = index.indexed_size()?;
        if indexed != size {
            self.problem(format!(
                "the index covers {indexed} events, the log holds {size}; run `veritrail reindex`"
            ));
        } else if size > 0 {
            let mut nodes = self.reader.nodes()?;
            let stored = merkle::root(size, &mut nodes);
            if stored.ok() != Some(self.frontier.root()) {
                self.problem(
                    "the tree nodes in the index do not match the log; run `veritrail reindex`"
                        .into(),
                );
            }
        }
        if let Some(found) = found {
            if found != self.expected {
                self.report.index_differs = true;
                self.problem(format!(
                    "the index's entries differ from what the log calls for ({} expected, {} found); run `veritrail reindex`",
                    self.expected.entries, found.entries
                ));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogConfig, TenantLog};
    use serde_json::json;
    use veritrail_core::event::Event;
    use veritrail_core::note::NoteSigner;

    #[test]
    fn a_lost_index_entry_is_found_by_the_fingerprint_and_named_by_the_second_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events: Vec<Event> = (0..20)
            .map(|i| {
                let v = json!({"event_type": "t.x.y", "event_timestamp": format!("2025-01-01T00:00:{i:02}Z"),
                    "event_category": "t", "event_action": "y", "event_outcome": "success"});
                Event::from_json(&v, uuid::Uuid::now_v7).expect("valid")
            })
            .collect();
        let victim = events[7].event_id;
        {
            let log = TenantLog::open(dir.path(), "t", LogConfig::default()).expect("open");
            log.append(events)
                .expect("queued")
                .blocking_recv()
                .expect("answered")
                .expect("durable");
        }
        let vkey = NoteSigner::new("test", &[7; 32])
            .expect("signer")
            .verifier();
        let clean = check(dir.path(), &vkey, |_, _| {}).expect("fsck runs");
        assert!(clean.ok(), "{:?}", clean.problems);
        {
            let kv = fjall::Config::new(dir.path().join(crate::index::INDEX_DIR).join("kv"))
                .open()
                .expect("kv");
            let ids = kv
                .open_partition("ids", fjall::PartitionCreateOptions::default())
                .expect("ids");
            ids.remove(victim.as_bytes().to_vec()).expect("remove");
            kv.persist(fjall::PersistMode::SyncAll).expect("persist");
        }
        let report = check(dir.path(), &vkey, |_, _| {}).expect("fsck runs");
        assert!(report.index_differs);
        let named = format!("seq 7 (event {victim}): the id index does not point at it");
        assert!(report.problems.contains(&named), "{:?}", report.problems);
    }
}

//! The index of one segment in memory: the segment being appended to, and a full one until its
//! sealed index file is written ([`crate::embedded::seg_index`] is the same index on disk).
//!
//! Per event it keeps the record's offset, the event id, and one posting per indexed field
//! value; postings list `(event time, local)` pairs in that order, where `local` is the seq minus
//! the segment's first seq, so that a posting is already in result order. A reader bounds what it
//! sees by its snapshot's tree size: entries are only ever added past the end.

use std::collections::HashMap;

use uuid::Uuid;
use veritrail_core::hash::Hash;

use crate::embedded::index::{Indexed, Selector, SortKey, INDEXED_FIELDS};

/// Field code of the posting that lists every event of the segment.
pub const ALL: u8 = 0xff;

/// A map keyed by text a producer chose: foldhash's per-process random seed keeps crafted values
/// from colliding on purpose, at a fraction of SipHash's cost on the ingest path.
type TextMap<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// One segment's entries.
#[derive(Debug, Clone)]
pub struct Entries {
    pub ordinal: u32,
    pub first_seq: u64,
    /// Record offsets in the segment as appended, by local.
    pub(crate) offsets: Vec<u64>,
    /// Leaf hashes by local, as this process computed them from the records (at append, or at
    /// startup as part of the tree checked against the signed checkpoint): reads of the open
    /// segments are checked against these.
    leaves: Vec<Hash>,
    pub(crate) ids: HashMap<Uuid, u32>,
    /// Every event's `(time, local)`: the posting of the term [`ALL`].
    all: Posting,
    /// Per indexed field, by code, each value's events.
    fields: Vec<TextMap<Posting>>,
    /// Events whose record is damaged (see [`Entries::add_damaged`]).
    damaged: Vec<u32>,
    /// The largest tree size a checkpoint recorded in the segment commits to (0: none).
    pub marked: u64,
    min_time: i64,
    max_time: i64,
}

/// One term's events as `(time, local)`: a sorted run, and a short unsorted tail of the newest
/// that is merged into the run once it grows past an eighth of it. Events arrive in seq order but
/// not in time order (a client's clock, a late batch), so keeping one sorted vector would move
/// half of it on every out-of-order event; this costs a few moves per event on average.
#[derive(Debug, Clone, Default)]
pub(crate) struct Posting {
    sorted: Vec<(i64, u32)>,
    tail: Vec<(i64, u32)>,
}

impl Posting {
    fn push(&mut self, key: (i64, u32)) {
        if self.tail.is_empty() && self.sorted.last().is_none_or(|last| *last < key) {
            self.sorted.push(key);
            return;
        }
        self.tail.push(key);
        if self.tail.len() > (self.sorted.len() / 8).max(64) {
            let tail = std::mem::take(&mut self.tail);
            self.sorted = merge(&self.sorted, tail);
        }
    }

    /// Every entry, in order.
    pub(crate) fn entries(&self) -> Vec<(i64, u32)> {
        merge(&self.sorted, self.tail.clone())
    }

    fn is_empty(&self) -> bool {
        self.sorted.is_empty() && self.tail.is_empty()
    }
}

/// The sorted run `a` merged with the entries of `b` (any order).
fn merge(a: &[(i64, u32)], mut b: Vec<(i64, u32)>) -> Vec<(i64, u32)> {
    b.sort_unstable();
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl Entries {
    /// No entries yet, for the segment `ordinal` that starts at `first_seq`.
    pub fn new(ordinal: u32, first_seq: u64) -> Entries {
        Entries {
            ordinal,
            first_seq,
            offsets: Vec::new(),
            leaves: Vec::new(),
            ids: HashMap::new(),
            all: Posting::default(),
            fields: (0..INDEXED_FIELDS.len())
                .map(|_| TextMap::default())
                .collect(),
            damaged: Vec::new(),
            marked: 0,
            min_time: i64::MAX,
            max_time: i64::MIN,
        }
    }

    /// Earliest and latest event time; `min > max` when empty. A damaged event's time is
    /// unknown, so it widens the range to every time.
    pub fn time_range(&self) -> (i64, i64) {
        if self.damaged.is_empty() {
            (self.min_time, self.max_time)
        } else {
            (i64::MIN, i64::MAX)
        }
    }

    /// Events held.
    pub fn len(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// True when no event is held.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The seq just past the last event.
    pub fn end(&self) -> u64 {
        self.first_seq + self.len()
    }

    /// Adds the next event, recorded at `offset` of the segment, with its leaf hash.
    pub fn add(&mut self, event: &impl Indexed, offset: u64, leaf: Hash) {
        let local = self.offsets.len() as u32;
        self.leaves.push(leaf);
        let key = (event.time_us(), local);
        self.min_time = self.min_time.min(key.0);
        self.max_time = self.max_time.max(key.0);
        self.offsets.push(offset);
        self.ids.insert(event.id(), local);
        self.all.push(key);
        for (name, values) in INDEXED_FIELDS.iter().zip(&mut self.fields) {
            if let Some(v) = event.field(name) {
                // A value seen before costs a lookup by `&str`, not an allocation.
                match values.get_mut(v) {
                    Some(p) => p.push(key),
                    None => values.entry(v.into()).or_default().push(key),
                }
            }
        }
    }

    /// Adds the next event, whose record at `offset` is damaged (its checksum fails), with the
    /// id its bytes still show, if any. Its fields are unknown, so every query over the segment
    /// takes it as a candidate: reading it fails, and the query fails with it, rather than leave
    /// out an event it might have matched.
    pub fn add_damaged(&mut self, offset: u64, id: Option<Uuid>, leaf: Hash) {
        let local = self.offsets.len() as u32;
        self.offsets.push(offset);
        self.leaves.push(leaf);
        if let Some(id) = id {
            self.ids.insert(id, local);
        }
        self.damaged.push(local);
    }

    /// The offset of `seq`'s record, if this segment holds it below `size`.
    pub fn offset(&self, seq: u64, size: u64) -> Option<u64> {
        let local = seq.checked_sub(self.first_seq).filter(|_| seq < size)?;
        self.offsets.get(usize::try_from(local).ok()?).copied()
    }

    /// The leaf hash of `seq`, if held below `size`.
    pub fn leaf(&self, seq: u64, size: u64) -> Option<Hash> {
        let local = seq.checked_sub(self.first_seq).filter(|_| seq < size)?;
        self.leaves.get(usize::try_from(local).ok()?).copied()
    }

    /// The seq of event `id`, if held below `size`.
    pub fn seq_of(&self, id: &Uuid, size: u64) -> Option<u64> {
        let seq = self.first_seq + u64::from(*self.ids.get(id)?);
        (seq < size).then_some(seq)
    }

    /// The sort keys in `[lo, hi)` of the terms `selector` picks, below `size`, in order.
    pub fn candidates(
        &self,
        selector: &Selector,
        lo: SortKey,
        hi: SortKey,
        size: u64,
    ) -> Vec<SortKey> {
        let mut out = Vec::new();
        // Keys come in order from one sorted run; anything more (the tail, several terms, a
        // damaged event) needs a sort at the end.
        let mut runs = 0;
        let mut in_order = true;
        let first = self.first_seq;
        let key = |&(t, local): &(i64, u32)| (t, first + u64::from(local));
        let mut visit = |posting: &Posting| {
            // The sorted run by binary search; the short tail by a scan.
            let run = &posting.sorted;
            let from = run.partition_point(|e| key(e) < lo);
            let to = run.partition_point(|e| key(e) < hi);
            out.extend(run[from..to].iter().map(key).filter(|k| k.1 < size));
            let before = out.len();
            out.extend(
                posting
                    .tail
                    .iter()
                    .map(key)
                    .filter(|k| k.1 < size && *k >= lo && *k < hi),
            );
            in_order &= out.len() == before;
            runs += 1;
        };
        match selector {
            Selector::All => visit(&self.all),
            Selector::Exact(code, v) => {
                if let Some(p) = self
                    .fields
                    .get(usize::from(*code))
                    .and_then(|m| m.get(v.as_str()))
                {
                    visit(p)
                }
            }
            Selector::Prefix(..) => self
                .postings()
                .filter(|(code, v, _)| selector.matches(*code, v))
                .for_each(|(_, _, p)| visit(p)),
        }
        for &local in &self.damaged {
            // Placed at the earliest time the query and the segment allow.
            let time = self.min_time.min(self.max_time).clamp(lo.0, hi.0.max(lo.0));
            let key = (time, self.first_seq + u64::from(local));
            if key.1 < size && key >= lo && key < hi {
                out.push(key);
                in_order = false;
            }
        }
        if !in_order || runs > 1 {
            out.sort_unstable();
        }
        out
    }

    /// Every term that has events, with its posting: `(field code, value, posting)`.
    pub(crate) fn postings(&self) -> impl Iterator<Item = (u8, &str, &Posting)> {
        let all = (!self.all.is_empty()).then_some((ALL, "", &self.all));
        all.into_iter().chain(
            self.fields
                .iter()
                .enumerate()
                .flat_map(|(code, values)| values.iter().map(move |(v, p)| (code as u8, &**v, p))),
        )
    }

    /// Events per value of field `code`.
    pub fn counts(&self, code: u8, size: u64) -> Vec<(String, u64)> {
        self.fields
            .get(usize::from(code))
            .into_iter()
            .flatten()
            .map(|(v, p)| {
                let n = p
                    .sorted
                    .iter()
                    .chain(&p.tail)
                    .filter(|(_, l)| self.first_seq + u64::from(*l) < size)
                    .count();
                (v.to_string(), n as u64)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

//! The embedded engine's read view: the derived state of one moment ([`IndexReader`]) and the
//! segment files the records are read from.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use veritrail_core::hash::Hash;
use veritrail_core::query::Filter;

use super::index::IndexReader;
use super::segments::Segments;
use crate::engine::{Head, NodeError, SegmentSpan, Snapshot, SortKey};
use crate::error::StoreError;
use crate::producers::ProducerStatus;

/// One tenant's log as of one moment.
pub struct EmbeddedSnapshot {
    pub(crate) reader: IndexReader,
    pub(crate) segments: Arc<Segments>,
}

impl Snapshot for EmbeddedSnapshot {
    fn head(&self) -> Head {
        self.reader.head()
    }

    fn record(&self, seq: u64) -> Result<Vec<u8>, StoreError> {
        let place = self.reader.place(seq).ok_or_else(|| {
            StoreError::Damaged(format!("seq {seq}: no position in the derived state"))
        })?;
        let raw = self.segments.read_place(place, seq)?;
        if raw.seq != seq {
            return Err(StoreError::Damaged(format!(
                "seq {seq}: the record at its position holds seq {}",
                raw.seq
            )));
        }
        Ok(raw.payload)
    }

    fn id_candidates(&self, id: &Uuid) -> Result<Vec<u64>, StoreError> {
        self.reader.id_candidates(id)
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, NodeError> {
        (self.reader.nodes())(level, index)
    }

    /// Open segments keep the leaf hashes the writer computed (from the request at ingest, from
    /// the record at recovery); sealed ones do not, and their records are proven.
    fn computed_leaf(&self, seq: u64) -> Option<Hash> {
        self.reader.trusted_leaf(seq)
    }

    fn scan(
        &self,
        filter: &Filter,
        lo: SortKey,
        hi: SortKey,
        descending: bool,
        visit: &mut dyn FnMut(SortKey) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.reader.scan(filter, lo, hi, descending, visit)
    }

    fn covers(&self, filter: &Filter) -> bool {
        super::index::covers(filter)
    }

    fn counts(&self, field: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        self.reader.counts(field)
    }

    fn producers(&self) -> Vec<ProducerStatus> {
        self.reader.producers()
    }

    fn segments(&self) -> Vec<SegmentSpan> {
        let size = |path: std::path::PathBuf| std::fs::metadata(path).map_or(0, |m| m.len());
        self.reader
            .spans()
            .into_iter()
            .map(|(ordinal, first_seq, events, sealed)| {
                let bytes = if sealed {
                    size(self.segments.dir().join(super::sealed::file_name(ordinal)))
                        + size(self.reader.dir().join(super::seg_index::file_name(ordinal)))
                } else {
                    size(self.segments.dir().join(super::segment::file_name(ordinal)))
                };
                SegmentSpan {
                    first_seq,
                    events,
                    sealed,
                    bytes,
                }
            })
            .collect()
    }
}

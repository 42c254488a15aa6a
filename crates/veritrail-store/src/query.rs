//! Query execution over any engine: drive the engine's postings, check the rest of the filter
//! on proven records, page the results.

use veritrail_core::query::Filter;

use crate::engine::{Snapshot, SortKey, StoredEvent};
use crate::error::StoreError;
use crate::verify::{read_verified, RootVerifier};

/// Result order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest event time first (the default).
    #[default]
    Desc,
    /// Oldest first (timelines).
    Asc,
}

/// One result: its position in result order (event time, seq) and the verified event.
#[derive(Debug, Clone)]
pub struct Hit {
    pub key: SortKey,
    pub event: StoredEvent,
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Page {
    pub events: Vec<Hit>,
    /// Where the next page starts; `None` when there are no more results.
    pub next_cursor: Option<SortKey>,
}

/// Most candidates one page may examine before it returns what it has (with a cursor), so a
/// poorly selective filter costs bounded work per request.
pub const SCAN_BUDGET: usize = 100_000;

/// Runs one page of a query against a snapshot.
pub fn run(
    view: &dyn Snapshot,
    verifier: &RootVerifier,
    filter: &Filter,
    order: Order,
    cursor: Option<SortKey>,
    limit: usize,
) -> Result<Page, StoreError> {
    let (mut lo, mut hi) = bounds(filter);
    match (order, cursor) {
        (Order::Desc, Some(c)) => hi = hi.min(c),
        (Order::Asc, Some((ts, seq))) => lo = lo.max((ts, seq.saturating_add(1))),
        (_, None) => {}
    }
    let mut events: Vec<Hit> = Vec::new();
    // When the driving index already implies every condition, records need no decoding.
    let covered = view.covers(filter);
    let mut next_cursor = None;
    let mut scanned = 0usize;
    let mut failure: Option<StoreError> = None;
    view.scan(filter, lo, hi, order == Order::Desc, &mut |key| {
        scanned += 1;
        let event = match read_verified(view, verifier, key.1) {
            Ok(e) => e,
            Err(e) => {
                failure = Some(e);
                return Ok(false);
            }
        };
        let matches = covered
            || match event.leaf() {
                Ok(leaf) => filter.matches_leaf(leaf.event()),
                Err(e) => {
                    failure = Some(e);
                    return Ok(false);
                }
            };
        if matches {
            if events.len() == limit {
                next_cursor = events.last().map(|h| h.key);
                return Ok(false);
            }
            events.push(Hit { key, event });
        }
        if scanned >= SCAN_BUDGET {
            next_cursor = Some(key);
            return Ok(false);
        }
        Ok(true)
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Page {
        events,
        next_cursor,
    })
}

/// The positions of one page of results, found in the index alone.
#[derive(Debug, Clone)]
pub struct KeyPage {
    pub keys: Vec<SortKey>,
    pub next_cursor: Option<SortKey>,
}

/// One page of a query whose driving index implies the whole filter ([`Snapshot::covers`]): its
/// positions only, no record read. `None` when the filter needs records to be checked.
pub fn run_keys(
    view: &dyn Snapshot,
    filter: &Filter,
    order: Order,
    cursor: Option<SortKey>,
    limit: usize,
) -> Result<Option<KeyPage>, StoreError> {
    if !view.covers(filter) {
        return Ok(None);
    }
    let (mut lo, mut hi) = bounds(filter);
    match (order, cursor) {
        (Order::Desc, Some(c)) => hi = hi.min(c),
        (Order::Asc, Some((ts, seq))) => lo = lo.max((ts, seq.saturating_add(1))),
        (_, None) => {}
    }
    let mut keys = Vec::new();
    let mut next_cursor = None;
    view.scan(filter, lo, hi, order == Order::Desc, &mut |key| {
        if keys.len() == limit {
            next_cursor = keys.last().copied();
            return Ok(false);
        }
        keys.push(key);
        Ok(true)
    })?;
    Ok(Some(KeyPage { keys, next_cursor }))
}

/// Reads and verifies the records at `keys`, in that order.
pub fn read_keys(
    view: &dyn Snapshot,
    verifier: &RootVerifier,
    keys: &[SortKey],
) -> Result<Vec<Hit>, StoreError> {
    keys.iter()
        .map(|&key| {
            Ok(Hit {
                key,
                event: read_verified(view, verifier, key.1)?,
            })
        })
        .collect()
}

/// One window of results by position, with the number of all results (offset pagination, for
/// APIs that need a total).
#[derive(Debug, Clone)]
pub struct Window {
    pub events: Vec<Hit>,
    /// Every result of the filter, not just this window's.
    pub total: u64,
}

/// Runs a query for the results `[offset, offset + limit)` in `order` and counts them all. When
/// the driving index implies the whole filter only the window's records are read; otherwise
/// every candidate is read to be checked.
pub fn run_window(
    view: &dyn Snapshot,
    verifier: &RootVerifier,
    filter: &Filter,
    order: Order,
    offset: u64,
    limit: usize,
) -> Result<Window, StoreError> {
    let (lo, hi) = bounds(filter);
    let covered = view.covers(filter);
    let mut events = Vec::new();
    let mut total = 0u64;
    let mut failure: Option<StoreError> = None;
    let end = offset.saturating_add(limit as u64);
    view.scan(filter, lo, hi, order == Order::Desc, &mut |key| {
        let in_window = (offset..end).contains(&total);
        let read = if covered && !in_window {
            None
        } else {
            match read_verified(view, verifier, key.1) {
                Ok(e) => Some(e),
                Err(e) => {
                    failure = Some(e);
                    return Ok(false);
                }
            }
        };
        let matches = covered
            || match read.as_ref().map(StoredEvent::leaf) {
                Some(Ok(leaf)) => filter.matches_leaf(leaf.event()),
                Some(Err(e)) => {
                    failure = Some(e);
                    return Ok(false);
                }
                None => false,
            };
        if matches {
            if in_window {
                if let Some(event) = read {
                    events.push(Hit { key, event });
                }
            }
            total += 1;
        }
        Ok(true)
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Window { events, total })
}

/// The `[lo, hi)` range of sort keys the filter's time bounds allow.
fn bounds(filter: &Filter) -> (SortKey, SortKey) {
    let lo = filter
        .since
        .map_or((i64::MIN, 0), |t| (t.timestamp_micros(), 0));
    let hi = filter
        .until
        .map_or((i64::MAX, u64::MAX), |t| (t.timestamp_micros(), 0));
    (lo, hi)
}

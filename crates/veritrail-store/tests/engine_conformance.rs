//! The conformance suite ([`conformance`]) run against the embedded engine, with segments small
//! enough that every run seals several of them.

mod conformance;
mod support;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use tempfile::TempDir;
use veritrail_store::embedded::{EmbeddedEngine, LogConfig};
use veritrail_store::Ledger;

use conformance::Harness;

struct Embedded {
    dir: TempDir,
    log: LogConfig,
}

impl Embedded {
    fn new(segment_bytes: u64) -> Embedded {
        Embedded {
            dir: tempfile::tempdir().expect("tempdir"),
            log: LogConfig {
                segment_bytes,
                ..LogConfig::default()
            },
        }
    }
}

impl Harness for Embedded {
    type Engine = EmbeddedEngine;

    fn open(&self) -> Ledger<EmbeddedEngine> {
        support::open(self.dir.path(), self.log.clone()).expect("open")
    }

    /// Waits until the sealer has sealed every full segment.
    fn settle(&self, store: &Ledger<EmbeddedEngine>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.engine().unsealed(support::TENANT).expect("unsealed") > 0 {
            assert!(Instant::now() < deadline, "segments were not sealed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn the_log_matches_the_model_across_restarts(batches in prop::collection::vec(1usize..25, 1..12)) {
        conformance::model_across_restarts(&Embedded::new(4096), &batches)?;
    }

    #[test]
    fn queries_match_the_model(
        batches in prop::collection::vec(
            prop::collection::vec((0u32..60, 0u8..3, 0u8..3, 0u8..4, any::<bool>()), 1..30),
            1..8,
        ),
        settle_before_check in any::<bool>(),
    ) {
        conformance::queries_match_the_model(&Embedded::new(8 << 10), &batches, settle_before_check)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

    /// Segments of thousands of events: a term's posting in an index file spans many chunks, and
    /// the longest are read a chunk at a time.
    #[test]
    fn queries_match_the_model_over_long_postings(
        batches in prop::collection::vec(
            prop::collection::vec((0u32..60, 0u8..3, 0u8..3, 0u8..4, any::<bool>()), 300..500),
            6..9,
        ),
    ) {
        conformance::queries_match_the_model(&Embedded::new(1 << 20), &batches, true)?;
    }
}

#[test]
fn ids_are_idempotent_and_conflicts_fail_whole_requests() {
    conformance::idempotency_and_conflicts(&Embedded::new(4096));
}

#[test]
fn retries_racing_background_work_are_recognised() {
    conformance::retries_racing_background_work(&Embedded::new(64 << 20));
}

#[test]
fn checkpoints_are_kept_and_consistent() {
    conformance::checkpoints_are_kept_and_consistent(&Embedded::new(4096));
}

#[test]
fn an_unknown_tenant_is_empty() {
    conformance::an_unknown_tenant_is_empty(&Embedded::new(4096));
}

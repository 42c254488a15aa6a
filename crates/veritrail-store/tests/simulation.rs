//! Deterministic simulation of the embedded engine on a fault-injecting medium
//! ([`SimMedium`]): per seed, a few hundred steps of appends, reads, checkpoints, a disk that
//! fills and frees, and power cuts that lose (or half keep, or zero) whatever was not synced.
//! Against a model of what was acknowledged, after every restart:
//!
//! - no acknowledged event is lost: each reads back by id, proven, at its receipt's seq and
//!   leaf hash, and the log still opens;
//! - damage is detected and never served: every seq of the log reads back proven, and the log
//!   holds nothing but acknowledged events and events of requests that failed (a failed
//!   request may or may not have reached the log, as its error says).
//!
//! CI runs [`SEEDS`] seeds; a longer run is
//! `VERITRAIL_SIM_SEEDS=5000 cargo test --release -p veritrail-store --test simulation`.
//! A medium whose fsync lies must make the simulation fail: that is tested too.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;
use veritrail_core::hash::Hash;
use veritrail_store::embedded::medium::sim::{Faults, SimMedium};
use veritrail_store::embedded::{EmbeddedEngine, LogConfig};
use veritrail_store::{Ledger, Store, StoreError};

use support::{append, event, open, TENANT};

/// Seeds a CI run covers.
const SEEDS: u64 = 24;
/// Steps per seed.
const STEPS: usize = 250;

/// The faults of an ordinary run: every kind, often enough that each seed meets several.
fn faults() -> Faults {
    Faults {
        append_eio: 20,
        torn_append: 20,
        sync_eio: 20,
        truncate_eio: 3,
        broken_fsync: false,
    }
}

/// What one seed did.
#[derive(Debug, Default)]
struct Stats {
    acknowledged: usize,
    failed_requests: usize,
    restarts: usize,
    injected: u64,
}

/// The model: what the log must hold, what it may, and what it must not.
#[derive(Default)]
struct Model {
    /// Acknowledged events, by id: receipt seq and leaf hash.
    acked: HashMap<Uuid, (u64, Hash)>,
    /// Events of requests answered "nothing was stored" ([`StoreError::Unwritable`]).
    refused: HashSet<Uuid>,
    /// Events of requests the log failed in the middle of ([`StoreError::Failed`]): each may
    /// or may not be in the log.
    maybe: HashSet<Uuid>,
}

/// The simulation's own choices, apart from the medium's faults so that neither shifts the
/// other (splitmix64).
struct Choices(u64);

impl Choices {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

struct Sim {
    dir: tempfile::TempDir,
    medium: SimMedium,
    choices: Choices,
    model: Model,
    stats: Stats,
    next_event: usize,
}

impl Sim {
    fn config(&self) -> LogConfig {
        LogConfig {
            // Small segments: runs rotate, seal and recover across segment boundaries.
            segment_bytes: 16 << 10,
            // The sealer keeps up with segments this small; should it not, appends are refused
            // as overload, which would change the run with the machine's speed.
            max_unsealed_segments: 256,
            medium: Arc::new(self.medium.clone()),
            ..LogConfig::default()
        }
    }

    fn open(&self) -> Result<Ledger<EmbeddedEngine>, String> {
        open(self.dir.path(), self.config())
            .map_err(|e| format!("the store does not open after a crash: {e}"))
    }

    fn append(&mut self, store: &Ledger<EmbeddedEngine>) -> Result<(), String> {
        let n = 1 + self.choices.below(20) as usize;
        let events: Vec<_> = (0..n)
            .map(|i| event(self.next_event + i, self.next_event % 7))
            .collect();
        self.next_event += n;
        match append(store, events.clone()) {
            Ok(appended) => {
                for (r, e) in appended.receipts.iter().zip(&events) {
                    if r.duplicate {
                        return Err(format!(
                            "a new event id came back as a duplicate: {}",
                            e.event_id
                        ));
                    }
                    self.model.acked.insert(e.event_id, (r.seq, r.leaf_hash));
                }
                if appended.tree_size < self.model.acked.len() as u64 {
                    return Err(format!(
                        "tree size {} after {} acknowledged events",
                        appended.tree_size,
                        self.model.acked.len()
                    ));
                }
                self.stats.acknowledged += n;
            }
            Err(StoreError::Unwritable(_) | StoreError::Overloaded { .. }) => {
                self.model.refused.extend(events.iter().map(|e| e.event_id));
                self.stats.failed_requests += 1;
            }
            Err(StoreError::Failed(_)) => {
                self.model.maybe.extend(events.iter().map(|e| e.event_id));
                self.stats.failed_requests += 1;
            }
            Err(e) => return Err(format!("an append failed unexpectedly: {e}")),
        }
        Ok(())
    }

    /// One acknowledged event, read back.
    fn read_one(&mut self, store: &Ledger<EmbeddedEngine>) -> Result<(), String> {
        let k = self.choices.below(self.model.acked.len() as u64) as usize;
        let Some((&id, &(seq, leaf))) = self.model.acked.iter().nth(k) else {
            return Ok(());
        };
        check_event(store, id, seq, leaf)
    }

    /// Everything the model says, checked against the whole log.
    fn check_all(&self, store: &Ledger<EmbeddedEngine>) -> Result<(), String> {
        let head = store.head(TENANT).map_err(|e| format!("head: {e}"))?;
        let (acked, maybe) = (self.model.acked.len() as u64, self.model.maybe.len() as u64);
        if head.size < acked || head.size > acked + maybe {
            return Err(format!(
                "the log holds {} events; {acked} were acknowledged and {maybe} failed",
                head.size
            ));
        }
        for (&id, &(seq, leaf)) in &self.model.acked {
            check_event(store, id, seq, leaf)?;
        }
        for seq in 0..head.size {
            let hit = store
                .read_keys(TENANT, &[(0, seq)])
                .map_err(|e| format!("seq {seq} of the log is not served: {e}"))?;
            let id = hit[0]
                .event
                .leaf()
                .map_err(|e| format!("seq {seq}: {e}"))?
                .event_id()
                .ok_or_else(|| format!("seq {seq} has no event id"))?;
            if self.model.refused.contains(&id) {
                return Err(format!(
                    "seq {seq} holds event {id}, whose request was answered that nothing was stored"
                ));
            }
            let known = self.model.acked.get(&id).is_some_and(|a| a.0 == seq)
                || self.model.maybe.contains(&id);
            if !known {
                return Err(format!("seq {seq} holds an event no request sent: {id}"));
            }
        }
        Ok(())
    }
}

fn check_event(
    store: &Ledger<EmbeddedEngine>,
    id: Uuid,
    seq: u64,
    leaf: Hash,
) -> Result<(), String> {
    match store.get(TENANT, &id) {
        Ok(Some(e)) if e.seq == seq && e.leaf_hash == leaf => Ok(()),
        Ok(Some(e)) => Err(format!(
            "acknowledged event {id} (seq {seq}) came back as seq {} with another leaf hash",
            e.seq
        )),
        Ok(None) => Err(format!("acknowledged event {id} (seq {seq}) is lost")),
        Err(e) => Err(format!(
            "acknowledged event {id} (seq {seq}) does not read: {e}"
        )),
    }
}

/// Runs one seed; `Err` names the first violation.
fn simulate(seed: u64, faults: Faults, steps: usize) -> Result<Stats, String> {
    let mut sim = Sim {
        dir: tempfile::tempdir().expect("tempdir"),
        medium: SimMedium::new(seed, faults),
        choices: Choices(seed ^ 0x5eed),
        model: Model::default(),
        stats: Stats::default(),
        next_event: 0,
    };
    let mut store = sim.open()?;
    let mut full = false;
    for step in 0..steps {
        let context = |e: String| format!("seed {seed}, step {step}: {e}");
        match sim.choices.below(100) {
            0..60 => sim.append(&store).map_err(context)?,
            60..75 => sim.read_one(&store).map_err(context)?,
            75..80 => {
                let cp = store
                    .checkpoint(TENANT)
                    .map_err(|e| context(format!("checkpoint: {e}")))?;
                if cp.checkpoint.size < sim.model.acked.len() as u64 {
                    return Err(context(format!(
                        "a checkpoint of {} events after {} acknowledged",
                        cp.checkpoint.size,
                        sim.model.acked.len()
                    )));
                }
                // The checkpoint's marker is written in the writer's next group; an empty
                // append queued behind it returns once it is written, so that the marker never
                // shares a group with the next step's events (which would shift every later
                // fault by the seed).
                match append(&store, Vec::new()) {
                    // It shares the marker's group, so the marker's write failing fails it too.
                    Ok(_) | Err(StoreError::Failed(_) | StoreError::Unwritable(_)) => {}
                    Err(e) => return Err(context(format!("an empty append: {e}"))),
                }
            }
            80..88 => {
                full = !full;
                sim.medium.set_full(full);
            }
            _ => {
                store.close();
                drop(store);
                sim.medium.crash().expect("crash");
                sim.stats.restarts += 1;
                store = sim.open().map_err(context)?;
                sim.check_all(&store).map_err(context)?;
            }
        }
    }
    store.close();
    drop(store);
    sim.medium.set_full(false);
    sim.medium.crash().expect("crash");
    let store = sim
        .open()
        .map_err(|e| format!("seed {seed}, at the end: {e}"))?;
    sim.check_all(&store)
        .map_err(|e| format!("seed {seed}, at the end: {e}"))?;
    store.close();
    sim.stats.injected = sim.medium.injected();
    Ok(sim.stats)
}

fn seeds() -> u64 {
    std::env::var("VERITRAIL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS)
}

#[test]
fn no_acknowledged_event_is_lost_and_no_damage_is_served() {
    let mut total = Stats::default();
    for seed in 0..seeds() {
        let stats =
            simulate(seed, faults(), STEPS).unwrap_or_else(|violation| panic!("{violation}"));
        total.acknowledged += stats.acknowledged;
        total.failed_requests += stats.failed_requests;
        total.restarts += stats.restarts;
        total.injected += stats.injected;
    }
    eprintln!("simulation: {total:?}");
    // The run must have exercised what it claims to.
    assert!(total.restarts as u64 > seeds(), "{total:?}");
    assert!(total.failed_requests as u64 > seeds(), "{total:?}");
    assert!(total.acknowledged > 1000, "{total:?}");
}

/// The simulation can fail: on a medium whose fsync reports success and makes nothing durable,
/// power cuts lose acknowledged events, and the simulation says so.
#[test]
fn a_lying_fsync_makes_the_simulation_fail() {
    let lying = Faults {
        broken_fsync: true,
        ..Faults::default()
    };
    let violations: Vec<String> = (0..8)
        .filter_map(|seed| simulate(seed, lying, STEPS).err())
        .collect();
    eprintln!("violations: {violations:#?}");
    assert!(
        violations.len() >= 6,
        "only {} of 8 seeds found the lost events: {violations:?}",
        violations.len()
    );
    // Found by the model (an acknowledged event lost) or by the store itself, which refuses to
    // start when its tree's node files hold leaves the log lost: both say events are missing.
    for v in &violations {
        assert!(
            v.contains("is lost") || v.contains("acknowledged events are missing"),
            "{v}"
        );
    }
}

/// A full disk stops appends with a clear error while readiness says why; once space is free,
/// appends resume without a restart.
#[test]
fn a_full_disk_that_frees_up_takes_appends_again_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let medium = SimMedium::new(1, Faults::default());
    let config = LogConfig {
        medium: Arc::new(medium.clone()),
        ..LogConfig::default()
    };
    let store = open(dir.path(), config).expect("open");
    let kept = append(&store, vec![event(0, 0)]).expect("append");
    medium.set_full(true);
    match append(&store, vec![event(1, 0)]) {
        Err(StoreError::Unwritable(why)) => assert!(why.contains("No space left"), "{why}"),
        other => panic!("expected an unwritable log, got {other:?}"),
    }
    let not_ready = store.ready().expect_err("not ready while the disk is full");
    assert!(not_ready.contains("No space left"), "{not_ready}");
    // Reads of what is stored go on.
    let id = kept.receipts[0].event_id;
    assert!(store.get(TENANT, &id).expect("reads").is_some());
    medium.set_full(false);
    store.ready().expect("ready once the disk has space");
    let after = append(&store, vec![event(2, 0)]).expect("appends again, no restart");
    assert_eq!(
        after.receipts[0].seq, 1,
        "the failed request stored nothing"
    );
    store.close();
}

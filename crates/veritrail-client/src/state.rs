//! The producer's identity and numbering, kept in the spool directory across restarts.
//!
//! `producer.json` holds `{"producer_id": "...", "next_producer_seq": N}`: no `producer_seq`
//! below `N` was ever handed to the server or the spool, and none at or above it was. It is
//! replaced atomically (temporary file, `fsync`, rename, directory `fsync`).
//!
//! Writing it for every batch would add an `fsync` to each one, so the background task reserves
//! numbers ahead: before a batch whose highest `producer_seq` is `S` leaves memory, it makes sure
//! the file says at least `S + 1`, writing `S + 1 + RESERVE_AHEAD` when it must write. A clean
//! shutdown writes the exact next number, so numbering continues without a gap; after a crash
//! the next run starts past the reservation, and the gap marks the events lost with the process.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{ClientError, SpoolError};

/// How many numbers a write reserves beyond the batch that needed it.
pub(crate) const RESERVE_AHEAD: u64 = 10_000;
/// The state file's name.
pub(crate) const STATE_FILE: &str = "producer.json";

/// The persisted producer state of one spool directory.
#[derive(Debug)]
pub(crate) struct ProducerState {
    dir: PathBuf,
    producer_id: String,
    /// The number the file holds: every number below it may have been used.
    reserved: u64,
}

impl ProducerState {
    /// Reads the state, or creates it with `configured` (or a new UUIDv7) as the producer id.
    /// Returns the state and the next `producer_seq` to hand out.
    pub(crate) fn load_or_create(
        dir: &Path,
        configured: Option<&str>,
    ) -> Result<(ProducerState, u64), ClientError> {
        let path = dir.join(STATE_FILE);
        let bad = |message: String| SpoolError::State {
            path: path.clone(),
            message,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let v: Value =
                    serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
                let id = v["producer_id"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| bad("`producer_id` is missing".into()))?
                    .to_string();
                let next = v["next_producer_seq"]
                    .as_u64()
                    .filter(|n| *n <= crate::MAX_PRODUCER_SEQ + 1)
                    .ok_or_else(|| bad("`next_producer_seq` is missing or too large".into()))?;
                if let Some(configured) = configured {
                    if configured != id {
                        return Err(ClientError::ProducerIdMismatch {
                            configured: configured.to_string(),
                            stored: id,
                        });
                    }
                }
                let state = ProducerState {
                    dir: dir.to_path_buf(),
                    producer_id: id,
                    reserved: next,
                };
                Ok((state, next))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id =
                    configured.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string);
                let mut state = ProducerState {
                    dir: dir.to_path_buf(),
                    producer_id: id,
                    reserved: 0,
                };
                // Written now so that the generated id is stable from the first event on.
                state.write(0)?;
                Ok((state, 0))
            }
            Err(e) => Err(SpoolError::io(&path, e).into()),
        }
    }

    /// The producer id.
    pub(crate) fn producer_id(&self) -> &str {
        &self.producer_id
    }

    /// True if the file already covers `seq`.
    pub(crate) fn covers(&self, seq: u64) -> bool {
        seq < self.reserved
    }

    /// Makes sure the file covers `max_seq`, reserving ahead when it writes.
    pub(crate) fn cover(&mut self, max_seq: u64) -> Result<(), SpoolError> {
        if self.covers(max_seq) {
            return Ok(());
        }
        let target = (max_seq + 1 + RESERVE_AHEAD).min(crate::MAX_PRODUCER_SEQ + 1);
        self.write(target)
    }

    /// Writes the exact next number (at a clean stop).
    pub(crate) fn save_exact(&mut self, next: u64) -> Result<(), SpoolError> {
        self.write(next)
    }

    fn write(&mut self, next: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let body = json!({"producer_id": self.producer_id, "next_producer_seq": next}).to_string();
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(body.as_bytes())?;
            f.sync_all()
        });
        written.map_err(|e| SpoolError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| SpoolError::io(&path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SpoolError::io(&self.dir, e))?;
        self.reserved = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_survives_reopening_and_a_crash_leaves_a_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, next) = ProducerState::load_or_create(dir.path(), None).expect("create");
        assert_eq!(next, 0);
        let id = s.producer_id().to_string();
        assert!(uuid::Uuid::try_parse(&id).is_ok());
        s.cover(4).expect("cover");
        // A crash now: the next run starts past the reservation.
        let (mut s2, next) = ProducerState::load_or_create(dir.path(), Some(&id)).expect("load");
        assert_eq!(next, 5 + RESERVE_AHEAD);
        s2.save_exact(next + 3).expect("save");
        let (_, next2) = ProducerState::load_or_create(dir.path(), None).expect("load");
        assert_eq!(next2, next + 3);
        assert!(matches!(
            ProducerState::load_or_create(dir.path(), Some("other")),
            Err(ClientError::ProducerIdMismatch { .. })
        ));
    }
}

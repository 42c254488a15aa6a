//! Producer sequence tracking: the capture-rate signal (PRODUCT §11, §14).
//!
//! A producer numbers its events `producer_seq` = 0, 1, 2, … per `producer_id`. Replaying the log
//! in order, a jump forward leaves a *gap* (events the producer sent, or meant to send, that are
//! not in the log); an event below the highest seen fills a gap if it falls inside one, and is
//! *late* otherwise (a replay under a new event id, or a producer restarted without its state).
//! This state is derived from the log like every index, and rebuilt by `reindex`.

use serde_json::{json, Value};

/// Most gap ranges kept per producer; older ones are dropped (and counted in `missing`).
pub const MAX_GAPS: usize = 64;

/// What the log shows of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerStatus {
    pub producer_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// `ingested_at` of the latest event, µs since the epoch.
    pub last_seen_us: i64,
    pub events: u64,
    /// Events inside open gaps.
    pub missing: u64,
    /// Events below `last_seq` that filled no gap.
    pub late: u64,
    /// Open gaps, oldest first, as inclusive `(from, to)` ranges; at most [`MAX_GAPS`].
    pub gaps: Vec<(u64, u64)>,
}

impl ProducerStatus {
    /// The state after the first event of a producer.
    pub fn first(producer_id: &str, seq: u64, at_us: i64) -> ProducerStatus {
        ProducerStatus {
            producer_id: producer_id.to_string(),
            first_seq: seq,
            last_seq: seq,
            last_seen_us: at_us,
            events: 1,
            ..ProducerStatus::default()
        }
    }

    /// Takes one more event in log order; returns how many events newly went missing.
    pub fn observe(&mut self, seq: u64, at_us: i64) -> u64 {
        self.events += 1;
        self.last_seen_us = self.last_seen_us.max(at_us);
        if seq > self.last_seq {
            let missing = seq - self.last_seq - 1;
            if missing > 0 {
                self.gaps.push((self.last_seq + 1, seq - 1));
                self.missing += missing;
                if self.gaps.len() > MAX_GAPS {
                    self.gaps.remove(0);
                }
            }
            self.last_seq = seq;
            return missing;
        }
        match self.gaps.iter().position(|(a, b)| (*a..=*b).contains(&seq)) {
            Some(i) => {
                let (a, b) = self.gaps[i];
                self.missing -= 1;
                let mut parts = Vec::with_capacity(2);
                if a < seq {
                    parts.push((a, seq - 1));
                }
                if seq < b {
                    parts.push((seq + 1, b));
                }
                self.gaps.splice(i..=i, parts);
            }
            None => self.late += 1,
        }
        0
    }

    /// Encodes the state for the index.
    pub fn to_bytes(&self) -> Vec<u8> {
        json!({
            "first_seq": self.first_seq, "last_seq": self.last_seq, "last_seen_us": self.last_seen_us,
            "events": self.events, "missing": self.missing, "late": self.late, "gaps": self.gaps,
        })
        .to_string()
        .into_bytes()
    }

    /// Decodes the state stored for `producer_id`.
    pub fn from_bytes(producer_id: &str, bytes: &[u8]) -> Option<ProducerStatus> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let u = |k: &str| v[k].as_u64();
        Some(ProducerStatus {
            producer_id: producer_id.to_string(),
            first_seq: u("first_seq")?,
            last_seq: u("last_seq")?,
            last_seen_us: v["last_seen_us"].as_i64()?,
            events: u("events")?,
            missing: u("missing")?,
            late: u("late")?,
            gaps: v["gaps"]
                .as_array()?
                .iter()
                .filter_map(|g| Some((g.get(0)?.as_u64()?, g.get(1)?.as_u64()?)))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_open_and_close_as_events_arrive() {
        let mut p = ProducerStatus::first("svc", 0, 1);
        assert_eq!(p.observe(1, 2), 0);
        assert_eq!(p.observe(5, 3), 3, "2, 3 and 4 are missing");
        assert_eq!((p.missing, p.gaps.clone()), (3, vec![(2, 4)]));
        assert_eq!(p.observe(3, 4), 0);
        assert_eq!((p.missing, p.gaps.clone()), (2, vec![(2, 2), (4, 4)]));
        p.observe(2, 5);
        p.observe(4, 6);
        assert_eq!((p.missing, p.gaps.is_empty(), p.late), (0, true, 0));
        p.observe(1, 7);
        assert_eq!(p.late, 1, "a seq seen before fills no gap");
        assert_eq!(ProducerStatus::from_bytes("svc", &p.to_bytes()), Some(p));
    }
}

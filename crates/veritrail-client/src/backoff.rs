//! Exponential backoff with full jitter.
//!
//! The delay before retry `k` (counting from 1) is uniform in `[0, min(max, initial × 2^(k−1))]`.
//! Full jitter spreads the retries of many producers that failed together (a server restart),
//! so they do not return in step. The random numbers need no quality beyond that, so a
//! xorshift generator seeded once from the OS (or the clock, if the OS has no source) is enough.

use std::time::Duration;

use crate::config::RetryPolicy;

/// A xorshift64* generator.
#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    state: u64,
}

impl Jitter {
    /// Seeds from the OS, falling back to the clock.
    pub(crate) fn new() -> Jitter {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        });
        Jitter::seeded(seed)
    }

    /// A generator with a fixed seed (zero is replaced: xorshift stays at zero forever).
    pub(crate) fn seeded(seed: u64) -> Jitter {
        Jitter {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The delay before retry number `failures` (1 after the first failure).
    pub(crate) fn backoff(&mut self, policy: &RetryPolicy, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        let ceiling = policy
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(policy.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next() % (nanos + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_growing_ceiling_and_vary() {
        let p = RetryPolicy::default();
        let mut j = Jitter::seeded(42);
        let mut seen = std::collections::HashSet::new();
        for failures in 1..40 {
            let ceiling = (p.initial_backoff * 2u32.saturating_pow((failures - 1).min(20)))
                .min(p.max_backoff);
            let d = j.backoff(&p, failures);
            assert!(d <= ceiling, "{failures}: {d:?} > {ceiling:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 30, "jitter varies");
    }
}

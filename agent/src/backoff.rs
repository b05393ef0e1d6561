//! Capped exponential backoff with jitter for reconnecting to the coordinator.

use std::time::Duration;

/// Waits that double from `initial` up to `max`, each shortened by up to a quarter at
/// random so that many agents do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`; `seed` drives the jitter.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
            seed: seed | 1,
        }
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // xorshift64: cheap, deterministic per seed, good enough for jitter.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let quarter = base / 4;
        let cut = quarter.mul_f64((self.seed % 1000) as f64 / 1000.0);
        base - cut
    }

    /// Back to the initial wait, after a connection succeeded.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 42);
        let waits: Vec<_> = (0..8).map(|_| b.next_wait()).collect();
        assert!(waits[0] <= Duration::from_millis(100) && waits[0] >= Duration::from_millis(75));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(1)));
        assert!(waits[7] >= Duration::from_millis(750), "{waits:?}");
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}

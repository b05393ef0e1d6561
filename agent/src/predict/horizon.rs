//! How long a running statistic remembers: an average over every sample until it has seen
//! `cap` of them, then an exponential one with that horizon, so a level the host keeps is
//! taken in within about `cap` samples. The baseline ([`Normalizer`](super::detector::Normalizer))
//! and the autoregression's covariances ([`HostStats`](super::hostfit::HostStats)) share it.

/// The count of samples learned, capped, and the weight the next one gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Horizon {
    n: f64,
    cap: f64,
}

impl Horizon {
    /// Nothing learned yet; remembers `cap` samples (at least one).
    pub fn new(cap: f64) -> Self {
        Horizon {
            n: 0.0,
            cap: cap.max(1.0),
        }
    }

    /// Sets how many samples it remembers (at least one); what was learned stays.
    pub fn set_cap(&mut self, cap: f64) {
        self.cap = cap.max(1.0);
    }

    /// Samples learned from, at most the cap.
    pub fn samples(&self) -> f64 {
        self.n
    }

    /// Counts one more sample and returns its weight: `1/n` for the n-th while fewer than the
    /// cap have been seen, `1/cap` afterwards.
    pub fn next_weight(&mut self) -> f64 {
        self.n = (self.n + 1.0).min(self.cap);
        1.0 / self.n
    }
}

#[cfg(test)]
mod tests {
    use super::Horizon;

    #[test]
    fn an_average_of_everything_until_the_cap_then_of_about_the_cap_newest() {
        let mut h = Horizon::new(100.0);
        let mut mean = 0.0;
        for _ in 0..50 {
            mean += (1.0 - mean) * h.next_weight();
        }
        assert_eq!(h.samples(), 50.0);
        assert!(
            (mean - 1.0_f64).abs() < 1e-12,
            "the first 50 all ones: {mean}"
        );
        for _ in 0..1000 {
            mean += (1.0 - mean) * h.next_weight();
        }
        // A new level: after one horizon at it, 1 - 1/e of the way there; after five, there.
        for _ in 0..100 {
            mean += (5.0 - mean) * h.next_weight();
        }
        assert!(
            (mean - (1.0 + 4.0 * (1.0 - (-1.0_f64).exp()))).abs() < 0.05,
            "{mean}"
        );
        for _ in 0..400 {
            mean += (5.0 - mean) * h.next_weight();
        }
        assert!((mean - 5.0).abs() < 0.05, "{mean}");
        assert_eq!(h.samples(), 100.0);
    }

    #[test]
    fn the_cap_is_at_least_one_sample() {
        let mut h = Horizon::new(0.0);
        assert_eq!(h.next_weight(), 1.0);
        h.set_cap(-3.0);
        assert_eq!(h.next_weight(), 1.0);
    }
}

//! The usual value of a series at a time of day, learnt from the series' own last days: the
//! baseline the univariate detector's seasonal scale subtracts, so a value that is ordinary
//! at noon but not at 3 a.m. stands out. Pure state, no I/O.
//!
//! Values are kept as per-slot sums (`slot` seconds each) for the last `days` periods, so
//! the memory is bounded by the number of slots (2 016 of 5 minutes for a week), whatever the
//! series' cadence.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[seasonal]` of `models/univariate.toml`: how the usual value is learnt, and the
/// patterns taken over the series minus it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonalManifest {
    /// Seconds in one season (a day).
    pub period: u64,
    /// Seconds per slot of the profile; divides `period`.
    pub slot: u64,
    /// Past seasons looked at.
    pub days: u32,
    /// Past seasons with a value needed before there is a usual value.
    pub min_days: u32,
    /// Slots either side of the same time that are averaged with it.
    pub smooth: u32,
    /// Buckets per pattern.
    pub values: usize,
    /// Values averaged per bucket.
    pub bucket: usize,
    /// Newest patterns left out of the search (they overlap the current one).
    pub exclude: usize,
}

impl SeasonalManifest {
    /// Why the section cannot be used, if it cannot.
    pub fn check(&self, width: usize) -> Result<(), String> {
        if self.slot == 0 || self.period == 0 || !self.period.is_multiple_of(self.slot) {
            return Err(format!(
                "seasonal.slot ({}) must divide seasonal.period ({}), both > 0",
                self.slot, self.period
            ));
        }
        if self.min_days == 0 || self.min_days > self.days {
            return Err(format!(
                "seasonal.min_days ({}) must be 1..=seasonal.days ({})",
                self.min_days, self.days
            ));
        }
        if self.values == 0 || self.values > width || self.bucket == 0 {
            return Err(format!(
                "seasonal: values ({}) must be 1..={width}, bucket ({}) >= 1",
                self.values, self.bucket
            ));
        }
        Ok(())
    }
}

/// One series' profile: per slot index (unix time / slot), the sum and count of its values.
#[derive(Debug, Clone)]
pub struct SeasonalProfile {
    slot: f64,
    per_season: i64,
    days: i64,
    min_days: usize,
    smooth: i64,
    slots: BTreeMap<i64, (f64, u32)>,
}

impl SeasonalProfile {
    /// An empty profile for `m` (which [`SeasonalManifest::check`] accepted).
    pub fn new(m: &SeasonalManifest) -> Self {
        SeasonalProfile {
            slot: m.slot as f64,
            per_season: (m.period / m.slot) as i64,
            days: i64::from(m.days),
            min_days: m.min_days as usize,
            smooth: i64::from(m.smooth),
            slots: BTreeMap::new(),
        }
    }

    fn index(&self, unix: f64) -> i64 {
        (unix / self.slot).floor() as i64
    }

    /// The usual value at `unix` seconds from what was recorded before: the median over the
    /// past seasons that have one of the mean within `smooth` slots of the same time. `None`
    /// with fewer than `min_days` such seasons.
    pub fn usual(&self, unix: f64) -> Option<f64> {
        let k = self.index(unix);
        let mut per_day: Vec<f64> = (1..=self.days)
            .filter_map(|d| {
                let c = k - d * self.per_season;
                let (sum, n) = self
                    .slots
                    .range(c - self.smooth..=c + self.smooth)
                    .fold((0.0, 0u32), |(s, n), (_, (vs, vn))| (s + vs, n + vn));
                (n > 0).then(|| sum / f64::from(n))
            })
            .collect();
        if per_day.len() < self.min_days {
            return None;
        }
        per_day.sort_by(f64::total_cmp);
        let mid = per_day.len() / 2;
        Some(if per_day.len() % 2 == 1 {
            per_day[mid]
        } else {
            (per_day[mid - 1] + per_day[mid]) / 2.0
        })
    }

    /// Adds a value at `unix` seconds, forgetting slots too old to be looked at again.
    pub fn record(&mut self, unix: f64, value: f64) {
        let k = self.index(unix);
        let e = self.slots.entry(k).or_insert((0.0, 0));
        e.0 += value;
        e.1 += 1;
        let newest = *self.slots.keys().next_back().unwrap_or(&k);
        let oldest_needed = newest - self.days * self.per_season - self.smooth;
        while self
            .slots
            .first_key_value()
            .is_some_and(|(&old, _)| old < oldest_needed)
        {
            self.slots.pop_first();
        }
    }

    /// Slots held (for tests of the memory bound).
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> SeasonalManifest {
        SeasonalManifest {
            period: 86_400,
            slot: 300,
            days: 7,
            min_days: 2,
            smooth: 2,
            values: 4,
            bucket: 32,
            exclude: 128,
        }
    }

    #[test]
    fn the_usual_value_is_the_median_of_the_same_time_on_past_days() {
        let mut p = SeasonalProfile::new(&manifest());
        let noon = 12.0 * 3600.0;
        assert_eq!(p.usual(noon + 86_400.0), None);
        p.record(noon, 10.0);
        assert_eq!(p.usual(noon + 86_400.0), None, "one day is not enough");
        p.record(noon + 86_400.0, 30.0);
        assert_eq!(p.usual(noon + 2.0 * 86_400.0), Some(20.0));
        p.record(noon + 2.0 * 86_400.0, 11.0);
        // A value three slots away is outside `smooth`; one two slots away is averaged in.
        p.record(noon + 2.0 * 86_400.0 + 900.0, 1000.0);
        p.record(noon + 2.0 * 86_400.0 + 600.0, 13.0);
        assert_eq!(p.usual(noon + 3.0 * 86_400.0), Some(12.0));
        // At 3 a.m. nothing was seen.
        assert_eq!(p.usual(3.0 * 3600.0 + 3.0 * 86_400.0), None);
    }

    #[test]
    fn a_week_of_values_every_five_seconds_holds_a_bounded_number_of_slots() {
        let m = manifest();
        let mut p = SeasonalProfile::new(&m);
        let mut t = 0.0;
        while t < 10.0 * 86_400.0 {
            p.record(t, (t / 3600.0).sin());
            t += 5.0;
        }
        let bound = (m.days as u64 * m.period / m.slot + u64::from(m.smooth) + 1) as usize;
        assert!(p.slots() <= bound, "{} slots, bound {bound}", p.slots());
        assert!(p.usual(t).is_some());
    }

    #[test]
    fn a_section_that_cannot_work_is_refused_naming_the_field() {
        let mut m = manifest();
        m.slot = 7;
        assert!(m.check(4).unwrap_err().contains("seasonal.slot"));
        let mut m = manifest();
        m.min_days = 8;
        assert!(m.check(4).unwrap_err().contains("seasonal.min_days"));
        let mut m = manifest();
        m.values = 5;
        assert!(m.check(4).unwrap_err().contains("values"));
        assert!(manifest().check(4).is_ok());
    }
}

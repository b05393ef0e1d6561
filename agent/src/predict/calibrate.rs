//! Each host's own alarm threshold, held to a target false-alarm rate: peaks over threshold
//! on the detector's own recent smoothed scores (the SPOT family's extreme-value
//! thresholding, declustered the way alarm events are counted). Free of I/O.
//!
//! Every [`CalibrationParams::refit_every`] scores, from the newest
//! [`CalibrationParams::window`]:
//!
//! 1. `u` is the `1 - tail` quantile of the window;
//! 2. the runs above `u`, merged when closer than `merge_gap` samples (as alarm events are),
//!    are the clusters; their peaks' excesses over `u` are fitted with a generalised Pareto
//!    distribution (probability-weighted moments, Hosking & Wallis 1987);
//! 3. clusters cross `u` at `λ = clusters / days in the window`; the threshold is where the
//!    fitted tail makes that rate the target: `z = u + σ/ξ · ((λ/target)^ξ − 1)`
//!    (`u + σ·ln(λ/target)` when ξ ≈ 0), or `u` when clusters are already rarer than the target.
//!
//! The window holds every score, alarming or not (the detector caps an alarming one at
//! `calibration_alarm_cap` times its threshold before it comes here): a host whose normal
//! behaviour moves to a new level raises its own threshold once the new level fills the
//! window's tail (about `tail · window` samples) instead of alarming forever. The window
//! also gives [`Calibrator::percentile`], how unusual a score is for this host.
//!
//! Nothing but the window is kept (two days at one a second are 675 KiB of f32): a refit finds
//! `u` by narrowing a histogram of the window down to the bin that holds it ([`order_statistic`],
//! no copy of the window), and a percentile counts the window's scores below the score.

use std::collections::VecDeque;

/// Fewer clusters above `u` than this and the tail is not fitted: the threshold is the
/// window's highest score.
pub const MIN_CLUSTERS: usize = 5;

/// The fitted shape is kept within ±this (a handful of cluster peaks cannot tell more).
pub const MAX_SHAPE: f64 = 0.5;

/// How the threshold is calibrated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationParams {
    /// False alarm events per day the threshold is set for.
    pub target_per_day: f64,
    /// Scores per day (86 400 at the live one-second cadence, 1 440 in SMD, 288 in ASD).
    pub rows_per_day: f64,
    /// Scores the calibration reads: the newest this many.
    pub window: usize,
    /// Share of the window above the initial threshold `u`.
    pub tail: f64,
    /// Scores above the threshold closer than this form one event.
    pub merge_gap: usize,
    /// Scores between refits.
    pub refit_every: usize,
}

/// One calibration's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// The alarm threshold.
    pub threshold: f64,
    /// The initial threshold `u` (the window's `1 - tail` quantile).
    pub base: f64,
    /// Clusters above `u` in the window.
    pub clusters: usize,
    /// The generalised Pareto shape ξ and scale σ of the cluster peaks' excesses (0, 0 when
    /// not fitted).
    pub shape: f64,
    /// See `shape`.
    pub scale: f64,
}

/// The running calibration of one host.
#[derive(Debug, Clone)]
pub struct Calibrator {
    p: CalibrationParams,
    /// The window, as f32 (a day at one a second is 340 KiB).
    scores: VecDeque<f32>,
    since: usize,
    fitted: Option<Calibration>,
}

impl Calibrator {
    /// An empty calibrator.
    pub fn new(p: CalibrationParams) -> Self {
        Calibrator {
            p,
            scores: VecDeque::with_capacity(p.window.min(1 << 20)),
            since: 0,
            fitted: None,
        }
    }

    /// Its parameters.
    pub fn params(&self) -> &CalibrationParams {
        &self.p
    }

    /// Scores held.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether it holds no score.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Adds the newest score (a non-finite one is ignored); refits every `refit_every`.
    pub fn push(&mut self, score: f64) {
        if !score.is_finite() {
            return;
        }
        if self.scores.len() >= self.p.window.max(1) {
            self.scores.pop_front();
        }
        self.scores.push_back(score as f32);
        self.since += 1;
        if self.since >= self.p.refit_every.max(1) {
            self.refit();
        }
    }

    /// Calibrates from the scores held now.
    pub fn refit(&mut self) {
        self.since = 0;
        if let Some(c) = calibrate(&self.scores, &self.p) {
            self.fitted = Some(c);
        }
    }

    /// The newest calibration, if any.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.fitted.as_ref()
    }

    /// The calibrated threshold, if any.
    pub fn threshold(&self) -> Option<f64> {
        self.fitted.map(|c| c.threshold)
    }

    /// The share of the window's scores below `score`, in percent (None before the first
    /// refit). One pass over the window.
    pub fn percentile(&self, score: f64) -> Option<f64> {
        if self.fitted.is_none() || self.scores.is_empty() {
            return None;
        }
        let below = self
            .scores
            .iter()
            .filter(|v| f64::from(**v) < score)
            .count();
        Some(100.0 * below as f64 / self.scores.len() as f64)
    }
}

/// The calibration of `ordered` (finite scores, oldest first), or None for fewer than
/// [`MIN_CLUSTERS`] scores.
pub fn calibrate(ordered: &VecDeque<f32>, p: &CalibrationParams) -> Option<Calibration> {
    let n = ordered.len();
    if n < MIN_CLUSTERS {
        return None;
    }
    let at = ((1.0 - p.tail.clamp(0.0, 1.0)) * (n - 1) as f64).floor() as usize;
    let base = f64::from(order_statistic(ordered, at.min(n - 1)));
    let highest = f64::from(ordered.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    let peaks = cluster_peaks(ordered, base, p.merge_gap);
    let unfitted = |threshold: f64| Calibration {
        threshold,
        base,
        clusters: peaks.len(),
        shape: 0.0,
        scale: 0.0,
    };
    if peaks.len() < MIN_CLUSTERS {
        return Some(unfitted(highest));
    }
    let days = n as f64 / p.rows_per_day.max(f64::MIN_POSITIVE);
    let rate = peaks.len() as f64 / days;
    let target = p.target_per_day.max(f64::MIN_POSITIVE);
    if rate <= target {
        return Some(unfitted(base));
    }
    let excesses: Vec<f64> = peaks.iter().map(|m| m - base).collect();
    let (shape, scale) = fit_pareto(&excesses);
    let r = rate / target;
    let threshold = if shape.abs() < 1e-6 {
        base + scale * r.ln()
    } else {
        base + scale / shape * (r.powf(shape) - 1.0)
    };
    Some(Calibration {
        threshold,
        base,
        clusters: peaks.len(),
        shape,
        scale,
    })
}

/// Bins of the histogram [`order_statistic`] narrows by.
const BINS: usize = 1024;

/// A bin holding at most this many values is sorted instead of narrowed further.
const SMALL: usize = 4096;

/// The `k`-th smallest (from 0) of `values` (finite; `k < values.len()`), without sorting or
/// copying them: a histogram of [`BINS`] equal bins over the range still in question finds
/// the bin holding it, and the range narrows to that bin until it holds at most [`SMALL`]
/// values (then sorted) or a single value. A few passes over the values.
pub fn order_statistic(values: &VecDeque<f32>, k: usize) -> f32 {
    let (mut lo, mut hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    // Values below the range in question, and in it.
    let (mut below, mut inside) = (0usize, values.len());
    loop {
        if lo >= hi {
            return lo;
        }
        let in_range = |v: f32| v >= lo && v <= hi;
        if inside <= SMALL {
            let mut rest: Vec<f32> = values.iter().copied().filter(|v| in_range(*v)).collect();
            rest.sort_unstable_by(f32::total_cmp);
            return rest[(k - below).min(rest.len() - 1)];
        }
        let width = (f64::from(hi) - f64::from(lo)) / BINS as f64;
        let bin = |v: f32| (((f64::from(v) - f64::from(lo)) / width) as usize).min(BINS - 1);
        let mut counts = [0usize; BINS];
        for v in values.iter().copied().filter(|v| in_range(*v)) {
            counts[bin(v)] += 1;
        }
        let mut b = 0;
        while below + counts[b] <= k {
            below += counts[b];
            b += 1;
        }
        inside = counts[b];
        // The range narrows to the bin's own lowest and highest values: `bin` never decreases
        // with the value, so the values between those two are exactly the bin's.
        let (bin_lo, bin_hi) = values
            .iter()
            .copied()
            .filter(|v| in_range(*v) && bin(*v) == b)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, c), v| {
                (a.min(v), c.max(v))
            });
        lo = bin_lo;
        hi = bin_hi;
    }
}

/// The peak of each run of scores above `base`, runs closer than `gap` merged.
fn cluster_peaks(ordered: &VecDeque<f32>, base: f64, gap: usize) -> Vec<f64> {
    let mut peaks: Vec<f64> = Vec::new();
    let mut last: Option<usize> = None;
    for (i, s) in ordered.iter().enumerate() {
        let s = f64::from(*s);
        if s <= base {
            continue;
        }
        match (last, peaks.last_mut()) {
            (Some(l), Some(peak)) if i - l <= gap => *peak = peak.max(s),
            _ => peaks.push(s),
        }
        last = Some(i);
    }
    peaks
}

/// The generalised Pareto shape ξ (clamped to ±[`MAX_SHAPE`]) and scale σ of positive
/// excesses, by probability-weighted moments; an exponential (ξ = 0, σ = mean) when the
/// moments are degenerate.
pub fn fit_pareto(excesses: &[f64]) -> (f64, f64) {
    let k = excesses.len();
    let mut y = excesses.to_vec();
    y.sort_by(f64::total_cmp);
    let b0 = y.iter().sum::<f64>() / k.max(1) as f64;
    if k < 2 {
        return (0.0, b0);
    }
    let b1 = y
        .iter()
        .enumerate()
        .map(|(i, v)| (k - 1 - i) as f64 / (k - 1) as f64 * v)
        .sum::<f64>()
        / k as f64;
    let d = b0 - 2.0 * b1;
    if !(d > 0.0 && b1 > 0.0) {
        return (0.0, b0);
    }
    let shape = (2.0 - b0 / d).clamp(-MAX_SHAPE, MAX_SHAPE);
    // The scale that keeps the mean excess σ / (1 − ξ) at the sample's mean.
    let scale = b0 * (1.0 - shape);
    (shape, scale)
}

#[cfg(test)]
#[path = "calibrate_tests.rs"]
mod tests;

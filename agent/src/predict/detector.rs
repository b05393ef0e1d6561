//! The host anomaly detector around the ONNX model: per-host normalisation learned online
//! from the host's own history, the host's own autoregression and whitening (refitted from
//! its history every [`REFIT_EVERY`] samples), a window of the newest normalised samples,
//! the model's score smoothed by an exponential moving average, and the host's own alarm
//! threshold, calibrated from its own smoothed scores for a target false-alarm rate
//! ([`calibrate`](super::calibrate)). The first `warmup` samples only teach it: it learns
//! every one, and their scores calibrate the threshold, but it does not alarm.
//! The same code serves the live agent and `understudy-agent replay`; `models/detector.py`
//! and `models/train.py` mirror the definitions for training and baselines.

use std::collections::VecDeque;

use super::calibrate::{Calibration, CalibrationParams, Calibrator};
use super::horizon::Horizon;
use super::hostfit::{FitParams, HostParams, HostStats};
use super::manifest::ModelManifest;
use super::model::Model;

/// Before the host has calibrated its threshold, samples are learned only while the smoothed
/// score is below this share of the manifest's threshold; afterwards, below the calibration's
/// base (the host's own `1 - calibration_tail` quantile). Clearly normal ones either way, so
/// an anomaly that has not (yet) alarmed is not learned as normal.
pub const LEARN_BELOW: f64 = 0.5;

/// Seconds in a day.
pub const DAY_SECONDS: f64 = 86_400.0;

/// Samples between refits of the host's autoregression and whitening (a minute at the
/// live one-second cadence).
pub const REFIT_EVERY: usize = 60;

/// Per-feature running mean and variance.
#[derive(Debug, Clone)]
pub struct Normalizer {
    memory: Horizon,
    mean: Vec<f64>,
    var: Vec<f64>,
    z_clip: f64,
    floor_rel: f64,
}

impl Normalizer {
    /// An empty baseline for `features` metrics, remembering `cap` samples (see
    /// [`Horizon`]).
    pub fn new(features: usize, m: &ModelManifest, cap: f64) -> Self {
        Normalizer {
            memory: Horizon::new(cap),
            mean: vec![0.0; features],
            var: vec![0.0; features],
            z_clip: m.z_clip,
            floor_rel: m.std_floor_rel,
        }
    }

    /// Sets how many samples it remembers.
    pub fn set_cap(&mut self, cap: f64) {
        self.memory.set_cap(cap);
    }

    /// Samples learned from (capped).
    pub fn samples(&self) -> f64 {
        self.memory.samples()
    }

    /// The learned mean of feature `i`.
    pub fn mean(&self, i: usize) -> f64 {
        self.mean.get(i).copied().unwrap_or(0.0)
    }

    /// Learns one sample.
    pub fn update(&mut self, row: &[f64]) {
        let w = self.memory.next_weight();
        for (i, x) in row.iter().enumerate().take(self.mean.len()) {
            let d = x - self.mean[i];
            self.mean[i] += d * w;
            self.var[i] += (d * (x - self.mean[i]) - self.var[i]) * w;
        }
    }

    /// The per-feature means.
    pub fn means(&self) -> &[f64] {
        &self.mean
    }

    /// The standard deviation of a feature with this mean and variance, floored.
    fn sd(&self, mean: f64, var: f64) -> f64 {
        var.max(0.0)
            .sqrt()
            .max(self.floor_rel * mean.abs().max(1.0))
    }

    /// The per-feature standard deviations, floored.
    pub fn sds(&self) -> Vec<f64> {
        self.mean
            .iter()
            .zip(&self.var)
            .map(|(m, v)| self.sd(*m, *v))
            .collect()
    }

    /// The sample normalised and clipped.
    pub fn z(&self, row: &[f64]) -> Vec<f32> {
        self.mean
            .iter()
            .zip(&self.var)
            .zip(row)
            .map(|((m, v), x)| ((x - m) / self.sd(*m, *v)).clamp(-self.z_clip, self.z_clip) as f32)
            .collect()
    }
}

/// One step's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The model's raw score (0 until the window is full and the host's parameters fitted).
    pub score: f64,
    /// The smoothed score the threshold applies to.
    pub smoothed: f64,
    /// Whether it alarms.
    pub alarm: bool,
    /// Per-feature contributions to the score (empty until the window is full).
    pub contrib: Vec<f32>,
}

/// The detector.
#[derive(Debug)]
pub struct Detector {
    model: Model,
    manifest: ModelManifest,
    norm: Normalizer,
    stats: HostStats,
    host: Option<HostParams>,
    since_fit: usize,
    window: VecDeque<Vec<f32>>,
    ema: Option<f64>,
    learning: bool,
    calibrator: Calibrator,
    warmup: usize,
    seen: usize,
}

impl Detector {
    /// A detector with an empty baseline, set for the live cadence of one sample a second
    /// until [`Detector::calibrate_for`].
    pub fn new(model: Model, manifest: ModelManifest) -> Self {
        let mut stats = HostStats::new(manifest.features, manifest.input_shape[1] - 1, 1.0);
        let cap = memory(&manifest, DAY_SECONDS, &stats);
        stats.set_cap(cap);
        let norm = Normalizer::new(manifest.features, &manifest, cap);
        let calibrator = Calibrator::new(calibration_params(&manifest, DAY_SECONDS, None));
        Detector {
            model,
            manifest,
            norm,
            stats,
            host: None,
            since_fit: 0,
            window: VecDeque::new(),
            ema: None,
            learning: true,
            calibrator,
            warmup: 0,
            seen: 0,
        }
    }

    /// Sets how the host's threshold is calibrated and how long its baseline remembers:
    /// `rows_per_day` samples a day (86 400 at one a second), the first `warmup` samples only
    /// teaching, and the target false alarms a day (the manifest's when None). Forgets any
    /// calibration so far.
    pub fn calibrate_for(&mut self, rows_per_day: f64, warmup: usize, target: Option<f64>) {
        self.calibrator = Calibrator::new(calibration_params(&self.manifest, rows_per_day, target));
        self.warmup = warmup;
        let cap = memory(&self.manifest, rows_per_day, &self.stats);
        self.norm.set_cap(cap);
        self.stats.set_cap(cap);
    }

    /// Whether it is still in its warm-up (learning, calibrating, never alarming).
    pub fn warming(&self) -> bool {
        self.seen < self.warmup
    }

    /// Samples stepped through so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The host's newest threshold calibration, if any.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibrator.calibration()
    }

    /// The target false alarms a day the threshold is calibrated for.
    pub fn target_per_day(&self) -> f64 {
        self.calibrator.params().target_per_day
    }

    /// Where the newest smoothed score stands among this host's recent ones, percent (None
    /// in the warm-up).
    pub fn percentile_now(&self) -> Option<f64> {
        if self.warming() {
            return None;
        }
        self.ema.and_then(|e| self.calibrator.percentile(e))
    }

    /// How unusual `smoothed` is for this host: the percentage of its recent smoothed scores
    /// below it (None before any).
    pub fn percentile(&self, smoothed: f64) -> Option<f64> {
        self.calibrator.percentile(smoothed)
    }

    /// The normaliser (for warm-up checks).
    pub fn baseline(&self) -> &Normalizer {
        &self.norm
    }

    /// Number of metrics the model reads (the schema's first ones).
    pub fn features(&self) -> usize {
        self.manifest.features
    }

    /// The alarm threshold: the host's own once calibrated, else the manifest's.
    pub fn threshold(&self) -> f64 {
        self.calibrator
            .threshold()
            .unwrap_or(self.manifest.threshold)
    }

    /// A live sample with missing metrics filled in with the baseline's mean (which
    /// normalises to zero: "as usual").
    pub fn fill_missing(&self, row: &[Option<f64>]) -> Vec<f64> {
        (0..self.features())
            .map(|i| {
                row.get(i)
                    .copied()
                    .flatten()
                    .filter(|v| v.is_finite())
                    .unwrap_or_else(|| self.norm.mean(i))
            })
            .collect()
    }

    /// Whether [`Detector::step`] learns from the samples it does not alarm on (the live
    /// agent always does; replay stops after the train part unless asked).
    pub fn set_learning(&mut self, on: bool) {
        self.learning = on;
    }

    /// The model's first `features` values of `row`, refused when there are fewer or one
    /// is not finite.
    fn checked<'a>(&self, row: &'a [f64]) -> Result<&'a [f64], String> {
        let features = self.features();
        let row = row
            .get(..features)
            .ok_or_else(|| format!("{} values, the model reads {features}", row.len()))?;
        match row.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(format!("value {} is {}", i + 1, row[i])),
            None => Ok(row),
        }
    }

    /// Checks that `row` is one [`Detector::step`] takes (the model's first `features`
    /// values present and finite).
    pub fn checked_len(&self, row: &[f64]) -> Result<(), String> {
        self.checked(row).map(|_| ())
    }

    /// Refits the host's parameters when [`REFIT_EVERY`] samples have been seen since the
    /// last fit, or none is fitted yet (see [`HostStats::min_samples`]).
    fn refit(&mut self) {
        if self.host.is_none() || self.since_fit >= REFIT_EVERY {
            let p = FitParams {
                ridge: self.manifest.ridge,
                innovation_floor: self.manifest.innovation_floor,
            };
            if let Ok(fit) = self.stats.fit(self.norm.means(), &self.norm.sds(), p) {
                self.host = Some(fit);
                self.since_fit = 0;
            }
        }
    }

    /// Scores one sample (the model's first `features` metrics, finite). In the warm-up it
    /// learns the sample and calibrates from its score, and never alarms; afterwards (when
    /// learning is on) it calibrates from every score and learns the sample if its smoothed
    /// score is clearly normal (see [`LEARN_BELOW`]).
    pub fn step(&mut self, row: &[f64]) -> Result<Scored, String> {
        let samples = self.model.shape()[1];
        let row = self.checked(row)?;
        self.seen += 1;
        let warming = self.seen <= self.warmup;
        self.window.push_back(self.norm.z(row));
        if self.window.len() > samples {
            self.window.pop_front();
        }
        let full = self.window.len() == samples;
        let flat: Vec<f32> = self.window.iter().flatten().copied().collect();
        self.refit();
        let (score, contrib) = match &self.host {
            Some(host) if full => {
                let out = self.model.run(&flat, host)?;
                (f64::from(out.score), out.contrib)
            }
            _ => (0.0, Vec::new()),
        };
        let a = self.manifest.ema_alpha;
        let smoothed = match self.ema {
            None => score,
            Some(prev) => a * score + (1.0 - a) * prev,
        };
        self.ema = Some(smoothed);
        let scored = !contrib.is_empty();
        let threshold = self.threshold();
        let alarm = !warming && smoothed > threshold;
        if scored && (warming || self.learning) {
            // As in SPOT, an alarm is not taken as the host's normal tail: it counts, but at
            // most `calibration_alarm_cap` times the threshold it crossed.
            self.calibrator.push(if alarm {
                smoothed.min(self.manifest.calibration_alarm_cap * threshold)
            } else {
                smoothed
            });
        }
        if self.seen == self.warmup {
            self.calibrator.refit();
        }
        let normal = match self.calibrator.calibration() {
            Some(c) => smoothed < c.base,
            None => smoothed < LEARN_BELOW * threshold,
        };
        let learn = warming || (self.learning && normal);
        if learn {
            self.norm.update(row);
            self.since_fit += 1;
        }
        self.stats.observe(row, learn);
        Ok(Scored {
            score,
            smoothed,
            alarm,
            contrib,
        })
    }
}

/// The samples the baseline and the autoregression remember at `rows_per_day`: the
/// manifest's `baseline_days`, and never fewer than a fit needs.
fn memory(m: &ModelManifest, rows_per_day: f64, stats: &HostStats) -> f64 {
    (m.baseline_days * rows_per_day).max(stats.min_samples())
}

/// The calibration parameters for a manifest at `rows_per_day`.
fn calibration_params(
    m: &ModelManifest,
    rows_per_day: f64,
    target: Option<f64>,
) -> CalibrationParams {
    CalibrationParams {
        target_per_day: target.unwrap_or(m.false_alarms_per_day),
        rows_per_day,
        window: (m.calibration_days * rows_per_day).round().max(1.0) as usize,
        tail: m.calibration_tail,
        merge_gap: m.merge_gap,
        // A refit a minute at SMD's and ASD's cadences; every ten minutes at one a second.
        refit_every: REFIT_EVERY.max((m.calibration_days * rows_per_day / 144.0) as usize),
    }
}

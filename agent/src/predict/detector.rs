//! The host anomaly detector around the ONNX model: per-host normalisation learned online
//! from the host's own history, the host's own autoregression and whitening (refitted from
//! its history every [`REFIT_EVERY`] samples), a window of the newest normalised samples,
//! the model's score smoothed by an exponential moving average, and the alarm threshold.
//! The same code serves the live agent and `understudy-agent replay`; `models/detector.py`
//! and `models/train.py` mirror the definitions for training and baselines.

use std::collections::VecDeque;

use super::hostfit::{FitParams, HostParams, HostStats};
use super::manifest::ModelManifest;
use super::model::Model;

/// Samples are learned only while the smoothed score is below this share of the alarm
/// threshold: clearly normal ones, so an anomaly that has not (yet) alarmed is not learned as
/// normal. (On SMD, learning every sample that does not alarm found 99 of 200 events at 0.48
/// false alarms per machine-day; this rule 114 at 0.58.)
pub const LEARN_BELOW: f64 = 0.5;

/// Samples between refits of the host's autoregression and whitening (a minute at the
/// live one-second cadence).
pub const REFIT_EVERY: usize = 60;

/// The baseline's memory: running statistics until this many samples, then an exponential
/// average with this horizon.
pub const BASELINE_CAP: f64 = 86_400.0;

/// Per-feature running mean and variance.
#[derive(Debug, Clone)]
pub struct Normalizer {
    n: f64,
    mean: Vec<f64>,
    var: Vec<f64>,
    z_clip: f64,
    floor_rel: f64,
}

impl Normalizer {
    /// An empty baseline for `features` metrics.
    pub fn new(features: usize, m: &ModelManifest) -> Self {
        Normalizer {
            n: 0.0,
            mean: vec![0.0; features],
            var: vec![0.0; features],
            z_clip: m.z_clip,
            floor_rel: m.std_floor_rel,
        }
    }

    /// Samples learned from (capped).
    pub fn samples(&self) -> f64 {
        self.n
    }

    /// The learned mean of feature `i`.
    pub fn mean(&self, i: usize) -> f64 {
        self.mean.get(i).copied().unwrap_or(0.0)
    }

    /// Learns one sample.
    pub fn update(&mut self, row: &[f64]) {
        self.n = (self.n + 1.0).min(BASELINE_CAP);
        for (i, x) in row.iter().enumerate().take(self.mean.len()) {
            let d = x - self.mean[i];
            self.mean[i] += d / self.n;
            self.var[i] += (d * (x - self.mean[i]) - self.var[i]) / self.n;
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
}

impl Detector {
    /// A detector with an empty baseline.
    pub fn new(model: Model, manifest: ModelManifest) -> Self {
        let norm = Normalizer::new(manifest.features, &manifest);
        let stats = HostStats::new(manifest.features, manifest.input_shape[1] - 1);
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
        }
    }

    /// The normaliser (for warm-up checks).
    pub fn baseline(&self) -> &Normalizer {
        &self.norm
    }

    /// Number of metrics the model reads (the schema's first ones).
    pub fn features(&self) -> usize {
        self.manifest.features
    }

    /// The alarm threshold.
    pub fn threshold(&self) -> f64 {
        self.manifest.threshold
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

    /// Learns a baseline sample without scoring it.
    pub fn learn(&mut self, row: &[f64]) -> Result<(), String> {
        let row = self.checked(row)?;
        self.norm.update(row);
        self.stats.observe(row, true);
        self.since_fit += 1;
        Ok(())
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

    /// Scores one sample (the model's first `features` metrics, finite), then learns it if
    /// its smoothed score is below [`LEARN_BELOW`] of the threshold (and learning is on).
    pub fn step(&mut self, row: &[f64]) -> Result<Scored, String> {
        let samples = self.model.shape()[1];
        let row = self.checked(row)?;
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
        let alarm = smoothed > self.manifest.threshold;
        let learn = self.learning && smoothed < LEARN_BELOW * self.manifest.threshold;
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

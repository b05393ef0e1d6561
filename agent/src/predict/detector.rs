//! The host anomaly detector around the ONNX model: per-host normalisation learned online
//! from the host's own history, a window of the newest normalised samples, the model's
//! score smoothed by an exponential moving average, and the alarm threshold. The same code
//! serves the live agent and `understudy-agent replay`; `models/detector.py` mirrors the
//! definitions for training and baselines.

use std::collections::VecDeque;

use super::manifest::ModelManifest;
use super::model::Model;

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

    /// The sample normalised and clipped.
    pub fn z(&self, row: &[f64]) -> Vec<f32> {
        self.mean
            .iter()
            .zip(&self.var)
            .zip(row)
            .map(|((m, v), x)| {
                let sd = v.max(0.0).sqrt().max(self.floor_rel * m.abs().max(1.0));
                ((x - m) / sd).clamp(-self.z_clip, self.z_clip) as f32
            })
            .collect()
    }
}

/// One step's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The model's raw score (0 until the window is full).
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
    window: VecDeque<Vec<f32>>,
    ema: Option<f64>,
}

impl Detector {
    /// A detector with an empty baseline.
    pub fn new(model: Model, manifest: ModelManifest) -> Self {
        let norm = Normalizer::new(manifest.features, &manifest);
        Detector {
            model,
            manifest,
            norm,
            window: VecDeque::new(),
            ema: None,
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

    /// Learns a baseline sample without scoring it.
    pub fn learn(&mut self, row: &[f64]) {
        self.norm.update(row);
    }

    /// Scores one sample (the model's first `features` metrics, finite), then learns it
    /// unless it alarmed.
    pub fn step(&mut self, row: &[f64]) -> Result<Scored, String> {
        let [_, samples, features] = self.model.shape();
        if row.len() < features {
            return Err(format!("{} values, the model reads {features}", row.len()));
        }
        let row = &row[..features];
        if let Some(i) = row.iter().position(|v| !v.is_finite()) {
            return Err(format!("value {} is {}", i + 1, row[i]));
        }
        self.window.push_back(self.norm.z(row));
        if self.window.len() > samples {
            self.window.pop_front();
        }
        let (score, contrib) = if self.window.len() == samples {
            let flat: Vec<f32> = self.window.iter().flatten().copied().collect();
            let out = self.model.run(&flat)?;
            (f64::from(out.score), out.contrib)
        } else {
            (0.0, Vec::new())
        };
        let a = self.manifest.ema_alpha;
        let smoothed = match self.ema {
            None => score,
            Some(prev) => a * score + (1.0 - a) * prev,
        };
        self.ema = Some(smoothed);
        let alarm = smoothed > self.manifest.threshold;
        if !alarm {
            self.norm.update(row);
        }
        Ok(Scored {
            score,
            smoothed,
            alarm,
            contrib,
        })
    }
}

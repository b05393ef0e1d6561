//! The short-horizon resource forecaster (`models/forecast.onnx`): from the newest `window`
//! samples of each resource share, its estimate `horizon` seconds ahead and a p90 upper
//! bound. The health score reads the memory forecast as "predicted exhaustion".

use std::collections::VecDeque;
use std::path::Path;

use serde::Deserialize;
use understudy_common::telemetry::Forecast;

use super::model::Model;

/// `models/forecast.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastManifest {
    /// The ONNX file.
    pub file: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Schema metrics forecast, in input order.
    pub metrics: Vec<String>,
    /// Samples per series.
    pub window: usize,
    /// Seconds ahead.
    pub horizon: u32,
    /// Quantile of the upper bound.
    pub quantile: f64,
}

/// The forecaster with its recent series.
#[derive(Debug)]
pub struct Forecaster {
    model: Model,
    manifest: ForecastManifest,
    series: Vec<VecDeque<f32>>,
}

impl Forecaster {
    /// Loads `dir/forecast.toml` and its model.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let (m, _): (ForecastManifest, _) = super::manifest::parse_file(dir, "forecast")?;
        let n = m.metrics.len();
        let model = Model::load_checked(
            dir,
            &m.file,
            &m.sha256,
            &[&[n, m.window]],
            &[&[n, 1], &[n, 1]],
        )?;
        Ok(Forecaster {
            model,
            series: vec![VecDeque::new(); n],
            manifest: m,
        })
    }

    /// The metrics it forecasts.
    pub fn metrics(&self) -> &[String] {
        &self.manifest.metrics
    }

    /// Adds one sample per metric (a missing value repeats the previous one) and returns
    /// the forecasts once every series holds a full window.
    pub fn push(&mut self, values: &[Option<f64>]) -> Result<Option<Vec<Forecast>>, String> {
        let w = self.manifest.window;
        for (s, v) in self.series.iter_mut().zip(values) {
            let v = v
                .filter(|x| x.is_finite())
                .map(|x| x as f32)
                .or_else(|| s.back().copied());
            if let Some(v) = v {
                s.push_back(v);
                if s.len() > w {
                    s.pop_front();
                }
            }
        }
        if self.series.iter().any(|s| s.len() < w) {
            return Ok(None);
        }
        let input: Vec<f32> = self.series.iter().flatten().copied().collect();
        let out = self.model.run_all(&input)?;
        let (central, upper) = (&out[0], &out[1]);
        Ok(Some(
            self.manifest
                .metrics
                .iter()
                .enumerate()
                .map(|(i, m)| Forecast {
                    metric: m.clone(),
                    horizon_secs: self.manifest.horizon,
                    central: central[i],
                    upper: upper[i],
                })
                .collect(),
        ))
    }
}

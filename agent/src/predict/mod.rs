//! Failure prediction on the host: the shipped ONNX models (see `models/`), loaded with
//! tract after checking their SHA-256 and shapes, and the detectors around them.

pub mod detector;
pub mod forecast;
pub mod health;
pub mod manifest;
pub mod model;
pub mod replay;

use std::path::Path;

/// Loads the host anomaly detector from `dir` (`anomaly.toml` + `anomaly.onnx`).
pub fn load_anomaly(dir: &Path) -> Result<detector::Detector, String> {
    let m = manifest::read(dir, "anomaly")?;
    let model = model::Model::load(dir, &m)?;
    Ok(detector::Detector::new(model, m))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

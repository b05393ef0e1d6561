//! Failure prediction on the host: the shipped ONNX models (see `models/`), loaded with
//! tract after checking their SHA-256 and shapes, and the detectors around them.

pub mod calibrate;
pub mod detector;
pub mod forecast;
pub mod health;
pub mod horizon;
pub mod hostfit;
pub mod manifest;
pub mod model;
pub mod replay;
pub mod seasonal;
pub mod univariate;

use std::path::Path;

/// Loads the host anomaly detector from `dir` (`anomaly.toml` + `anomaly.onnx`).
pub fn load_anomaly(dir: &Path) -> Result<detector::Detector, String> {
    load_anomaly_named(dir, "anomaly")
}

/// Loads the anomaly detector `dir/<name>.toml` (`anomaly` for hosts, `anomaly-asd` for
/// the ASD replay).
pub fn load_anomaly_named(dir: &Path, name: &str) -> Result<detector::Detector, String> {
    let m = manifest::read(dir, name)?;
    let model = model::Model::load(dir, &m)?;
    Ok(detector::Detector::new(model, m))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

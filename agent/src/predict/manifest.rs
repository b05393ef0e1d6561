//! A shipped model's manifest (`models/<name>.toml`, written by `models/train.py`): its
//! file and SHA-256, the shapes it must have, and the detector parameters around it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `models/anomaly.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// The ONNX file, relative to the manifest.
    pub file: String,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Input shape: [1, samples, features].
    pub input_shape: [usize; 3],
    /// Number of schema metrics (from the first) the model reads.
    pub features: usize,
    /// Output names, in order.
    pub outputs: Vec<String>,
    /// Alarm threshold on the smoothed score until the host has calibrated its own (see
    /// [`calibrate`](super::calibrate)).
    pub threshold: f64,
    /// The false alarm events per host-day each host's own threshold is calibrated for
    /// (`[models] false_alarms_per_day` overrides it on a live host).
    pub false_alarms_per_day: f64,
    /// Days of the host's own scores its threshold is calibrated from.
    pub calibration_days: f64,
    /// Share of those scores above the calibration's initial threshold.
    pub calibration_tail: f64,
    /// A score that alarms enters the calibration window at most this multiple of the
    /// threshold it crossed (>= 1): an episode counts towards the host's alarm rate, but
    /// how far above the threshold it went does not raise the threshold for the next one.
    pub calibration_alarm_cap: f64,
    /// Smoothing factor of the score's exponential moving average.
    pub ema_alpha: f64,
    /// Normalised inputs are clipped to ±this.
    pub z_clip: f64,
    /// Standard deviation floor, relative to max(1, |mean|).
    pub std_floor_rel: f64,
    /// Alarm rows closer than this form one alarm event.
    pub merge_gap: usize,
    /// Added to the lagged samples' covariance when fitting the host's autoregression.
    pub ridge: f64,
    /// Added to the host's innovation covariance before whitening.
    pub innovation_floor: f64,
    /// Days of the host's own learned samples its baseline and autoregression remember: a
    /// running average until that many, then an exponential one with that horizon, so a
    /// level the host keeps becomes its normal within about that long.
    pub baseline_days: f64,
}

/// Where the shipped models are when not configured: the installed location, else the
/// source tree this agent was built from.
pub fn default_dir() -> PathBuf {
    let installed = PathBuf::from("/usr/share/understudy/models");
    if installed.join("anomaly.toml").exists() {
        installed
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }
}

/// Reads and parses any model's manifest `dir/<name>.toml`; errors name the file (and the key).
pub fn parse_file<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<(T, PathBuf), String> {
    let path = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let m = understudy_common::config::parse(&text)
        .map_err(|(key, reason)| format!("{}: {key}: {reason}", path.display()))?;
    Ok((m, path))
}

/// Reads the anomaly manifest `dir/<name>.toml` and checks its shapes.
pub fn read(dir: &Path, name: &str) -> Result<ModelManifest, String> {
    let (m, path): (ModelManifest, _) = parse_file(dir, name)?;
    if !(m.ridge >= 0.0 && m.innovation_floor > 0.0) {
        return Err(format!(
            "{}: ridge must be >= 0 and innovation_floor > 0 (got {} and {})",
            path.display(),
            m.ridge,
            m.innovation_floor
        ));
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !(positive(m.false_alarms_per_day)
        && positive(m.calibration_days)
        && positive(m.baseline_days)
        && positive(m.calibration_tail)
        && m.calibration_tail < 1.0)
    {
        return Err(format!(
            "{}: false_alarms_per_day, calibration_days and baseline_days must be > 0 and \
             calibration_tail in (0, 1) (got {}, {}, {} and {})",
            path.display(),
            m.false_alarms_per_day,
            m.calibration_days,
            m.baseline_days,
            m.calibration_tail
        ));
    }
    if !(m.calibration_alarm_cap.is_finite() && m.calibration_alarm_cap >= 1.0) {
        return Err(format!(
            "{}: calibration_alarm_cap must be a number >= 1 (got {})",
            path.display(),
            m.calibration_alarm_cap
        ));
    }
    if m.input_shape[0] != 1 || m.input_shape[1] < 2 || m.input_shape[2] != m.features {
        return Err(format!(
            "{}: input_shape {:?} must be [1, samples >= 2, features = {}]",
            path.display(),
            m.input_shape,
            m.features
        ));
    }
    Ok(m)
}

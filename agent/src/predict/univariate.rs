//! The streaming univariate detector (`models/univariate.onnx`, see
//! `models/univariate.py`): one series in — a probe's latency, an error rate, any metric —
//! one score in [0, 1] out per value, from how far the newest stretch of the series is from
//! the nearest stretch it has seen, at two time scales (three with times, below), the
//! scales' distances combined as the root of their sum of squares.
//!
//! Distances are measured in units of the series' range: the range seen so far, or, when the
//! range the series lives in is known beforehand ([`Univariate::with_known_range`], as NAB
//! gives every detector its file's minimum and maximum), the geometric mean of the two, so
//! a series' first values are not judged against a range it has not shown yet. While the
//! range is learned online, the unit is at least the manifest's `span_floor` times the mean
//! absolute value seen so far: a series that has so far barely moved around its level is not
//! judged against that small range, so a change of a few hundredths of its level does not
//! look like a leap out of it.
//!
//! When the values come with their times ([`Univariate::step_at`]) and the manifest has a
//! `[seasonal]` section, a third scale looks at the series minus its usual value at this
//! time of day ([`super::seasonal`]), once a couple of days have been seen.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::model::Model;
use super::seasonal::{SeasonalManifest, SeasonalProfile};

/// `models/univariate.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnivariateManifest {
    /// The ONNX file.
    pub file: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Patterns remembered per scale.
    pub memory: usize,
    /// Input columns per pattern.
    pub width: usize,
    /// The time scales.
    pub scales: Vec<Scale>,
    /// The value of an empty memory row.
    pub sentinel: f32,
    /// Distance that maps to score 1.
    pub scale: f64,
    /// Steps reported as 0 after a score at or above `rest_level`.
    pub rest: usize,
    /// See `rest`.
    pub rest_level: f64,
    /// The rest grows with the series: at least this fraction of the values seen so far
    /// (0, the default: always `rest`), up to `rest_max`.
    #[serde(default)]
    pub rest_per_seen: f64,
    /// The most a grown rest lasts (default: `rest`).
    #[serde(default)]
    pub rest_max: Option<usize>,
    /// A score at or above `rest_level` within this many values of the last alarm raises
    /// another only when the value before it scored that high too (0, the default: never
    /// asked). A single high score soon after an episode is most often its tail.
    #[serde(default)]
    pub confirm_within: u64,
    /// While the range is learned online, the distance unit is at least this many times the
    /// mean absolute value seen so far (0, the default: the range alone).
    #[serde(default)]
    pub span_floor: f64,
    /// Patterns remembered before the first score.
    pub min_memory: usize,
    /// The seasonal scale, last in the model's input.
    #[serde(default)]
    pub seasonal: Option<SeasonalManifest>,
}

/// One time scale: patterns of `values` buckets, each the mean of `bucket` raw values.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// Buckets per pattern.
    pub values: usize,
    /// Raw values averaged per bucket.
    pub bucket: usize,
    /// Newest patterns left out of the search (they overlap the current one).
    pub exclude: usize,
}

/// The shared, immutable part: the model and its parameters. Clone one per series.
#[derive(Debug, Clone)]
pub struct UnivariateModel {
    model: Arc<Model>,
    m: Arc<UnivariateManifest>,
    /// Every scale in the model's input order: the manifest's, then the seasonal one.
    scales: Arc<[Scale]>,
}

impl UnivariateModel {
    /// Loads `dir/univariate.toml` and its model, checking the hash and shapes.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let (m, path): (UnivariateManifest, _) = super::manifest::parse_file(dir, "univariate")?;
        if m.scales.is_empty()
            || m.scales
                .iter()
                .any(|s| s.values == 0 || s.values > m.width || s.bucket == 0)
            || m.memory <= m.min_memory
        {
            return Err(format!(
                "{}: scales must be 1..=width values of buckets >= 1, memory > min_memory",
                path.display()
            ));
        }
        if !(m.span_floor.is_finite() && m.span_floor >= 0.0) {
            return Err(format!(
                "{}: span_floor must be a finite number >= 0, not {}",
                path.display(),
                m.span_floor
            ));
        }
        if let Some(s) = &m.seasonal {
            s.check(m.width)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let scales: Arc<[Scale]> = m
            .scales
            .iter()
            .copied()
            .chain(m.seasonal.as_ref().map(|s| Scale {
                values: s.values,
                bucket: s.bucket,
                exclude: s.exclude,
            }))
            .collect();
        let n = scales.len();
        let model = Model::load_checked(
            dir,
            &m.file,
            &m.sha256,
            &[&[n, m.memory + 1, m.width]],
            &[&[n, 1]],
        )?;
        Ok(UnivariateModel {
            model: Arc::new(model),
            m: Arc::new(m),
            scales,
        })
    }

    /// A detector for one new series.
    pub fn detector(&self) -> Univariate {
        let longest = self
            .m
            .scales
            .iter()
            .map(|s| s.values * s.bucket)
            .max()
            .unwrap_or(1);
        let n = self.scales.len();
        Univariate {
            shared: self.clone(),
            recent: VecDeque::with_capacity(longest + 1),
            longest,
            profile: self.m.seasonal.as_ref().map(SeasonalProfile::new),
            residuals: VecDeque::new(),
            memory: vec![VecDeque::with_capacity(self.m.memory); n],
            range: None,
            known_span: None,
            rest: Rest {
                least: self.m.rest,
                per_seen: self.m.rest_per_seen.max(0.0),
                most: self.m.rest_max.unwrap_or(self.m.rest).max(self.m.rest),
            },
            confirm_within: self.m.confirm_within,
            seen: 0,
            abs_sum: 0.0,
            quiet: 0,
            last_alarm: None,
            previous: 0.0,
            input: vec![0.0; n * (self.m.memory + 1) * self.m.width],
        }
    }

    /// The model's parameters.
    pub fn manifest(&self) -> &UnivariateManifest {
        &self.m
    }

    /// The model's nearest-pattern distance per scale for a prepared input.
    pub fn distances(&self, input: &[f32]) -> Result<Vec<f32>, String> {
        Ok(self.model.run_all(input)?.remove(0))
    }
}

/// One series' detector state.
#[derive(Debug)]
pub struct Univariate {
    shared: UnivariateModel,
    recent: VecDeque<f64>,
    longest: usize,
    /// The usual value by time of day, when the model has a seasonal scale.
    profile: Option<SeasonalProfile>,
    /// The newest values minus their usual value (seasonal scale).
    residuals: VecDeque<f64>,
    /// Per scale, the remembered patterns (raw units), oldest first.
    memory: Vec<VecDeque<Vec<f64>>>,
    range: Option<(f64, f64)>,
    known_span: Option<f64>,
    rest: Rest,
    /// See [`UnivariateManifest::confirm_within`].
    confirm_within: u64,
    /// Values stepped through so far.
    seen: u64,
    /// The sum of the absolute values stepped through (for the span's floor).
    abs_sum: f64,
    quiet: usize,
    /// When the last alarm was raised (`seen` then).
    last_alarm: Option<u64>,
    /// The previous value's score, before any rest.
    previous: f64,
    input: Vec<f32>,
}

impl Univariate {
    /// The series is known to live in `[lo, hi]` (NAB tells its detectors each file's
    /// minimum and maximum): distances are then in units of the geometric mean of that span
    /// and the span seen so far.
    pub fn with_known_range(mut self, lo: f64, hi: f64) -> Self {
        let span = hi - lo;
        self.known_span = (span.is_finite() && span > 0.0).then_some(span);
        self
    }

    /// Reports 0 for `rest` steps after a score at or above the manifest's `rest_level`
    /// (instead of the manifest's `rest`).
    pub fn with_rest(mut self, rest: usize) -> Self {
        self.rest = Rest {
            least: rest,
            per_seen: 0.0,
            most: rest,
        };
        self
    }

    /// Raises every score at or above the rest level as an alarm, however soon after the
    /// last (instead of the manifest's `confirm_within`).
    pub fn without_confirmation(mut self) -> Self {
        self.confirm_within = 0;
        self
    }

    /// Scores the next value, whose time is not known (no seasonal scale). A non-finite
    /// value is refused (the series is unchanged).
    pub fn step(&mut self, value: f64) -> Result<f64, String> {
        self.step_at(value, None)
    }

    /// Scores the next value, taken at `unix` seconds (a non-finite time counts as unknown).
    /// A non-finite value is refused (the series is unchanged).
    pub fn step_at(&mut self, value: f64, unix: Option<f64>) -> Result<f64, String> {
        if !value.is_finite() {
            return Err(format!("value {value} is not a finite number"));
        }
        let (lo, hi) = match self.range {
            Some((lo, hi)) => (lo.min(value), hi.max(value)),
            None => (value, value),
        };
        self.range = Some((lo, hi));
        self.seen += 1;
        self.abs_sum += value.abs();
        self.recent.push_back(value);
        if self.recent.len() > self.longest {
            self.recent.pop_front();
        }
        let m = Arc::clone(&self.shared.m);
        let seen = (hi - lo).max(1e-12);
        let span = match self.known_span {
            Some(known) => (seen * known.max(seen)).sqrt(),
            None => seen.max(m.span_floor * self.abs_sum / self.seen as f64),
        };
        // The seasonal scale takes a pattern only at a step whose value has a usual value.
        let mut has_residual = false;
        let timed = unix.filter(|t| t.is_finite());
        if let (Some(profile), Some(sm), Some(t)) = (&mut self.profile, &m.seasonal, timed) {
            if let Some(usual) = profile.usual(t) {
                self.residuals.push_back(value - usual);
                if self.residuals.len() > sm.values * sm.bucket {
                    self.residuals.pop_front();
                }
                has_residual = true;
            }
            profile.record(t, value);
        }
        let scales = Arc::clone(&self.shared.scales);
        let mut patterns = Vec::with_capacity(scales.len());
        for (i, s) in scales.iter().enumerate() {
            let p = if i < m.scales.len() {
                pattern(&self.recent, s.values, s.bucket)
            } else if has_residual {
                pattern(&self.residuals, s.values, s.bucket)
            } else {
                None
            };
            let ready = p.is_some() && self.memory[i].len() > s.exclude + m.min_memory;
            patterns.push((p, ready));
        }
        // The scales' distances combine as the root of their sum of squares: a stretch a
        // little odd at two scales counts for more than one odd at one.
        let mut squares = 0.0f64;
        if patterns.iter().any(|(_, ready)| *ready) {
            self.fill_input(&patterns, lo, span);
            let out = self.shared.model.run_all(&self.input)?;
            for (d, (_, ready)) in out[0].iter().zip(&patterns) {
                if *ready {
                    squares += f64::from(*d).powi(2);
                }
            }
        }
        let distance = squares.sqrt();
        for (mem, (p, _)) in self.memory.iter_mut().zip(patterns) {
            if let Some(p) = p {
                if mem.len() == m.memory {
                    mem.pop_front();
                }
                mem.push_back(p);
            }
        }
        let score = (distance / m.scale).min(1.0);
        let previous = std::mem::replace(&mut self.previous, score);
        if self.quiet > 0 {
            self.quiet -= 1;
            return Ok(0.0);
        }
        if score >= m.rest_level {
            if self.unconfirmed(previous, m.rest_level) {
                return Ok(0.0);
            }
            self.last_alarm = Some(self.seen);
            self.quiet = self.rest.after(self.seen);
        }
        Ok(score)
    }

    /// Whether an alarm now would come within `confirm_within` values of the last one with
    /// the value before it (score `previous`) under `level`: reported as 0, and the next
    /// value alarms if it is as novel.
    fn unconfirmed(&self, previous: f64, level: f64) -> bool {
        let soon = self
            .last_alarm
            .is_some_and(|at| self.seen - at < self.confirm_within);
        soon && previous < level
    }

    /// Writes the model input: per scale the current pattern then the usable memory
    /// (newest `exclude` left out), divided by `span` (values less `lo`; residuals as they
    /// are), sentinel rows after.
    fn fill_input(&mut self, patterns: &[(Option<Vec<f64>>, bool)], lo: f64, span: f64) {
        let m = &self.shared.m;
        let (rows, width) = (m.memory + 1, m.width);
        self.input.fill(0.0);
        for (i, (s, p)) in self.shared.scales.iter().zip(patterns).enumerate() {
            let block = &mut self.input[i * rows * width..(i + 1) * rows * width];
            let offset = if i < m.scales.len() { lo } else { 0.0 };
            let norm = |v: f64| ((v - offset) / span) as f32;
            if let (Some(p), _) = p {
                for (c, v) in p.iter().enumerate() {
                    block[c] = norm(*v);
                }
            }
            let mem = &self.memory[i];
            let usable = mem.len().saturating_sub(s.exclude);
            for (r, row) in mem.iter().take(usable).enumerate() {
                for (c, v) in row.iter().enumerate() {
                    block[(r + 1) * width + c] = norm(*v);
                }
            }
            for r in usable + 1..rows {
                block[r * width..(r + 1) * width].fill(m.sentinel);
            }
        }
    }
}

/// How many steps report 0 after an alarm: `least`, growing with the values seen so far
/// (`per_seen` of them) up to `most`.
#[derive(Debug, Clone, Copy)]
struct Rest {
    least: usize,
    per_seen: f64,
    most: usize,
}

impl Rest {
    fn after(self, seen: u64) -> usize {
        let grown = (self.per_seen * seen as f64) as usize;
        grown.clamp(self.least, self.most)
    }
}

/// The newest pattern of `values` buckets of `bucket` values each from `buf`, if it holds
/// enough.
fn pattern(buf: &VecDeque<f64>, values: usize, bucket: usize) -> Option<Vec<f64>> {
    let need = values * bucket;
    let start = buf.len().checked_sub(need)?;
    Some(
        (0..values)
            .map(|b| {
                let from = start + b * bucket;
                buf.range(from..from + bucket).sum::<f64>() / bucket as f64
            })
            .collect(),
    )
}

#[cfg(test)]
#[path = "univariate_tests.rs"]
mod tests;

//! `understudy-agent replay`: streams recorded telemetry through the live detectors.
//!
//! SMD and ASD layout: rows of comma-separated floats (one per minute in SMD, per five
//! minutes in ASD), no header; `.zst` files are decompressed on the fly. The baseline is
//! learned from the train file only (or, asked, also from the test rows that do not alarm,
//! as live); the test file then goes row by row through [`Detector::step`], exactly as live
//! samples do, and each row becomes `row,score,alarm` (the smoothed score).
//!
//! NAB layout: a `timestamp,value` CSV with a header; each value goes through the
//! streaming univariate detector with its timestamp
//! ([`Univariate::step_at`](super::univariate::Univariate::step_at)), given the file's range
//! and rest as NAB gives them to every detector, and the output is
//! NAB's result layout, `timestamp,value,anomaly_score`.
//!
//! Outputs are written beside their final name and renamed into place, so a failed replay
//! leaves no half-written file. A malformed row fails the replay naming the file and line.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use super::detector::Detector;
use super::univariate::UnivariateModel;

/// Opens `path`, decompressing `.zst`.
fn open(path: &Path) -> Result<Box<dyn BufRead>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "zst") {
        Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        )
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

/// Parses one row of comma-separated floats.
pub fn parse_row(line: &str) -> Result<Vec<f64>, String> {
    line.split(',')
        .enumerate()
        .map(|(i, v)| {
            let x: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("value {} ({:?}) is not a number", i + 1, v.trim()))?;
            if x.is_finite() {
                Ok(x)
            } else {
                Err(format!("value {} is {x}", i + 1))
            }
        })
        .collect()
}

/// Calls `f` with each row of `path` (1-based line numbers), stopping at the first error.
fn for_each_row(
    path: &Path,
    mut f: impl FnMut(usize, Vec<f64>) -> Result<(), String>,
) -> Result<usize, String> {
    let mut n = 0;
    for (i, line) in open(path)?.lines().enumerate() {
        let line = line.map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let row = parse_row(&line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        f(i + 1, row).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        n += 1;
    }
    Ok(n)
}

/// Replays SMD-layout `train` then `test` through `det`, writing `out`. `train` is the
/// warm-up: every row is learned and its score calibrates the host's threshold, as a live
/// host's first samples do. The baseline and the calibration then stay as `train` left them
/// unless `keep_learning` (then, as live, the test rows go on calibrating, and those clearly
/// normal go on teaching the baseline). `rows_per_day`: 1 440 for SMD, 288 for ASD;
/// `target`: false alarms a day (the manifest's when None).
pub fn smd(
    det: &mut Detector,
    train: &Path,
    test: &Path,
    out: &Path,
    calibration: (f64, Option<f64>),
    keep_learning: bool,
) -> Result<usize, String> {
    let mut rows = Vec::new();
    for_each_row(train, |_, row| {
        det.checked_len(&row)?;
        rows.push(row);
        Ok(())
    })?;
    if rows.is_empty() {
        return Err(format!(
            "{}: no rows to learn a baseline from",
            train.display()
        ));
    }
    let (rows_per_day, target) = calibration;
    det.calibrate_for(rows_per_day, rows.len(), target);
    for (i, row) in rows.iter().enumerate() {
        det.step(row)
            .map_err(|e| format!("{}:{}: {e}", train.display(), i + 1))?;
    }
    det.set_learning(keep_learning);
    let mut row_no = 0usize;
    write_atomically(out, "row,score,alarm", |w| {
        for_each_row(test, |_, row| {
            let s = det.step(&row)?;
            writeln!(w, "{row_no},{:.6},{}", s.smoothed, u8::from(s.alarm))
                .map_err(|e| format!("{}: {e}", out.display()))?;
            row_no += 1;
            Ok(())
        })
    })
}

/// NAB's probationary period for a file of `rows` rows: 15 % of it, at most 750 rows.
pub fn nab_probation(rows: usize) -> usize {
    (rows * 15 / 100).min(750)
}

/// How a NAB file is replayed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NabOptions {
    /// As live: the detector is told nothing about the file (the range seen so far, the
    /// manifest's rest and confirmation of alarms soon after the last).
    pub streaming: bool,
    /// Values reported as 0 after an alarm, instead of the default (NAB's or the manifest's).
    pub rest: Option<usize>,
}

/// Replays a NAB `timestamp,value` file through a detector of `model`, writing
/// `timestamp,value,anomaly_score` to `out`. As NAB does for every detector, the detector is
/// told the file's minimum and maximum and rests a fifth of the probationary period after
/// an alarm (NAB's own context-OSE detector's rule, every alarm after it raised at once),
/// unless `how` says otherwise; the values still go through it one by one. Every row is
/// read and checked before any is scored.
pub fn nab(
    model: &UnivariateModel,
    input: &Path,
    out: &Path,
    how: NabOptions,
) -> Result<usize, String> {
    let rows = read_nab(input)?;
    let (lo, hi) = rows
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(r.1), hi.max(r.1))
        });
    let mut det = model.detector();
    if !how.streaming {
        det = det
            .with_known_range(lo, hi)
            .with_rest(nab_probation(rows.len()) / 5)
            .without_confirmation();
    }
    if let Some(rest) = how.rest {
        det = det.with_rest(rest);
    }
    write_atomically(out, "timestamp,value,anomaly_score", |w| {
        for (ts, v, text, unix) in &rows {
            let score = det.step_at(*v, Some(*unix))?;
            writeln!(w, "{ts},{text},{score:.6}").map_err(|e| format!("{}: {e}", out.display()))?;
        }
        Ok(rows.len())
    })
}

/// The rows of a NAB file: (timestamp, value, the value as written, the time in unix
/// seconds). Timestamps are `YYYY-MM-DD HH:MM:SS` (UTC, as NAB writes them; RFC 3339 also
/// accepted) or unix seconds.
fn read_nab(input: &Path) -> Result<Vec<(String, f64, String, f64)>, String> {
    let mut lines = open(input)?.lines().enumerate();
    match lines.next() {
        Some((_, Ok(h))) if h.trim() == "timestamp,value" => {}
        Some((_, Ok(h))) => {
            return Err(format!(
                "{}:1: header {:?}, expected \"timestamp,value\"",
                input.display(),
                h.trim()
            ))
        }
        Some((_, Err(e))) => return Err(format!("{}:1: {e}", input.display())),
        None => return Err(format!("{}: empty file", input.display())),
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let at = |e: String| format!("{}:{}: {e}", input.display(), i + 1);
        let line = line.map_err(|e| at(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let (ts, value) = line
            .split_once(',')
            .ok_or_else(|| at("expected timestamp,value".into()))?;
        let v: f64 = value
            .trim()
            .parse()
            .map_err(|_| at(format!("value {:?} is not a number", value.trim())))?;
        if !v.is_finite() {
            return Err(at(format!(
                "value {:?} is not a finite number",
                value.trim()
            )));
        }
        let unix = parse_time(ts.trim()).ok_or_else(|| {
            at(format!(
                "timestamp {:?} is neither YYYY-MM-DD HH:MM:SS nor unix seconds",
                ts.trim()
            ))
        })?;
        rows.push((ts.trim().to_string(), v, value.trim().to_string(), unix));
    }
    Ok(rows)
}

/// Seconds since the epoch of a NAB timestamp.
fn parse_time(ts: &str) -> Option<f64> {
    if let Ok(secs) = ts.parse::<f64>() {
        return secs.is_finite().then_some(secs);
    }
    let t = humantime::parse_rfc3339_weak(ts).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(d.as_secs_f64())
}

/// Writes `header` then whatever `body` writes to `out`, by way of a temporary file beside
/// it that is renamed into place only when `body` succeeds (and removed when it fails).
fn write_atomically(
    out: &Path,
    header: &str,
    body: impl FnOnce(&mut dyn Write) -> Result<usize, String>,
) -> Result<usize, String> {
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let werr = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let result = writeln!(w, "{header}")
        .map_err(werr)
        .and_then(|()| body(&mut w))
        .and_then(|n| {
            w.flush().map_err(werr)?;
            Ok(n)
        });
    match result {
        Ok(n) => {
            std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
            Ok(n)
        }
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

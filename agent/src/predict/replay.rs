//! `understudy-agent replay`: streams recorded telemetry through the live detector.
//!
//! SMD layout: rows of comma-separated floats, one per minute, no header; `.zst` files are
//! decompressed on the fly. The baseline is learned from the train file only; the test file
//! then goes row by row through [`Detector::step`], exactly as live samples do, and each row
//! becomes `row,score,alarm` in the output (written beside it and renamed into place, so a
//! failed replay leaves no half-written file). A malformed row fails the replay naming the
//! file and line.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use super::detector::Detector;

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

/// Replays SMD-layout `train` then `test` through `det`, writing `out`.
pub fn smd(det: &mut Detector, train: &Path, test: &Path, out: &Path) -> Result<usize, String> {
    let learned = for_each_row(train, |_, row| {
        det.learn(&row);
        Ok(())
    })?;
    if learned == 0 {
        return Err(format!(
            "{}: no rows to learn a baseline from",
            train.display()
        ));
    }
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let werr = |e: std::io::Error| format!("{}: {e}", tmp.display());
    writeln!(w, "row,score,alarm").map_err(werr)?;
    let mut row_no = 0usize;
    let result = for_each_row(test, |_, row| {
        let s = det.step(&row)?;
        writeln!(w, "{row_no},{:.6},{}", s.smoothed, u8::from(s.alarm)).map_err(werr)?;
        row_no += 1;
        Ok(())
    });
    let finished = result.and_then(|n| {
        w.flush().map_err(werr)?;
        Ok(n)
    });
    match finished {
        Ok(n) => {
            std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

//! The univariate detector against onnxruntime, on series with a known break, and its
//! replay in NAB's layout.

use super::*;
use crate::predict::{manifest, replay};

fn model() -> UnivariateModel {
    UnivariateModel::load(&manifest::default_dir()).unwrap()
}

/// A noisy daily-like wave: `period` steps, amplitude 10 around 50, noise ±1.
fn wave(n: usize, period: f64, seed: u64) -> Vec<f64> {
    let mut x = seed;
    (0..n)
        .map(|t| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x % 2001) as f64 / 1000.0 - 1.0;
            50.0 + 10.0 * (t as f64 * std::f64::consts::TAU / period).sin() + noise
        })
        .collect()
}

#[test]
fn the_distance_model_matches_onnxruntime_within_1e_5() {
    let text =
        std::fs::read_to_string(manifest::default_dir().join("fixtures/univariate-parity.json"))
            .unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = model();
    for case in fixture["cases"].as_array().unwrap() {
        let input: Vec<f32> = case["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = m.distances(&input).unwrap();
        for (g, want) in got.iter().zip(case["distance"].as_array().unwrap()) {
            let want = want.as_f64().unwrap();
            assert!(
                (f64::from(*g) - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{g} vs onnxruntime {want}"
            );
        }
    }
}

#[test]
fn a_level_shift_alarms_at_once_and_the_steady_wave_before_it_does_not() {
    let m = model();
    let level = m.manifest().rest_level;
    let mut det = m.detector();
    let mut series = wave(1500, 96.0, 7);
    for v in &mut series[1200..] {
        *v += 25.0;
    }
    let scores: Vec<f64> = series.iter().map(|v| det.step(*v).unwrap()).collect();
    let before: Vec<usize> = (400..1200).filter(|t| scores[*t] >= level).collect();
    assert!(before.is_empty(), "no alarm on the steady wave: {before:?}");
    let first = (1200..1500).find(|t| scores[*t] >= level);
    assert!(
        first.is_some_and(|t| t <= 1202),
        "the shift at 1200 alarms within 2 steps: {first:?}"
    );
    let again: Vec<usize> = (1201..1200 + m.manifest().rest)
        .filter(|t| scores[*t] > 0.0)
        .collect();
    assert!(again.is_empty(), "one alarm per episode: {again:?}");
}

#[test]
fn soon_after_an_alarm_another_waits_for_a_second_novel_score() {
    let m = model();
    let level = m.manifest().rest_level;
    let within = m.manifest().confirm_within as usize;
    assert!(
        within >= 300,
        "the manifest asks for confirmation: {within}"
    );
    let mut series = wave(1400 + within, 96.0, 5);
    series[800] += 40.0; // the first alarm
    series[900] -= 40.0; // a spike soon after it: its three-value patterns score high
    series[1000] += 30.0; // a spike two values wide, soon after the last alarm
    series[1001] += 30.0;
    let late = 1001 + within + 100;
    series[late] -= 60.0; // a spike long after the last alarm
    let alarms = |det: Univariate| {
        let mut det = det;
        let scores: Vec<f64> = series.iter().map(|v| det.step(*v).unwrap()).collect();
        (400..series.len())
            .filter(|t| scores[*t] >= level)
            .collect::<Vec<usize>>()
    };
    assert_eq!(
        alarms(m.detector().without_confirmation()),
        vec![800, 900, 1000, late],
        "asked for nothing, every novel value alarms at once"
    );
    assert_eq!(
        alarms(m.detector()),
        vec![800, 901, 1001, late],
        "soon after an alarm, the next waits for a second novel score in a row; long after, not"
    );
}

#[test]
fn a_non_finite_value_is_refused_and_changes_nothing() {
    let m = model();
    let (mut a, mut b) = (m.detector(), m.detector());
    let series = wave(300, 50.0, 3);
    for (t, v) in series.iter().enumerate() {
        if t == 150 {
            let e = a.step(f64::NAN).unwrap_err();
            assert!(e.contains("NaN"), "{e}");
            assert!(a.step(f64::INFINITY).is_err());
        }
        assert_eq!(a.step(*v).unwrap(), b.step(*v).unwrap());
    }
}

fn nab_file(dir: &std::path::Path, values: &[f64]) -> std::path::PathBuf {
    let mut text = String::from("timestamp,value\n");
    for (i, v) in values.iter().enumerate() {
        text.push_str(&format!(
            "2024-01-{:02} {:02}:{:02}:00,{v:.3}\n",
            1 + i / 1440,
            i / 60 % 24,
            i % 60
        ));
    }
    let path = dir.join("series.csv");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn nab_replay_writes_nab_s_layout_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let mut series = wave(1000, 60.0, 11);
    series[900] += 40.0;
    let input = nab_file(dir.path(), &series);
    let run = |out: &str| {
        let n = replay::nab(&model(), &input, &dir.path().join(out), Default::default()).unwrap();
        assert_eq!(n, 1000);
        std::fs::read_to_string(dir.path().join(out)).unwrap()
    };
    let (a, b) = (run("a.csv"), run("b.csv"));
    assert_eq!(a, b, "two replays give identical scores");
    let lines: Vec<&str> = a.lines().collect();
    assert_eq!(lines[0], "timestamp,value,anomaly_score");
    let spike: Vec<&str> = lines[901].split(',').collect();
    assert_eq!(spike[0], "2024-01-01 15:00:00", "the input's timestamp");
    assert!(
        spike[2].parse::<f64>().unwrap() >= model().manifest().rest_level,
        "the spike scores high: {}",
        lines[901]
    );
    // NAB's rest: a fifth of the probationary period (15 % of 1000 rows) after the alarm.
    let rest = replay::nab_probation(1000) / 5;
    assert_eq!(rest, 30);
    let score = |row: usize| {
        lines[row + 1]
            .split(',')
            .nth(2)
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let quiet: Vec<usize> = (901..=900 + rest).filter(|r| score(*r) > 0.0).collect();
    assert!(quiet.is_empty(), "rows scored during the rest: {quiet:?}");
    assert!(score(901 + rest) > 0.0, "scoring resumes after the rest");
}

#[test]
fn a_streaming_replay_judges_each_value_by_the_values_before_it_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut series = wave(1000, 60.0, 11);
    series[900] += 40.0;
    let whole = nab_file(dir.path(), &series);
    let prefix_dir = dir.path().join("prefix");
    std::fs::create_dir(&prefix_dir).unwrap();
    let prefix = nab_file(&prefix_dir, &series[..850]);
    let scores = |input: &std::path::Path, streaming: bool| -> Vec<String> {
        let out = dir.path().join("out.csv");
        let how = replay::NabOptions {
            streaming,
            rest: None,
        };
        replay::nab(&model(), input, &out, how).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        text.lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap().to_owned())
            .collect()
    };
    // Streaming, a file's first 850 values score the same whether or not the spike follows.
    let (all, part) = (scores(&whole, true), scores(&prefix, true));
    assert_eq!(all[..850], part[..]);
    // By NAB's rules they do not: the file's range, spike included, is known from the start.
    assert_ne!(scores(&whole, false)[..850], scores(&prefix, false)[..]);
    let spike: f64 = all[900].parse().unwrap();
    assert!(
        spike >= model().manifest().rest_level,
        "the spike scores {spike}"
    );
}

#[test]
fn a_known_range_measures_distances_in_the_geometric_mean_of_the_two_ranges() {
    let m = model();
    // Around 0, so the range seen so far is above the span's floor (half the mean absolute value).
    let series: Vec<f64> = wave(800, 40.0, 5).iter().map(|v| v - 50.0).collect();
    let (lo, hi) = series
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    // Told a range 100 times what the series will show, once the series has shown its whole
    // range every distance is a tenth of what it is untold.
    let mut plain = m.detector().with_rest(0);
    let mut told = m
        .detector()
        .with_rest(0)
        .with_known_range(lo, lo + 100.0 * (hi - lo));
    let (mut seen_lo, mut seen_hi) = (f64::MAX, f64::MIN);
    let mut compared = 0;
    for v in &series {
        let (p, t) = (plain.step(*v).unwrap(), told.step(*v).unwrap());
        (seen_lo, seen_hi) = (seen_lo.min(*v), seen_hi.max(*v));
        if seen_lo == lo && seen_hi == hi && p > 0.0 && p < 1.0 {
            assert!((t * 10.0 - p).abs() < 1e-5, "{t} vs {p}");
            compared += 1;
        }
    }
    assert!(compared > 250, "only {compared} values compared");
    // An empty or non-finite known range is ignored.
    let mut a = m.detector().with_known_range(3.0, 3.0);
    let mut b = m.detector().with_known_range(0.0, f64::NAN);
    let mut c = m.detector();
    for v in &series[..300] {
        let want = c.step(*v).unwrap();
        assert_eq!(a.step(*v).unwrap(), want);
        assert_eq!(b.step(*v).unwrap(), want);
    }
}

#[test]
fn nab_replay_refuses_a_malformed_row_or_header_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    let out = dir.path().join("out.csv");
    std::fs::write(
        &input,
        "timestamp,value\n2024-01-01 00:00:00,1.5\n2024-01-01 00:01:00,n/a\n",
    )
    .unwrap();
    let e = replay::nab(&model(), &input, &out, Default::default()).unwrap_err();
    assert!(e.contains("bad.csv:3") && e.contains("\"n/a\""), "{e}");
    assert!(!out.exists() && !out.with_extension("partial").exists());
    std::fs::write(&input, "timestamp,value\n2024-01-01 00:00:00,NaN\n").unwrap();
    let e = replay::nab(&model(), &input, &out, Default::default()).unwrap_err();
    assert!(
        e.contains("bad.csv:2") && e.contains("not a finite number"),
        "{e}"
    );
    assert!(!out.exists());
    std::fs::write(&input, "time;value\n").unwrap();
    let e = replay::nab(&model(), &input, &out, Default::default()).unwrap_err();
    assert!(e.contains("bad.csv:1") && e.contains("header"), "{e}");
    std::fs::write(
        &input,
        "timestamp,value\n2024-01-01 00:00:00,1.5\nyesterday noon,2.5\n",
    )
    .unwrap();
    let e = replay::nab(&model(), &input, &out, Default::default()).unwrap_err();
    assert!(
        e.contains("bad.csv:3") && e.contains("timestamp \"yesterday noon\""),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn a_working_day_that_starts_at_2_am_alarms_only_when_the_detector_knows_the_time() {
    // Five-minute values, busy (60) from 8:00 to 20:00 and idle (40) otherwise, noise ±1.
    // On day 5 work starts at 2:00 and ends at 14:00: every value and every stretch, short
    // or long, is one seen each day, but not at those hours.
    let m = model();
    let level = m.manifest().rest_level;
    let day = 288;
    let hour = |i: usize| i % day / 12;
    let mut series = wave(6 * day, f64::INFINITY, 13);
    for (i, v) in series.iter_mut().enumerate() {
        let busy = if i / day == 4 {
            (2..14).contains(&hour(i))
        } else {
            (8..20).contains(&hour(i))
        };
        *v += if busy { 10.0 } else { -10.0 };
    }
    let (mut timed, mut untimed) = (m.detector(), m.detector());
    let (mut with_time, mut without) = (Vec::new(), Vec::new());
    for (i, v) in series.iter().enumerate() {
        // Midnight UTC, 2023-11-15.
        let unix = 1_700_006_400.0 + 300.0 * i as f64;
        with_time.push(timed.step_at(*v, Some(unix)).unwrap());
        without.push(untimed.step(*v).unwrap());
    }
    let alarms = |s: &[f64], r: std::ops::Range<usize>| -> Vec<usize> {
        r.filter(|t| s[*t] >= level).collect()
    };
    let odd_day = 4 * day..5 * day;
    assert!(
        alarms(&without, odd_day.clone()).is_empty(),
        "without times the day looks ordinary"
    );
    let found = alarms(&with_time, odd_day);
    let two_am = 4 * day + 2 * 12;
    assert!(
        found
            .first()
            .is_some_and(|t| (two_am..two_am + 18).contains(t)),
        "with times it alarms within 90 minutes of 2:00 (row {two_am}): {found:?}"
    );
    assert!(
        alarms(&with_time, day..4 * day).is_empty(),
        "and not on the ordinary days before"
    );
}

#[test]
fn a_growing_rest_starts_at_its_least_grows_with_the_series_and_stops_at_its_most() {
    let rest = Rest {
        least: 30,
        per_seen: 0.03,
        most: 750,
    };
    assert_eq!(rest.after(500), 30, "a young series rests the least");
    assert_eq!(rest.after(10_000), 300, "3 % of the values seen");
    assert_eq!(rest.after(1_000_000), 750, "never longer than the most");
    let fixed = Rest {
        least: 150,
        per_seen: 0.0,
        most: 150,
    };
    assert_eq!(fixed.after(1_000_000), 150, "no growth: always the least");
}

#[test]
fn a_series_that_has_barely_moved_is_not_judged_against_its_small_range() {
    let m = model();
    let level = m.manifest().rest_level;
    assert_eq!(m.manifest().span_floor, 0.5);
    let mut unfloored = m.clone();
    Arc::make_mut(&mut unfloored.m).span_floor = 0.0;
    // A latency at 100 ms that has moved by ±0.1 ms so far, then by 1 ms (1 % of its level)
    // at value 1000, then by 30 ms at value 1300.
    let series: Vec<f64> = wave(1600, 96.0, 11)
        .iter()
        .enumerate()
        .map(|(t, v)| {
            let step = match t {
                0..1000 => 0.0,
                1000..1300 => 1.0,
                _ => 31.0,
            };
            100.0 + (v - 50.0) / 100.0 + step
        })
        .collect();
    let alarms = |m: &UnivariateModel| {
        let mut det = m.detector();
        let scores: Vec<f64> = series.iter().map(|v| det.step(*v).unwrap()).collect();
        (400..series.len())
            .filter(|t| scores[*t] >= level)
            .collect::<Vec<usize>>()
    };
    let judged_by_range = alarms(&unfloored);
    assert!(
        judged_by_range.contains(&1000),
        "against its range alone, a 1 % move alarms: {judged_by_range:?}"
    );
    let floored = alarms(&m);
    assert_eq!(
        floored.first(),
        Some(&1300),
        "with the floor, the 1 % move raises nothing and the 30 % move alarms at once: {floored:?}"
    );
}

#[test]
fn a_span_floor_that_is_negative_or_not_a_number_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(manifest::default_dir().join("univariate.toml")).unwrap();
    for bad in ["-0.5", "nan"] {
        let edited = text.replace("span_floor = 0.5", &format!("span_floor = {bad}"));
        assert_ne!(edited, text);
        std::fs::write(dir.path().join("univariate.toml"), edited).unwrap();
        let e = UnivariateModel::load(dir.path()).unwrap_err();
        assert!(
            e.contains("univariate.toml") && e.contains("span_floor"),
            "{e}"
        );
    }
}

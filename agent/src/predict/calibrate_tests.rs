use super::*;

/// A deterministic uniform in (0, 1).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn exponential(&mut self) -> f64 {
        -self.uniform().ln()
    }
}

/// Smoothed like the detector's score (EMA 0.2), so exceedances come in clusters.
struct Smoothed(Option<f64>);

impl Smoothed {
    fn next(&mut self, x: f64) -> f64 {
        let s = match self.0 {
            None => x,
            Some(p) => 0.2 * x + 0.8 * p,
        };
        self.0 = Some(s);
        s
    }
}

const PER_DAY: usize = 1440;

fn params(window_days: usize) -> CalibrationParams {
    CalibrationParams {
        target_per_day: 1.0,
        rows_per_day: PER_DAY as f64,
        window: window_days * PER_DAY,
        tail: 0.02,
        merge_gap: 10,
        refit_every: 60,
    }
}

/// Runs `series` through a calibrator, counting alarm events (runs above the current
/// threshold, merged within the gap) that start at or after `from`; returns their starts.
fn alarm_starts(
    cal: &mut Calibrator,
    series: impl Iterator<Item = f64>,
    from: usize,
) -> Vec<usize> {
    let gap = cal.params().merge_gap;
    let (mut starts, mut last) = (Vec::new(), None::<usize>);
    for (i, s) in series.enumerate() {
        let alarm = cal.threshold().is_some_and(|t| s > t);
        if alarm && i >= from {
            if last.is_none_or(|l| i - l > gap) {
                starts.push(i);
            }
            last = Some(i);
        }
        cal.push(s);
    }
    starts
}

#[test]
fn on_a_stationary_series_the_achieved_alarm_rate_is_near_the_target() {
    // Tolerance stated: over 120 days after a week's warm-up, between half and one and a half
    // times the target of one alarm a day (a week's window holds ~200 cluster peaks; the
    // threshold's own sampling error moves the rate by about a fifth either way).
    let (warmup, days) = (7 * PER_DAY, 120 * PER_DAY);
    for seed in [1u64, 2, 3] {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        let mut ema = Smoothed(None);
        let series = (0..warmup + days).map(|_| ema.next(rng.exponential()));
        let mut cal = Calibrator::new(params(7));
        let starts = alarm_starts(&mut cal, series, warmup);
        let rate = starts.len() as f64 / 120.0;
        assert!(
            (0.5..=1.5).contains(&rate),
            "seed {seed}: {rate:.2} alarms a day for a target of 1 ({} events)",
            starts.len()
        );
    }
}

#[test]
fn the_target_moves_the_rate_where_it_is_asked_to() {
    // Ten times rarer alarms asked: at most a fifth as many given.
    let (warmup, days) = (7 * PER_DAY, 120 * PER_DAY);
    let run = |target: f64| {
        let mut rng = Rng(77);
        let mut ema = Smoothed(None);
        let series = (0..warmup + days).map(|_| ema.next(rng.exponential()));
        let mut cal = Calibrator::new(CalibrationParams {
            target_per_day: target,
            ..params(7)
        });
        alarm_starts(&mut cal, series, warmup).len()
    };
    let (often, rare) = (run(1.0), run(0.1));
    assert!(rare * 5 <= often, "target 0.1: {rare}, target 1: {often}");
    assert!(rare <= 30, "target 0.1 a day over 120 days: {rare} alarms");
}

#[test]
fn a_new_steady_level_stops_alarming_within_the_warmup_length() {
    // Warm-up length = the window = one day. A week at one level, then the host's normal
    // moves to a level 5 higher for good: it alarms at the move, then recalibrates.
    let (before, after) = (7 * PER_DAY, 14 * PER_DAY);
    let mut rng = Rng(5);
    let mut ema = Smoothed(None);
    let series: Vec<f64> = (0..before + after)
        .map(|i| ema.next(rng.exponential() + if i >= before { 5.0 } else { 0.0 }))
        .collect();
    let mut cal = Calibrator::new(params(1));
    let starts = alarm_starts(&mut cal, series.into_iter(), PER_DAY);
    assert!(
        starts.iter().any(|s| (before..before + 60).contains(s)),
        "the move itself alarms: {starts:?}"
    );
    let late = starts.iter().filter(|s| **s >= before + PER_DAY).count();
    assert!(
        late <= 2 * 13,
        "after one warm-up length at the new level, about the target rate again \
         (1 a day for 13 days): {late} alarms"
    );
    assert!(
        cal.threshold().unwrap() > 5.0,
        "the threshold moved up with the level: {:?}",
        cal.calibration()
    );
}

#[test]
fn the_pareto_fit_recovers_known_parameters() {
    let mut rng = Rng(11);
    for (shape, scale) in [(0.0, 1.0), (0.2, 2.0), (-0.2, 0.5)] {
        let sample: Vec<f64> = (0..20_000)
            .map(|_| {
                let u = rng.uniform();
                if shape == 0.0 {
                    -scale * u.ln()
                } else {
                    scale / shape * (u.powf(-shape) - 1.0)
                }
            })
            .collect();
        let (xi, sigma) = fit_pareto(&sample);
        assert!((xi - shape).abs() < 0.05, "shape {xi} for {shape}");
        assert!(
            (sigma / scale - 1.0).abs() < 0.05,
            "scale {sigma} for {scale}"
        );
    }
}

#[test]
fn percentile_says_how_unusual_a_score_is_here() {
    let mut cal = Calibrator::new(params(1));
    assert_eq!(cal.percentile(1.0), None, "nothing seen yet");
    for i in 0..1000 {
        cal.push(f64::from(i));
    }
    cal.refit();
    assert_eq!(cal.percentile(-1.0), Some(0.0));
    assert_eq!(cal.percentile(500.0), Some(50.0));
    assert_eq!(cal.percentile(5000.0), Some(100.0));
    cal.push(f64::NAN);
    assert_eq!(cal.len(), 1000, "a non-finite score is not kept");
}

#[test]
fn too_few_peaks_alarm_only_above_the_highest_score_seen() {
    let mut cal = Calibrator::new(params(1));
    for _ in 0..500 {
        cal.push(1.0);
    }
    cal.push(3.0);
    cal.refit();
    let c = cal.calibration().unwrap();
    assert_eq!(c.clusters, 1);
    assert_eq!(c.threshold, 3.0);
}

#[test]
fn the_order_statistic_is_the_sorted_windows_without_sorting_it() {
    // Heavy-tailed scores, a window mostly of one repeated value (a host at rest: its
    // scores before the model's window fills), and a handful of values: the same element
    // as a full sort's, at the calibration's quantile and at the ends.
    let mut rng = Rng(11);
    let heavy: VecDeque<f32> = (0..200_000)
        .map(|_| (rng.exponential().powi(3)) as f32)
        .collect();
    let resting: VecDeque<f32> = (0..50_000)
        .map(|i| {
            if i % 97 == 0 {
                rng.uniform() as f32
            } else {
                0.0
            }
        })
        .collect();
    let few: VecDeque<f32> = [3.0, -1.0, 2.5, 2.5, 7.0].into_iter().collect();
    for (name, values) in [("heavy", heavy), ("resting", resting), ("few", few)] {
        let mut sorted: Vec<f32> = values.iter().copied().collect();
        sorted.sort_unstable_by(f32::total_cmp);
        let n = sorted.len();
        for k in [0, n / 2, (0.98 * (n - 1) as f64) as usize, n - 2, n - 1] {
            assert_eq!(
                order_statistic(&values, k),
                sorted[k],
                "{name}: element {k} of {n}"
            );
        }
    }
}

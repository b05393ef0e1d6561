"""Held-out evaluation of the host anomaly detector: split by machine, never by time alone.

The machines are split into folds (SMD: its machine groups, machine-1-* and machine-2-*;
ASD: its servers in three folds of three). For each fold, the one setting chosen from data
— the false-alarm rate each host's own threshold is calibrated for, from GRID — is chosen
on the other folds' machines only (the most events found with at most one false alarm per
machine-day on every one of them; the rarest rate when none manages that), and the fold's
machines are then reported with it. Nothing about a held-out machine is used for it except
its own train part, which is what a live host has too (its warm-up). (The score's exponent
is chosen the same way, together with the rate, by power_grid.py.)

Events are counted without point-adjust: a labelled segment counts as found when an alarm
event starts within LEAD before it or inside it; an alarm event touching no segment (nor
the LEAD before one) is a false alarm. Delay is from the segment's first row to the first
alarming row within that span (negative: before the segment).

Baselines, scored in Python with the same smoothing: PCA reconstruction error (10 components
fitted on the machine's train part), with its threshold from its own train part (the
lowest whose alarm events stay at or under 0.5 a day there), and with an oracle threshold
chosen on the machine's own test part (the lowest with at most one false alarm per
machine-day on that test part: the most it could find at that rate, knowing the answers).
"""

import argparse
import csv
import os
import pathlib
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import datasets
import detector

GRID = (0.25, 0.5, 0.75, 1.0)
MAX_FALSE_PER_DAY = 1.0
LEAD_HOURS = 1.0


def folds(ds):
    machines = datasets.machines(ds)
    if ds == "smd":
        groups = sorted({m.rsplit("-", 1)[0] for m in machines})
        return [[m for m in machines if m.rsplit("-", 1)[0] == g] for g in groups]
    return [machines[i::3] for i in range(3)]


def _segments(labels):
    out, start = [], None
    for i, v in enumerate(labels):
        if v and start is None:
            start = i
        if not v and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(labels) - 1))
    return out


def score_alarms(alarm, labels, rows_per_day):
    """Found segments, false alarm events, machine-days and delays (minutes)."""
    lead = int(round(rows_per_day * LEAD_HOURS / 24))
    spans = [(max(0, s - lead), e, s) for s, e in _segments(labels)]
    starts = [s for s, _ in detector.events(alarm)]
    found, delays = 0, []
    for lo, hi, s in spans:
        if any(lo <= a <= hi for a in starts):
            found += 1
            first = lo + int(np.argmax(alarm[lo:hi + 1]))
            delays.append((first - s) * 1440 / rows_per_day)
    covered = np.zeros(len(labels), dtype=bool)
    for lo, hi, _ in spans:
        covered[lo:hi + 1] = True
    false = sum(1 for s, e in detector.events(alarm) if not covered[s:e + 1].any())
    return {"segments": len(spans), "found": found, "false": false,
            "days": len(labels) / rows_per_day, "delays": delays}


def arguments(description):
    """The command line of the scripts that replay one set held out: `smd|asd [--agent PATH]`
    (the agent from $UNDERSTUDY_AGENT, else this checkout's release build)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("ds", choices=["smd", "asd"])
    ap.add_argument("--agent", default=os.environ.get(
        "UNDERSTUDY_AGENT",
        str(pathlib.Path(__file__).resolve().parent.parent / "target/release/understudy-agent")))
    return ap.parse_args()


def replay_rows(agent, ds, machine, out_dir, target, keep_learning):
    """One machine's test part replayed through the agent: its smoothed scores and alarms."""
    out = pathlib.Path(out_dir) / f"{machine}-{target}-{int(keep_learning)}.csv"
    subprocess.run([agent, "replay", "--format", ds, "--train", datasets.path(machine, "train", ds),
                    "--test", datasets.path(machine, "test", ds), "--out", out,
                    "--false-alarms-per-day", str(target)]
                   + (["--keep-learning"] if keep_learning else []),
                   check=True, stderr=subprocess.DEVNULL)
    with open(out) as f:
        rows = list(csv.DictReader(f))
    return (np.array([float(r["score"]) for r in rows]),
            np.array([int(r["alarm"]) for r in rows], dtype=bool))


def replay(agent, ds, machine, out_dir, target, keep_learning):
    """One machine's alarms (see replay_rows)."""
    return replay_rows(agent, ds, machine, out_dir, target, keep_learning)[1]


def pca_scores(train_z, test_z, k=10):
    mu = train_z.mean(axis=0)
    _, _, vt = np.linalg.svd(train_z - mu, full_matrices=False)
    v = vt[:k].T

    def score(z):
        c = z - mu
        r = c - (c @ v) @ v.T
        return (np.minimum(np.abs(r), 10.0) ** 2).mean(axis=1)
    return detector.smooth(score(train_z)), detector.smooth(score(test_z))


def oracle(smoothed, labels, rows_per_day):
    """The alarms at the lowest threshold (over 200 high quantiles of the test scores) with
    at most MAX_FALSE_PER_DAY false alarms per day on this test part."""
    best = smoothed > smoothed.max()
    for q in 1.0 - np.logspace(-0.5, -5.0, 200):
        alarm = smoothed > np.quantile(smoothed, q)
        r = score_alarms(alarm, labels, rows_per_day)
        if r["false"] / r["days"] <= MAX_FALSE_PER_DAY:
            return alarm
    return best


def pooled(rows):
    seg = sum(r["segments"] for r in rows)
    found = sum(r["found"] for r in rows)
    days = sum(r["days"] for r in rows)
    false = sum(r["false"] for r in rows)
    worst = max(r["false"] / r["days"] for r in rows)
    delays = [d for r in rows for d in r["delays"]]
    return {"segments": seg, "found": found, "recall": found / max(seg, 1), "fa": false / days,
            "worst": worst, "delay": float(np.median(delays)) if delays else float("nan")}


def choose(results, machines, grid=GRID):
    """The rate in `grid` with the most events found on `machines` while every one of them
    stays at or under MAX_FALSE_PER_DAY (else the rarest)."""
    ok = [t for t in grid
          if all(results[(m, t)]["false"] / results[(m, t)]["days"] <= MAX_FALSE_PER_DAY
                 for m in machines)]
    if not ok:
        return min(grid)
    return max(ok, key=lambda t: (pooled([results[(m, t)] for m in machines])["recall"], -t))


def replay_all(agent, ds, grid=GRID, keep_learning=True):
    """Every machine of `ds` replayed through the agent at every target in `grid`: the
    machines, and each (machine, target)'s scored alarms."""
    per_day = datasets.ROWS_PER_DAY[ds]
    machines = [m for f in folds(ds) for m in f]
    labels = {m: datasets.labels(m, ds) for m in machines}
    results = {}
    with tempfile.TemporaryDirectory() as d, ThreadPoolExecutor(2) as pool:
        jobs = {(m, t): pool.submit(replay, agent, ds, m, d, t, keep_learning)
                for m in machines for t in grid}
        for key, job in jobs.items():
            results[key] = score_alarms(job.result(), labels[key[0]], per_day)
    return machines, results


def pca_baselines(ds, machines):
    """PCA's alarms on each machine: with a threshold from its own train part, and with an
    oracle threshold from its own test labels."""
    per_day = datasets.ROWS_PER_DAY[ds]
    pca_train, pca_oracle = {}, {}
    for m in machines:
        labels = datasets.labels(m, ds)
        tr, te = datasets.load(m, "train", ds), datasets.load(m, "test", ds)
        mu, sd = detector.baseline(tr)
        a, b = pca_scores(detector.normalise(tr, mu, sd), detector.normalise(te, mu, sd))
        t, _, _ = detector.pick_threshold([a], rows_per_day=per_day)
        pca_train[m] = score_alarms(b > t, labels, per_day)
        pca_oracle[m] = score_alarms(oracle(b, labels, per_day), labels, per_day)
    return pca_train, pca_oracle


def evaluate(agent, ds, keep_learning=True):
    fs = folds(ds)
    machines, results = replay_all(agent, ds, GRID, keep_learning)
    chosen, held = {}, {}
    for f in fs:
        rest = [m for m in machines if m not in f]
        t = choose(results, rest)
        for m in f:
            chosen[m] = t
            held[m] = results[(m, t)]
    in_sample_t = choose(results, machines)
    pca_train, pca_oracle = pca_baselines(ds, machines)
    return {"folds": fs, "chosen": chosen, "held": held, "in_sample_t": in_sample_t,
            "in_sample": {m: results[(m, in_sample_t)] for m in machines},
            "grid": {t: {m: results[(m, t)] for m in machines} for t in GRID},
            "pca_train": pca_train, "pca_oracle": pca_oracle, "machines": machines}


def report(ds, r):
    machines = r["machines"]
    days = sum(r["held"][m]["days"] for m in machines)
    print(f"{ds.upper()}: {len(machines)} machines in {len(r['folds'])} folds by machine, "
          f"test parts {days:.1f} machine-days; an alarm counts from {LEAD_HOURS:.0f} h before a segment")
    print()
    print("| detector | events found | false alarms / machine-day (pooled) | worst machine | median delay (min) |")
    print("|---|---:|---:|---:|---:|")
    rows = [("**ours, held-out folds** (each host's own threshold; rate chosen on the other folds)",
             [r["held"][m] for m in machines]),
            (f"ours, rate chosen on all machines (in-sample: {r['in_sample_t']} a day)",
             list(r["in_sample"].values()))]
    rows += [(f"ours, calibrated for {t} a day", list(r["grid"][t].values())) for t in GRID]
    rows += [("PCA, threshold from its own train part", list(r["pca_train"].values())),
             ("PCA, oracle threshold (from its own test labels)", list(r["pca_oracle"].values()))]
    for name, rs in rows:
        p = pooled(rs)
        print(f"| {name} | {p['found']}/{p['segments']} ({p['recall']:.1%}) | {p['fa']:.2f} | "
              f"{p['worst']:.2f} | {p['delay']:.0f} |")
    print()
    print("Per machine, held out (target: the rate chosen on the other folds):")
    print()
    print("| machine | target / day | events found | false alarms / day | PCA train-threshold found | "
          "PCA oracle found |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in machines:
        h, a, o = r["held"][m], r["pca_train"][m], r["pca_oracle"][m]
        print(f"| {m} | {r['chosen'][m]} | {h['found']}/{h['segments']} | {h['false'] / h['days']:.2f} | "
              f"{a['found']}/{a['segments']} ({a['false'] / a['days']:.2f}/day) | "
              f"{o['found']}/{o['segments']} ({o['false'] / o['days']:.2f}/day) |")
    print()

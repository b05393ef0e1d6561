"""Evaluates the shipped models through the agent's replay, beside baselines run the same way.

    .venv/bin/python models/evaluate.py [smd|asd|nab|all] [--agent target/release/understudy-agent]

smd / asd — the host anomaly model (anomaly-asd for ASD). Ours: `understudy-agent replay
--format smd|asd` for each machine (baseline learned from the train part only, then the
test part streamed row by row through the agent's live code path), its alarms read back
from the CSV; and again with --keep-learning (the baseline goes on learning from the test
rows that do not alarm, as on a live host). Baselines, scored in Python with the same
normalisation, smoothing and threshold rule (threshold picked on the train halves only):
PCA reconstruction error (10 components fitted per machine on its train half), and random
scores. Reported per detector: event recall (a labelled segment counts as found if any of
its rows alarms; no point-adjust), false alarm events per machine-day (alarm events that
touch no labelled segment), the median detection delay (minutes from a found segment's
first row to its first alarming row), and point-wise precision, recall and F1.

nab — the streaming univariate detector. `understudy-agent replay --format nab` over every
corpus file, scored by models/nab.py (NAB's published scoring: windows, sigmoid, profiles,
probationary period, one threshold per profile optimised over the corpus, normalisation
against the null and perfect detectors), printed beside NAB's published scores for other
detectors (reference/final_results.json, computed by NAB with the same rules).
"""

import argparse
import csv
import json
import pathlib
import subprocess
import tempfile

import numpy as np

import detector
import datasets
import nab

HERE = pathlib.Path(__file__).resolve().parent


def _runs(labels):
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


def metrics(alarm, labels, rows_per_day):
    segs = _runs(labels)
    delays = [int(np.argmax(alarm[s:e + 1])) for s, e in segs if alarm[s:e + 1].any()]
    found = len(delays)
    evs = detector.events(alarm)
    false = sum(1 for s, e in evs if not labels[s:e + 1].any())
    days = len(labels) / rows_per_day
    tp = int((alarm & (labels == 1)).sum())
    fp = int((alarm & (labels == 0)).sum())
    fn = int((~alarm & (labels == 1)).sum())
    return {"segments": len(segs), "found": found, "false_events": false, "days": days,
            "tp": tp, "fp": fp, "fn": fn, "delays": delays, "minutes": 1440 / rows_per_day}


def summarise(name, rows):
    seg = sum(r["segments"] for r in rows)
    found = sum(r["found"] for r in rows)
    false = sum(r["false_events"] for r in rows)
    days = sum(r["days"] for r in rows)
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    p = tp / max(tp + fp, 1)
    rc = tp / max(tp + fn, 1)
    f1 = 2 * p * rc / max(p + rc, 1e-12)
    delays = [d * r["minutes"] for r in rows for d in r["delays"]]
    delay = f"{np.median(delays):.0f}" if delays else "-"
    return (f"| {name} | {found}/{seg} ({found / max(seg, 1):.1%}) | {false / days:.2f} | {delay} | "
            f"{p:.3f} | {rc:.3f} | {f1:.3f} |")


def pca_scores(train_z, test_z, k=10):
    mu = train_z.mean(axis=0)
    _, _, vt = np.linalg.svd(train_z - mu, full_matrices=False)
    v = vt[:k].T
    def score(z):
        c = z - mu
        r = c - (c @ v) @ v.T
        return (np.minimum(np.abs(r), 10.0) ** 2).mean(axis=1)
    return score(train_z), score(test_z)


def ours(agent, ds, machine, out_dir, keep_learning=False):
    out = out_dir / f"{machine}.csv"
    subprocess.run([agent, "replay", "--format", ds, "--train", datasets.path(machine, "train", ds),
                    "--test", datasets.path(machine, "test", ds), "--out", out]
                   + (["--keep-learning"] if keep_learning else []), check=True,
                   stderr=subprocess.DEVNULL)
    with open(out) as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r["alarm"]) for r in rows], dtype=bool)


def multivariate(agent, ds):
    per_day = datasets.ROWS_PER_DAY[ds]
    machines = datasets.machines(ds)
    data = {}
    for m in machines:
        tr, te = datasets.load(m, "train", ds), datasets.load(m, "test", ds)
        mu, sd = detector.baseline(tr)
        data[m] = (detector.normalise(tr, mu, sd), detector.normalise(te, mu, sd), datasets.labels(m, ds))
    results = {"ours": [], "ours, learning on through the test part": [], "PCA (10 components)": [],
               "random": []}
    rng = np.random.default_rng(1)
    pca = {m: pca_scores(tz, sz) for m, (tz, sz, _) in data.items()}
    t_pca, _, _ = detector.pick_threshold([detector.smooth(pca[m][0]) for m in machines], rows_per_day=per_day)
    rnd = {m: (rng.random(len(tz)), rng.random(len(sz))) for m, (tz, sz, _) in data.items()}
    t_rnd, _, _ = detector.pick_threshold([detector.smooth(rnd[m][0]) for m in machines], rows_per_day=per_day)
    with tempfile.TemporaryDirectory() as d:
        for m in machines:
            _, _, lab = data[m]
            results["ours"].append(metrics(ours(agent, ds, m, pathlib.Path(d)), lab, per_day))
            results["ours, learning on through the test part"].append(
                metrics(ours(agent, ds, m, pathlib.Path(d), keep_learning=True), lab, per_day))
            results["PCA (10 components)"].append(metrics(detector.smooth(pca[m][1]) > t_pca, lab, per_day))
            results["random"].append(metrics(detector.smooth(rnd[m][1]) > t_rnd, lab, per_day))
    rows = sum(len(data[m][2]) for m in machines)
    print(f"{ds.upper()}, {len(machines)} machines, test parts ({rows} rows, {rows / per_day:.1f} machine-days)")
    print()
    print("| detector | events found | false alarms / machine-day | median delay (min) | point precision | point recall | point F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        print(summarise(name, rows))
    print()


def univariate(agent):
    corpus = nab.CORPUS
    with tempfile.TemporaryDirectory() as d:
        out_dir = pathlib.Path(d)
        jobs = []
        for rel in nab.files(corpus):
            out = out_dir / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            jobs.append(subprocess.Popen([agent, "replay", "--format", "nab", "--input", corpus / "data" / rel,
                                          "--out", out], stderr=subprocess.DEVNULL))
            if len(jobs) >= 2:
                if jobs.pop(0).wait() != 0:
                    raise SystemExit("replay failed")
        for j in jobs:
            if j.wait() != 0:
                raise SystemExit("replay failed")
        scores = nab.normalised(nab.read_results(out_dir, corpus), corpus)
    with open(corpus / "reference" / "final_results.json") as f:
        published = json.load(f)
    print(f"NAB v1.1, {len(nab.files(corpus))} files (scored by models/nab.py; others: NAB's published scores)")
    print()
    print("| detector | standard | reward low FP | reward low FN |")
    print("|---|---:|---:|---:|")
    rows = [("**ours (univariate.onnx)**", [scores[p][0] for p in nab.PROFILES])]
    rows += [(k, [v[p] for p in nab.PROFILES]) for k, v in published.items()]
    for name, vals in sorted(rows, key=lambda r: -r[1][0]):
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all", choices=["smd", "asd", "nab", "all"])
    ap.add_argument("--agent", default=str(HERE.parent / "target" / "release" / "understudy-agent"))
    args = ap.parse_args()
    if args.what in ("smd", "all"):
        multivariate(args.agent, "smd")
    if args.what in ("asd", "all"):
        multivariate(args.agent, "asd")
    if args.what in ("nab", "all"):
        univariate(args.agent)


if __name__ == "__main__":
    main()

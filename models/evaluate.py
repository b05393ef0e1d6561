"""Evaluates the host anomaly model on SMD's test halves, beside two baselines run the same way.

    .venv/bin/python models/evaluate.py [--agent target/release/understudy-agent]

Ours: `understudy-agent replay --format smd` for each machine (baseline learned from the
train half only, then the test half streamed row by row through the agent's live code
path), its alarms read back from the CSV. Baselines, scored in Python with the same
normalisation, smoothing and threshold rule (threshold picked on the train halves only):
PCA reconstruction error (10 components fitted per machine on its train half), and random
scores. Reported per detector: event recall (a labelled segment counts as found if any of
its rows alarms; no point-adjust), false alarm events per machine-day (alarm events that
touch no labelled segment), and point-wise precision, recall and F1.
"""

import argparse
import csv
import pathlib
import subprocess
import tempfile

import numpy as np

import detector
import smd

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


def metrics(alarm, labels):
    segs = _runs(labels)
    found = sum(1 for s, e in segs if alarm[s:e + 1].any())
    evs = detector.events(alarm)
    false = sum(1 for s, e in evs if not labels[s:e + 1].any())
    days = len(labels) / 1440
    tp = int((alarm & (labels == 1)).sum())
    fp = int((alarm & (labels == 0)).sum())
    fn = int((~alarm & (labels == 1)).sum())
    return {"segments": len(segs), "found": found, "false_events": false, "days": days,
            "tp": tp, "fp": fp, "fn": fn}


def summarise(name, rows):
    seg = sum(r["segments"] for r in rows)
    found = sum(r["found"] for r in rows)
    false = sum(r["false_events"] for r in rows)
    days = sum(r["days"] for r in rows)
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    p = tp / max(tp + fp, 1)
    rc = tp / max(tp + fn, 1)
    f1 = 2 * p * rc / max(p + rc, 1e-12)
    return (f"| {name} | {found}/{seg} ({found / max(seg, 1):.1%}) | {false / days:.2f} | "
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


def ours(agent, machine, out_dir):
    out = out_dir / f"{machine}.csv"
    subprocess.run([agent, "replay", "--format", "smd", "--train", smd.path(machine, "train"),
                    "--test", smd.path(machine, "test"), "--out", out], check=True)
    with open(out) as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r["alarm"]) for r in rows], dtype=bool)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", default=str(HERE.parent / "target" / "release" / "understudy-agent"))
    args = ap.parse_args()
    machines = smd.machines()
    data = {}
    for m in machines:
        tr, te = smd.load(m, "train"), smd.load(m, "test")
        mu, sd = detector.baseline(tr)
        data[m] = (detector.normalise(tr, mu, sd), detector.normalise(te, mu, sd), smd.labels(m))
    results = {"ours": [], "PCA (10 components)": [], "random": []}
    rng = np.random.default_rng(1)
    pca = {m: pca_scores(tz, sz) for m, (tz, sz, _) in data.items()}
    t_pca, _, _ = detector.pick_threshold([detector.smooth(pca[m][0]) for m in machines])
    rnd = {m: (rng.random(len(tz)), rng.random(len(sz))) for m, (tz, sz, _) in data.items()}
    t_rnd, _, _ = detector.pick_threshold([detector.smooth(rnd[m][0]) for m in machines])
    with tempfile.TemporaryDirectory() as d:
        for m in machines:
            _, _, lab = data[m]
            results["ours"].append(metrics(ours(args.agent, m, pathlib.Path(d)), lab))
            results["PCA (10 components)"].append(metrics(detector.smooth(pca[m][1]) > t_pca, lab))
            results["random"].append(metrics(detector.smooth(rnd[m][1]) > t_rnd, lab))
    print(f"SMD, {len(machines)} machines, test halves ({sum(len(data[m][2]) for m in machines)} rows, "
          f"{sum(len(data[m][2]) for m in machines) / 1440:.1f} machine-days)")
    print()
    print("| detector | events found | false alarms / machine-day | point precision | point recall | point F1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        print(summarise(name, rows))


if __name__ == "__main__":
    main()

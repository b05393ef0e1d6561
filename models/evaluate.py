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

forecast — the resource forecaster: the shipped forecast.onnx (in onnxruntime; tract matches it
within 1e-5, tested) over every window of the SMD test parts (120 samples, the value 300
samples ahead; one-minute steps) and of a 30-minute one-second recording of a live host
(fixtures/live-host-1s.csv: idle, then a build), beside persistence (the newest value) and
the window's mean: mean absolute error of the central estimate, and how often the actual value
is at or under the upper bound (the p90 should cover 90 %), for the shipped, calibrated bound
and for the normal-theory bound it replaced.

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
import forecast
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


def _forecast_rows(series_by_metric, stride):
    """Per metric: (central, upper, actual, newest, window mean) over every window, from the
    shipped model run on all four metrics at once (fs_used, which has no data here, gets a
    copy of mem_u)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(HERE / "forecast.onnx"))
    cols = [series_by_metric[m if m in series_by_metric else forecast.BORROWS[m]]
            for m in forecast.METRICS]
    y = np.stack(cols, axis=0).astype(np.float32)             # [4, n]
    W, H = forecast.WINDOW, forecast.HORIZON
    out = {m: [] for m in series_by_metric}
    for t in range(W - 1, y.shape[1] - H, stride):
        win = y[:, t - W + 1:t + 1]
        c, u = sess.run(["central", "upper"], {"series": win})
        for i, m in enumerate(forecast.METRICS):
            if m in out:
                out[m].append((c[i, 0], u[i, 0], y[i, t + H], win[i, -1], win[i].mean()))
    return {m: np.array(v, dtype=np.float64) for m, v in out.items()}


def _shipped_multipliers():
    """Metric -> the upper-bound multiplier in the shipped forecast.onnx."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(HERE / "forecast.onnx"))
    scale = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "scale")
    return dict(zip(forecast.METRICS, scale.reshape(-1).tolist()))


def forecaster():
    cols = forecast.smd_columns()
    metrics = [m for m in forecast.METRICS if m in cols]
    smd = {m: [] for m in metrics}
    for machine in datasets.machines("smd"):
        rows = datasets.load(machine, "test", "smd")
        for m, r in _forecast_rows({m: rows[:, cols[m]] for m in metrics}, forecast.STRIDE).items():
            smd[m].append(r)
    smd = {m: np.concatenate(v) for m, v in smd.items()}
    with open(HERE / "fixtures" / "live-host-1s.csv") as f:
        live = np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2)
    live = _forecast_rows({m: live[:, i] for i, m in enumerate(["cpu_r", "mem_u", "disk_u"])}, 1)
    _, _, theory = forecast.matrices()
    shipped = _shipped_multipliers()
    print("## Resource forecaster: 300 samples ahead from the newest 120\n")
    print("| data | metric | windows | MAE line (shipped) | MAE newest value | MAE window mean "
          "| p90 coverage, shipped | p90 coverage, normal theory |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, data in (("SMD test (1 min)", smd), ("live host (1 s)", live)):
        for m in metrics:
            r = data[m]
            c, u, a, last, mean = r.T
            half = u - c
            # The normal-theory bound: the same residual spread, the theory's multiplier.
            theory_u = c + half / shipped[m] * theory
            print(f"| {name} | {m} | {len(a)} | {np.abs(c - a).mean():.4f} | "
                  f"{np.abs(last - a).mean():.4f} | {np.abs(mean - a).mean():.4f} | "
                  f"{np.mean(a <= u) * 100:.1f} % | {np.mean(a <= theory_u) * 100:.1f} % |")
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all",
                    choices=["smd", "asd", "nab", "forecast", "all"])
    ap.add_argument("--agent", default=str(HERE.parent / "target" / "release" / "understudy-agent"))
    args = ap.parse_args()
    if args.what in ("smd", "all"):
        multivariate(args.agent, "smd")
    if args.what in ("asd", "all"):
        multivariate(args.agent, "asd")
    if args.what in ("forecast", "all"):
        forecaster()
    if args.what in ("nab", "all"):
        univariate(args.agent)


if __name__ == "__main__":
    main()

"""Evaluates the shipped models through the agent's replay, beside baselines run the same way.

    .venv/bin/python models/evaluate.py [smd|asd|nab|all] [--agent target/release/understudy-agent]

smd / asd — the host anomaly model (anomaly-asd for ASD), held out by machine: see
crossval.py. Each machine goes through `understudy-agent replay --format smd|asd
--keep-learning` (its train part is the warm-up that teaches the baseline and calibrates the
host's own threshold, then its test part is streamed row by row through the agent's live
code path, which goes on learning and calibrating as a live host does), once per
false-alarm target in crossval.GRID; the target reported for a machine is the one chosen on
the other folds' machines. Printed pooled and per machine, beside PCA with a threshold from
the train part and PCA with an oracle threshold. The model's score exponent is the shipped
one; power_grid.py chooses it held out too (the card's headline).

forecast — the resource forecaster: the shipped forecast.onnx (in onnxruntime; tract matches it
within 1e-5, tested) over every window of the SMD test parts (120 samples, the value 300
samples ahead; one-minute steps) and of a 30-minute one-second recording of a live host
(fixtures/live-host-1s.csv: idle, then a build), beside persistence (the newest value) and
the window's mean: mean absolute error of the central estimate, and how often the actual value
is at or under the upper bound (the p90 should cover 90 %), for the shipped, calibrated bound
and for the normal-theory bound it replaced.

nab — the streaming univariate detector. `understudy-agent replay --format nab` over every
corpus file, twice: streaming (`--streaming`: each value judged against the range of the
values before it only, as a live probe must) and by NAB's rules (the file's minimum and
maximum known beforehand, as NAB gives every detector). Scored by models/nab.py (NAB's
published scoring: windows, sigmoid, profiles, probationary period, normalisation against
the null and perfect detectors). Headline: held out by half — the threshold of each profile
chosen on one half of the corpus and the other half scored with it, both ways; with
--nab-results, ARTime's and Numenta HTM's published per-file results are scored on the same
halves the same way. Then the whole corpus under NAB's own rule (the threshold optimised on
the corpus scored), beside NAB's published scores (reference/final_results.json).
"""

import argparse
import json
import pathlib
import subprocess
import tempfile

import numpy as np

import crossval
import datasets
import forecast
import nab

HERE = pathlib.Path(__file__).resolve().parent


def multivariate(agent, ds):
    crossval.report(ds, crossval.evaluate(agent, ds))


def _replay_nab(agent, out_dir, streaming):
    """Runs the agent's replay over every corpus file into out_dir; {rel: scores}."""
    corpus = nab.CORPUS
    jobs = []
    for rel in nab.files(corpus):
        out = out_dir / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [agent, "replay", "--format", "nab", "--input", corpus / "data" / rel, "--out", out]
        jobs.append(subprocess.Popen(cmd + (["--streaming"] if streaming else []),
                                     stderr=subprocess.DEVNULL))
        if len(jobs) >= 2:
            if jobs.pop(0).wait() != 0:
                raise SystemExit("replay failed")
    for j in jobs:
        if j.wait() != 0:
            raise SystemExit("replay failed")
    return nab.read_results(out_dir, corpus)


def univariate(agent, others):
    corpus = nab.CORPUS
    with tempfile.TemporaryDirectory() as d:
        ours = {
            "ours, streaming (range seen so far)": _replay_nab(agent, pathlib.Path(d) / "s", True),
            "ours, NAB's rules (file's range)": _replay_nab(agent, pathlib.Path(d) / "f", False),
        }
    theirs = {}
    if others:
        for name in ("ARTime", "numenta"):
            theirs[name + " (NAB's published results)"] = nab.read_results(pathlib.Path(others) / name, corpus)
    a, b = nab.halves(corpus)
    print(f"NAB v1.1, {len(nab.files(corpus))} files, held out by half ({len(a)} and {len(b)} files,"
          " each category split alternately): the threshold for each profile chosen on one half,"
          " the other half scored with it; scored by models/nab.py")
    print()
    print("| detector | half | standard | reward low FP | reward low FN |")
    print("|---|---|---:|---:|---:|")
    for name, scores in {**ours, **theirs}.items():
        for half, result in nab.held_out(scores, corpus):
            vals = " | ".join(f"{result[p][0]:.2f}" for p in nab.PROFILES)
            print(f"| {name} | {'AB'[half]} (threshold from {'BA'[half]}) | {vals} |")
    if not others:
        print("| (ARTime, numenta: pass --nab-results NAB/results, NAB's repository) | | | | |")
    print()
    with open(corpus / "reference" / "final_results.json") as f:
        published = json.load(f)
    print("Whole corpus, NAB's own rule (each detector's threshold chosen on the whole corpus; "
          "others: NAB's published scores)")
    print()
    print("| detector | standard | reward low FP | reward low FN |")
    print("|---|---:|---:|---:|")
    rows = []
    for name, scores in ours.items():
        whole = nab.normalised(scores, corpus)
        rows.append((f"**{name}**", [whole[p][0] for p in nab.PROFILES]))
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
    ap.add_argument("--nab-results", metavar="DIR",
                    help="nab: NAB's results/ directory (github.com/numenta/NAB), to score ARTime's "
                         "and Numenta HTM's published per-file results on the same halves")
    args = ap.parse_args()
    if args.what in ("smd", "all"):
        multivariate(args.agent, "smd")
    if args.what in ("asd", "all"):
        multivariate(args.agent, "asd")
    if args.what in ("forecast", "all"):
        forecaster()
    if args.what in ("nab", "all"):
        univariate(args.agent, args.nab_results)


if __name__ == "__main__":
    main()

"""The Numenta Anomaly Benchmark corpus and its scoring, implemented from NAB's published rules.

    python3 models/nab.py score RESULTS_DIR [--corpus DIR]

RESULTS_DIR holds one CSV per corpus file at the same relative path (`<category>/<file>.csv`,
optionally prefixed `<detector>_` as NAB's own results are), each with NAB's result layout
`timestamp,value,anomaly_score`. Prints the normalised standard, reward-low-FP and
reward-low-FN scores.

The rules (Lavin & Ahmad 2015; Ahmad et al. 2017; NAB v1.1 `nab/sweeper.py`, `optimizer.py`,
`runner.py`):

- Each labelled anomaly has a window (`labels/combined_windows.json`). A detection inside a
  window scores by its relative position p in [-1, 0) there: 2·sigmoid(-5p) - 1, scaled so
  the left edge is worth the profile's TP weight. Only the best (earliest) detection of a
  window counts; a window with none costs the FN weight.
- A detection outside every window costs the FP weight times the same sigmoid of its
  distance past the end of the preceding window, measured in that window's widths (-1 when
  there is no preceding window or it is more than 3 widths back).
- The first 15 % of each file, at most 750 rows, is the probationary period: not scored.
- One threshold per detector and profile, the one maximising the total over the corpus
  (a row is a detection when its score is at or above it).
- Normalised score = 100 · (S - S_null) / (S_perfect - S_null), where the null detector
  scores 0.5 everywhere and the perfect one detects every window at its left edge.
"""

import argparse
import csv
import datetime
import json
import math
import pathlib

import numpy as np

CORPUS = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "nab"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
PROBATION = 0.15


def _time(s):
    return datetime.datetime.fromisoformat(s.strip())


def files(corpus=CORPUS):
    """Relative paths of the corpus files, in a fixed order."""
    with open(corpus / "labels" / "combined_windows.json") as f:
        return sorted(json.load(f))


def load(rel, corpus=CORPUS):
    """(timestamps, values) of one corpus file."""
    ts, vs = [], []
    with open(corpus / "data" / rel) as f:
        for row in csv.DictReader(f):
            ts.append(_time(row["timestamp"]))
            vs.append(float(row["value"]))
    return ts, np.array(vs)


def windows(corpus=CORPUS):
    with open(corpus / "labels" / "combined_windows.json") as f:
        raw = json.load(f)
    return {k: [(_time(a), _time(b)) for a, b in v] for k, v in raw.items()}


def profiles(corpus=CORPUS):
    with open(corpus / "reference" / "profiles.json") as f:
        raw = json.load(f)
    return {k: raw[k]["CostMatrix"] for k in PROFILES}


def _scaled_sigmoid(pos):
    if pos > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * pos)) - 1.0


def sweep(timestamps, wins, cost, name):
    """Per row: (weighted score if detected there, window id or None, probationary?)."""
    index = {t: i for i, t in enumerate(timestamps)}
    spans = [(index[a], index[b]) for a, b in wins]
    max_tp = _scaled_sigmoid(-1.0)
    n = len(timestamps)
    probation = min(math.floor(PROBATION * n), PROBATION * 5000)
    out = []
    cur, prev = None, None
    k = 0
    for i in range(n):
        if cur is None and k < len(spans) and i == spans[k][0]:
            cur = spans[k]
            k += 1
        if cur is not None:
            width = cur[1] - cur[0] + 1
            score = _scaled_sigmoid(-(cur[1] - i + 1) / width) * cost["tpWeight"] / max_tp
            win = f"{name}|{cur[0]}"
        else:
            if prev is None:
                unweighted = -1.0
            else:
                unweighted = _scaled_sigmoid(abs(prev[1] - i) / float(prev[1] - prev[0]))
            score = unweighted * cost["fpWeight"]
            win = None
        out.append((score, win, i < probation))
        if cur is not None and i == cur[1]:
            prev, cur = cur, None
    return out


def best_threshold(rows, cost):
    """rows: (anomaly score, sweep score, window) over the whole corpus, probation excluded.
    Returns (best total, its threshold)."""
    parts = {}
    for _, _, win in rows:
        if win is not None:
            parts[win] = -cost["fnWeight"]
    fn_total = sum(parts.values())
    fp_total = 0.0
    best = (fn_total, 1.1)
    rows = sorted(rows, key=lambda r: -r[0])
    i = 0
    while i < len(rows):
        level = rows[i][0]
        while i < len(rows) and rows[i][0] == level:
            _, s, win = rows[i]
            if win is None:
                fp_total += s
            elif s > parts[win]:
                fn_total += s - parts[win]
                parts[win] = s
            i += 1
        total = fp_total + fn_total
        if total > best[0]:
            best = (total, level)
    return best


def total_at(rows, cost, threshold):
    """The raw total of rows (as for best_threshold) when a row is a detection at or above
    `threshold`."""
    parts = {}
    fp_total = 0.0
    for a, s, win in rows:
        if win is not None:
            best = parts.setdefault(win, -cost["fnWeight"])
            if a >= threshold and s > best:
                parts[win] = s
        elif a >= threshold:
            fp_total += s
    return fp_total + sum(parts.values())


def scored_rows(scores_by_file, cost, corpus=CORPUS):
    """(anomaly score, sweep score, window) of every scored row of the files, probation left
    out."""
    wins = windows(corpus)
    rows = []
    for rel, scores in scores_by_file.items():
        ts, _ = load(rel, corpus) if rel not in _TS else (_TS[rel], None)
        _TS[rel] = ts
        if len(ts) != len(scores):
            raise ValueError(f"{rel}: {len(scores)} scores for {len(ts)} rows")
        for a, (s, win, prob) in zip(scores, sweep(ts, wins[rel], cost, rel)):
            if not prob:
                rows.append((float(a), s, win))
    return rows


def raw_scores(scores_by_file, corpus=CORPUS):
    """{profile: (best raw total, threshold)} for {rel: anomaly score array}."""
    return {profile: best_threshold(scored_rows(scores_by_file, cost, corpus), cost)
            for profile, cost in profiles(corpus).items()}


_TS = {}


def normalised(scores_by_file, corpus=CORPUS):
    """{profile: (normalised score, threshold)}."""
    ours = raw_scores(scores_by_file, corpus)
    null = raw_scores({rel: np.full(len(s), 0.5) for rel, s in scores_by_file.items()}, corpus)
    n_windows = sum(len(windows(corpus)[rel]) for rel in scores_by_file)
    out = {}
    for profile, cost in profiles(corpus).items():
        perfect = n_windows * cost["tpWeight"]
        base = null[profile][0]
        out[profile] = (100.0 * (ours[profile][0] - base) / (perfect - base), ours[profile][1])
    return out


def halves(corpus=CORPUS):
    """The corpus in two halves, each with about half of every category's files: within a
    category, the files in name order go alternately to half 0 and half 1."""
    out = ([], [])
    by_cat = {}
    for rel in files(corpus):
        by_cat.setdefault(rel.split("/")[0], []).append(rel)
    for rels in by_cat.values():
        for i, rel in enumerate(rels):
            out[i % 2].append(rel)
    return out


def held_out(scores_by_file, corpus=CORPUS):
    """Each half scored with the threshold chosen on the other: [(half, {profile:
    (normalised score on that half, the threshold chosen on the other half)})] for halves 0
    and 1, normalised against the null and perfect detectors on the half scored."""
    parts = halves(corpus)
    wins = windows(corpus)
    out = []
    for scored, chosen in ((0, 1), (1, 0)):
        mine = {rel: scores_by_file[rel] for rel in parts[scored]}
        tuning = {rel: scores_by_file[rel] for rel in parts[chosen]}
        null = raw_scores({rel: np.full(len(s), 0.5) for rel, s in mine.items()}, corpus)
        n_windows = sum(len(wins[rel]) for rel in mine)
        result = {}
        for profile, cost in profiles(corpus).items():
            _, threshold = best_threshold(scored_rows(tuning, cost, corpus), cost)
            total = total_at(scored_rows(mine, cost, corpus), cost, threshold)
            perfect, base = n_windows * cost["tpWeight"], null[profile][0]
            result[profile] = (100.0 * (total - base) / (perfect - base), threshold)
        out.append((scored, result))
    return out


def read_results(directory, corpus=CORPUS):
    """{rel: scores} from a results directory (NAB layout, optional `<detector>_` prefix)."""
    directory = pathlib.Path(directory)
    out = {}
    for rel in files(corpus):
        cat, name = rel.split("/")
        hits = [p for p in (directory / cat).glob(f"*{name}") if p.name == name or p.name.endswith("_" + name)]
        if len(hits) != 1:
            raise FileNotFoundError(f"{directory / cat}: expected one result file for {name}, found {len(hits)}")
        with open(hits[0]) as f:
            out[rel] = np.array([float(r["anomaly_score"]) for r in csv.DictReader(f)])
    return out


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("results")
    s.add_argument("--corpus", default=str(CORPUS))
    args = ap.parse_args()
    corpus = pathlib.Path(args.corpus)
    scores = normalised(read_results(args.results, corpus), corpus)
    for profile in PROFILES:
        value, threshold = scores[profile]
        print(f"{profile:20} {value:7.2f}  (threshold {threshold:.6g})")


if __name__ == "__main__":
    main()

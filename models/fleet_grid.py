"""Whether the fleet sees what one host cannot: coincident unusual scores as a second alarm.

    .venv/bin/python models/fleet_grid.py smd|asd [--agent target/release/understudy-agent]

The machines of each set share incidents on one time axis: the script first counts the
labelled events that overlap an event on another machine of the set, against the same count
with the other machines' labels shifted (what chance alone gives). A host cannot use that;
the coordinator, which receives every host's anomaly percentile, could. So it replays every
machine through the agent (crossval.replay_rows, the shipped model) for each target in
crossval.GRID, derives each host's percentile as the agent does (the share of its smoothed
scores in the calibration window before the row that lie below it), and adds a fleet alarm
on a host at every row where its own percentile is at or above Q while at least K other hosts'
were at or above Q within the last LAG rows. The target, Q, K and LAG are chosen together for
each fold on the other folds (crossval's rule: the most events with at most one false alarm
per machine-day on every machine), and the held-out figure is printed beside the host's own
alarms alone with only the target chosen: the anomaly card's "fleet coincidence".
"""

import re
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import crossval
import datasets

QS = (95.0, 98.0, 99.0, 99.5, 99.8)
KS = (1, 2, 3, 4, 6)
LAGS = (0, 5)
SHIFTS = (3000, 7000, 11000)


def shared_events(ds, machines, shift=0):
    """Labelled events overlapping one on another machine (its labels shifted by `shift`)."""
    labels = {m: datasets.labels(m, ds) for m in machines}
    segs = {m: crossval._segments(labels[m]) for m in machines}
    shared = 0
    for m in machines:
        for s, e in segs[m]:
            shared += any(np.roll(labels[o], shift)[s:e + 1].any() for o in machines if o != m)
    return shared, sum(len(v) for v in segs.values())


def window_rows(ds):
    """The calibration window, rows: the manifest's calibration_days at the set's cadence."""
    name = "anomaly.toml" if ds == "smd" else "anomaly-asd.toml"
    text = (crossval.pathlib.Path(__file__).resolve().parent / name).read_text()
    days = float(re.search(r"^calibration_days = ([0-9.]+)$", text, re.M).group(1))
    return int(days * datasets.ROWS_PER_DAY[ds])


def percentiles(smoothed, window):
    """Each row's percentile among the `window` smoothed scores before it (50 for the first)."""
    out = np.full(len(smoothed), 50.0)
    for t in range(1, len(smoothed)):
        out[t] = 100.0 * (smoothed[max(0, t - window):t] < smoothed[t]).mean()
    return out


def recent(high, lag):
    """Whether `high` held at the row or within the `lag` rows before it."""
    out = high.copy()
    for i in range(1, lag + 1):
        out[i:] |= high[:-i]
    return out


def grid(agent, ds, machines):
    """{(machine, (target, q, k, lag)): crossval.score_alarms result}; q None: own alarms only."""
    per_day = datasets.ROWS_PER_DAY[ds]
    window = window_rows(ds)
    labels = {m: datasets.labels(m, ds) for m in machines}
    with tempfile.TemporaryDirectory() as d, ThreadPoolExecutor(2) as pool:
        jobs = {(m, t): pool.submit(crossval.replay_rows, agent, ds, m, d, t, True)
                for m in machines for t in crossval.GRID}
        rows = {key: job.result() for key, job in jobs.items()}
    results = {}
    for t in crossval.GRID:
        n = min(len(rows[(m, t)][0]) for m in machines)
        pct = {m: percentiles(rows[(m, t)][0][:n], window) for m in machines}
        for m in machines:
            results[(m, (t, None, None, None))] = crossval.score_alarms(
                rows[(m, t)][1], labels[m], per_day)
        for q in QS:
            high = {m: pct[m] >= q for m in machines}
            for lag in LAGS:
                peers_high = {m: recent(high[m], lag) for m in machines}
                for k in KS:
                    for m in machines:
                        peers = np.sum([peers_high[o] for o in machines if o != m], axis=0)
                        alarm = rows[(m, t)][1].copy()
                        alarm[:n] |= high[m] & (peers >= k)
                        results[(m, (t, q, k, lag))] = crossval.score_alarms(
                            alarm, labels[m], per_day)
    return results


def choose(results, machines, settings):
    """The setting finding most events on `machines` with every one at or under the limit."""
    fine = [s for s in settings if all(
        results[(m, s)]["false"] / results[(m, s)]["days"] <= crossval.MAX_FALSE_PER_DAY
        for m in machines)] or [(min(crossval.GRID), None, None, None)]
    return max(fine, key=lambda s: (
        crossval.pooled([results[(m, s)] for m in machines])["recall"], -s[0]))


def held_out(results, machines, folds, settings):
    """Each fold's machines with the setting chosen on the other folds, pooled."""
    held = {}
    for fold in folds:
        s = choose(results, [m for m in machines if m not in fold], settings)
        print(f"  fold {', '.join(fold)}: chose target {s[0]}, q {s[1]}, k {s[2]}, lag {s[3]}")
        held.update({m: results[(m, s)] for m in fold})
    return crossval.pooled(list(held.values()))


def main():
    a = crossval.arguments(__doc__.splitlines()[0])
    folds = crossval.folds(a.ds)
    machines = [m for f in folds for m in f]
    shared, total = shared_events(a.ds, machines)
    chance = [shared_events(a.ds, machines, s)[0] for s in SHIFTS]
    print(f"{a.ds.upper()}: {shared}/{total} labelled events overlap one on another machine; "
          f"with the others' labels shifted by {SHIFTS} rows: {chance}")
    results = grid(a.agent, a.ds, machines)
    own = [(t, None, None, None) for t in crossval.GRID]
    fleet = own + [(t, q, k, lag) for t in crossval.GRID for q in QS for k in KS for lag in LAGS]
    for name, settings in (("own alarms only", own), ("with fleet coincidence", fleet)):
        print(f"{name}:")
        h = held_out(results, machines, folds, settings)
        print(f"{a.ds.upper()} held out, {name}: {h['found']}/{h['segments']} "
              f"({h['recall']:.1%}), {h['fa']:.2f} false alarms a day, worst machine {h['worst']:.2f}")
        s = choose(results, machines, settings)
        b = crossval.pooled([results[(m, s)] for m in machines])
        print(f"  in sample (target {s[0]}, q {s[1]}, k {s[2]}, lag {s[3]}, chosen on every "
              f"machine): {b['found']}/{b['segments']} ({b['recall']:.1%}), {b['fa']:.2f} a day, "
              f"worst machine {b['worst']:.2f}")


if __name__ == "__main__":
    main()

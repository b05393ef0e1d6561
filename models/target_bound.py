"""How much a per-machine false-alarm target could give, as a bound (the anomaly card's).

    .venv/bin/python models/target_bound.py smd|asd [--agent target/release/understudy-agent]

Replays every machine through the agent (crossval.replay, the shipped model) for each target in
TARGETS and picks, for each machine, the target that finds the most of its labelled events
with at most one false alarm a day on it: a choice made with the machine's own test labels,
which no host has. The sum over machines bounds what any way of setting one host's target
from its own data could find with this score; the card compares it with the held-out figure
to tell a gap in the threshold from a gap in the score.
"""

import crossval

TARGETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def best_target(per_target):
    """(target, result) finding most events within the false-alarm limit, or None."""
    fine = [(t, r) for t, r in per_target.items()
            if r["false"] / r["days"] <= crossval.MAX_FALSE_PER_DAY]
    return max(fine, key=lambda c: (c[1]["found"], -c[0]), default=None)


def main():
    a = crossval.arguments(__doc__.splitlines()[0])
    machines, results = crossval.replay_all(a.agent, a.ds, TARGETS)
    found = segments = 0
    for m in machines:
        per_target = {t: results[(m, t)] for t in TARGETS}
        pick = best_target(per_target)
        segments += per_target[TARGETS[0]]["segments"]
        if pick is None:
            print(f"  {m}: no target keeps it at or under one false alarm a day")
            continue
        t, best = pick
        found += best["found"]
        print(f"  {m}: target {t} a day finds {best['found']}/{best['segments']} at "
              f"{best['false'] / best['days']:.2f} false alarms a day")
    print(f"{a.ds.upper()} with each machine's target chosen on its own test labels (a bound): "
          f"{found}/{segments} ({found / segments:.1%})")


if __name__ == "__main__":
    main()

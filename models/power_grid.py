"""Chooses the host anomaly score's exponent held out by machine, with the target rate.

    .venv/bin/python models/power_grid.py smd|asd [--agent target/release/understudy-agent]

The score is the power mean (mean of c^p)^(1/p) of the metrics' squared whitened errors c
(train.py SCORE_POWER). For each p in POWERS this exports the model with that exponent into a
scratch copy of models/ (everything else as shipped), replays every machine through the
agent for every target in crossval.GRID (crossval.evaluate), and then, for each fold, chooses
p and the target together on the other folds' machines (the most events found with at most
one false alarm per machine-day on every one of them) and reports the fold with them: the
anomaly card's headline. Also printed: each p with only the target chosen held out.
"""

import hashlib
import pathlib
import re
import shutil
import tempfile

import crossval
import train

HERE = pathlib.Path(__file__).resolve().parent
POWERS = (0.25, 0.5, 0.625, 0.75, 1.0)


def models_with(power, name, into):
    """A copy of models/ whose `name` model scores with exponent `power`."""
    shutil.copytree(HERE, into, ignore=shutil.ignore_patterns(
        ".venv", "fixtures", "cards", "*.py", "__pycache__"))
    manifest = into / f"{name}.toml"
    text = manifest.read_text()
    features = int(re.search(r"^features = (\d+)$", text, re.M).group(1))
    onnx_path = into / f"{name}.onnx"
    train.export(features, power, onnx_path)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    manifest.write_text(re.sub(r'^sha256 = ".*"$', f'sha256 = "{sha}"', text, flags=re.M))


def grid(agent, ds):
    """{(machine, p, target): crossval.score_alarms result}, the folds and the machines."""
    name = "anomaly" if ds == "smd" else "anomaly-asd"
    results = {}
    for p in POWERS:
        with tempfile.TemporaryDirectory() as d:
            d = pathlib.Path(d)
            models_with(p, name, d / "models")
            wrapper = d / "agent"
            wrapper.write_text(f'#!/bin/sh\nexec {agent} "$@" --models {d / "models"}\n')
            wrapper.chmod(0o755)
            r = crossval.evaluate(str(wrapper), ds)
        for t in crossval.GRID:
            for m in r["machines"]:
                results[(m, p, t)] = r["grid"][t][m]
        held = crossval.pooled(list(r["held"].values()))
        print(f"p = {p}: target chosen held out {held['found']}/{held['segments']} "
              f"({held['recall']:.1%}), {held['fa']:.2f} false alarms a day, worst {held['worst']:.2f}",
              flush=True)
    return results, r["folds"], r["machines"]


def nested(results, folds, machines):
    """Each fold with the (p, target) chosen on the other folds: ({machine: result}, choices)."""
    def fine(p, t, ms):
        return all(results[(m, p, t)]["false"] / results[(m, p, t)]["days"]
                   <= crossval.MAX_FALSE_PER_DAY for m in ms)
    held, chosen = {}, []
    for fold in folds:
        rest = [m for m in machines if m not in fold]
        options = [(p, t) for p in POWERS for t in crossval.GRID if fine(p, t, rest)] \
            or [(1.0, min(crossval.GRID))]
        p, t = max(options, key=lambda c: (
            crossval.pooled([results[(m, c[0], c[1])] for m in rest])["recall"], -c[1]))
        chosen.append((fold, p, t))
        held.update({m: results[(m, p, t)] for m in fold})
    return held, chosen


def main():
    a = crossval.arguments(__doc__.splitlines()[0])
    results, folds, machines = grid(a.agent, a.ds)
    held, chosen = nested(results, folds, machines)
    for fold, p, t in chosen:
        print(f"fold {', '.join(fold)}: p = {p}, target {t} a day (chosen on the other folds)")
    h = crossval.pooled(list(held.values()))
    print(f"{a.ds.upper()} held out, p and target chosen on the other folds: "
          f"{h['found']}/{h['segments']} ({h['recall']:.1%}), {h['fa']:.2f} false alarms a day, "
          f"worst machine {h['worst']:.2f}, median delay {h['delay']:.0f} min")
    for m in machines:
        r = held[m]
        print(f"  {m}: {r['found']}/{r['segments']}, {r['false'] / r['days']:.2f} a day")


if __name__ == "__main__":
    main()

"""Exports the streaming univariate detector's model (models/univariate.onnx).

    .venv/bin/python models/univariate.py

The detector (agent/src/predict/univariate.rs) watches one series — a probe's latency, an
error rate, any metric — and scores each new value by how unlike everything it has seen
recently the newest stretch of the series is:

- At two time scales it keeps the newest MEMORY patterns: the last 3 values, and the last
  64 values averaged into 4 buckets of 16. Patterns that overlap the current one (the newest
  4 at the short scale, the newest 64 at the long one) are left out.
- When the values come with their times, a third, seasonal scale takes the last 96 values
  minus their usual value at that time of day (the median, over the last 7 days, of the
  mean within 10 minutes of the same time; from the second day on), averaged into 3
  buckets of 32, and its distance is weighed by SEASONAL_WEIGHT: a value ordinary at noon
  but not at 3 a.m. stands out.
- The model takes, per scale, the current pattern and the memory, all divided by the range
  of values seen so far (or, when the series' range is known beforehand, as NAB tells every
  detector its file's minimum and maximum, by the geometric mean of that range and the range
  seen so far), and returns the root-mean-square distance to the nearest pattern in memory
  (nearest-neighbour novelty). While the range is learned online, the unit is at least
  SPAN_FLOOR times the mean absolute value seen so far, so a series that has barely moved
  around its level is not judged against that small range.
- The agent combines the scales' distances as the root of their sum of squares and turns
  that into a score in [0, 1] (distance / SCALE, capped),
  and after a score at or above REST_LEVEL reports 0 for the next REST steps, so a short
  episode raises one alarm (a long one, on a young series, one a rest); on a longer series the rest grows to REST_PER_SEEN of the values
  seen so far, up to REST_MAX (NAB's contextOSE rule, a fifth of a probationary period of 15 %
  of the file, with the values seen so far in place of the file's length). Within
  CONFIRM_WITHIN values of the last alarm, a score that high raises another only when the
  value before it scored that high too (one novel value soon after an episode is most often
  the same episode). NAB replay rests a fifth of NAB's probationary period of the file
  instead (at most 750 steps) and raises every alarm at once.

Nothing is fitted by gradient descent: the parameters (pattern lengths, memory, SCALE, REST,
REST_LEVEL, CONFIRM_WITHIN, SPAN_FLOOR, the range rule) were chosen by a small grid search on the NAB corpus itself, as
NAB's published detectors were tuned on it; see cards/univariate.md. Writes univariate.onnx, univariate.toml and
fixtures/univariate-parity.json (onnxruntime outputs on fixed inputs).
"""

import hashlib
import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

HERE = pathlib.Path(__file__).resolve().parent
MEMORY = 2000
WIDTH = 4                          # input columns; shorter patterns are zero-padded
# (values per pattern, values averaged per bucket, newest patterns excluded as overlapping)
SCALES = [(3, 1, 4), (4, 16, 64)]
# The seasonal scale: the same kind of pattern over the series minus its usual value at this
# time of day (SEASONAL_PROFILE, see the docstring), its distance weighed by SEASONAL_WEIGHT.
SEASONAL = (3, 32, 128)
SEASONAL_WEIGHT = 0.4
SEASONAL_PROFILE = dict(period=86400, slot=300, days=7, min_days=2, smooth=2)
SCALE = 0.5
REST = 30
REST_PER_SEEN = 0.03
REST_MAX = 750
REST_LEVEL = 0.153
CONFIRM_WITHIN = 600
MIN_MEMORY = 50
SPAN_FLOOR = 0.5
SENTINEL = 1.0e6                   # an empty memory row: far from every normalised pattern


def build():
    n = len(SCALES) + 1
    windows = helper.make_tensor_value_info("windows", TensorProto.FLOAT, [n, MEMORY + 1, WIDTH])
    distance = helper.make_tensor_value_info("distance", TensorProto.FLOAT, [n, 1])
    # mean over the real columns (the seasonal scale's weighed, under the root)
    weights = np.array([[1.0 / w] for w, _, _ in SCALES]
                       + [[SEASONAL_WEIGHT ** 2 / SEASONAL[0]]], np.float32)
    init = [
        numpy_helper.from_array(np.array([0], np.int64), "p_start"),
        numpy_helper.from_array(np.array([1], np.int64), "p_end"),
        numpy_helper.from_array(np.array([MEMORY + 1], np.int64), "m_end"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(weights, "weights"),
    ]
    nodes = [
        helper.make_node("Slice", ["windows", "p_start", "p_end", "axis1"], ["pattern"]),
        helper.make_node("Slice", ["windows", "p_end", "m_end", "axis1"], ["memory"]),
        helper.make_node("Sub", ["memory", "pattern"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axis2"], ["ss"], keepdims=0),
        helper.make_node("Mul", ["ss", "weights"], ["ms"]),
        helper.make_node("ReduceMin", ["ms"], ["nearest"], axes=[1], keepdims=1),
        helper.make_node("Sqrt", ["nearest"], ["distance"]),
    ]
    graph = helper.make_graph(nodes, "understudy_univariate", [windows], [distance], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="understudy models/univariate.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    model = build()
    path = HERE / "univariate.onnx"
    onnx.save(model, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    seasonal_profile = "\n".join(f"{k} = {v}" for k, v in SEASONAL_PROFILE.items())
    scales = ", ".join(f"{{ values = {w}, bucket = {k}, exclude = {e} }}" for w, k, e in SCALES)
    (HERE / "univariate.toml").write_text(f"""# Written by models/univariate.py; see models/cards/univariate.md.
file = "univariate.onnx"
sha256 = "{sha}"
# Input [scales, memory + 1, width]: per scale the current pattern, then the memory, each
# divided by the range of values seen so far; shorter patterns are zero-padded to width.
memory = {MEMORY}
width = {WIDTH}
scales = [{scales}]
# An empty memory row holds this value in every column.
sentinel = {SENTINEL}
# score = min(1, root of the sum of the scales' squared distances / scale)
scale = {SCALE}
# After a score >= rest_level, report 0 for the next `rest` steps, or `rest_per_seen` of the
# values seen so far when that is more, at most `rest_max`.
rest = {REST}
rest_per_seen = {REST_PER_SEEN}
rest_max = {REST_MAX}
rest_level = {REST_LEVEL}
# A score >= rest_level within `confirm_within` values of the last alarm raises another only
# when the value before it scored that high too.
confirm_within = {CONFIRM_WITHIN}
# While the range is learned online (not known beforehand), the unit distances are measured
# in is at least `span_floor` times the mean absolute value seen so far.
span_floor = {SPAN_FLOOR}
# No score until this many patterns are remembered at a scale.
min_memory = {MIN_MEMORY}

# The seasonal scale, last in the input: patterns of the series minus its usual value at
# this time of day (needs timestamps). The usual value at time t is the median, over the
# last `days` days (at least `min_days`), of the mean of the values within `smooth` slots
# of `slot` seconds of t minus that many days. The model weighs this scale's distance by
# {SEASONAL_WEIGHT}.
[seasonal]
{seasonal_profile}
values = {SEASONAL[0]}
bucket = {SEASONAL[1]}
exclude = {SEASONAL[2]}
""")
    rng = np.random.default_rng(5)
    sess = ort.InferenceSession(str(path))
    cases = []
    for filled in (MEMORY, 100):
        x = np.round(rng.random((len(SCALES) + 1, MEMORY + 1, WIDTH)), 3).astype(np.float32)
        x[0, :, 3] = 0.0
        x[:, 1 + filled:, :] = SENTINEL
        (d,) = sess.run(["distance"], {"windows": x})
        cases.append({"windows": [round(float(v), 3) for v in x.reshape(-1)],
                      "distance": d.reshape(-1).tolist()})
    (HERE / "fixtures" / "univariate-parity.json").write_text(json.dumps({"cases": cases}))
    print(f"univariate.onnx: memory {MEMORY}, scales {SCALES} + seasonal {SEASONAL}, sha256 {sha}")


if __name__ == "__main__":
    main()

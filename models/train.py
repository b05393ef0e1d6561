"""Trains the multivariate host anomaly model on SMD's train halves and exports it; then the
same recipe on ASD's train parts for the ASD replay.

    python3 -m venv .venv && .venv/bin/pip install -r models/requirements.txt
    .venv/bin/python models/train.py

The model scores the newest normalised sample two ways and adds them, per feature:
- its error against a prediction from the LAGS samples before it (a linear vector
  autoregression, ridge-regularised): sudden breaks in how metrics move together;
- its distance from the normal subspace (the top COMPONENTS principal directions of normal
  samples): shifts that persist, which the autoregression soon learns to predict.
Both are fitted on all machines' train halves pooled (normalisation is per host, so one
model serves every host). Errors are clipped and squared; the score is their mean over
features, and the per-feature terms are the "top contributing metrics".
Writes models/anomaly.onnx, models/anomaly.toml (SHA-256, shapes, threshold and the
detector parameters) and models/fixtures/anomaly-parity.json (onnxruntime outputs on fixed
inputs, which the agent's tests compare tract against). ASD's 19 metrics are unnamed, so its
model (anomaly-asd.onnx/.toml) serves `understudy-agent replay --format asd` only.
"""

import hashlib
import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

import detector
import features
import datasets

HERE = pathlib.Path(__file__).resolve().parent
LAGS = 4
COMPONENTS = 10
RIDGE = 1.0
RESIDUAL_CLIP = 10.0


def lagged(z):
    """Rows of [z_{t-LAGS} .. z_{t-1}] flattened, and z_t."""
    n = len(z)
    hist = np.stack([z[i:n - LAGS + i] for i in range(LAGS)], axis=1)  # [n-L, L, d]
    return hist.reshape(n - LAGS, LAGS * z.shape[1]), z[LAGS:]


def fit(trains):
    N_FEATURES = trains[0].shape[1]
    xtx = np.zeros((LAGS * N_FEATURES + 1,) * 2)
    xty = np.zeros((LAGS * N_FEATURES + 1, N_FEATURES))
    for z in trains:
        h, y = lagged(z)
        h1 = np.hstack([h, np.ones((len(h), 1))])
        xtx += h1.T @ h1
        xty += h1.T @ y
    reg = RIDGE * np.eye(len(xtx))
    reg[-1, -1] = 0.0
    wb = np.linalg.solve(xtx + reg, xty)
    return wb[:-1].astype(np.float32), wb[-1].astype(np.float32)


def fit_subspace(trains):
    N_FEATURES = trains[0].shape[1]
    z = np.concatenate(trains)
    _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    v = vt[:COMPONENTS].T
    # Residual projector: (I - V V^T), applied to the sample as it is (the mean is ~0 after
    # per-host normalisation).
    return (np.eye(N_FEATURES) - v @ v.T).astype(np.float32)


def scores(z, w, b, p):
    h, y = lagged(z)
    r = np.minimum(np.abs(y - (h @ w + b)), RESIDUAL_CLIP)
    q = np.minimum(np.abs(y @ p), RESIDUAL_CLIP)
    s = (r * r + q * q).mean(axis=1)
    return np.concatenate([np.zeros(LAGS), s])


def export(w, b, p, path):
    N_FEATURES = p.shape[0]
    window = helper.make_tensor_value_info("window", TensorProto.FLOAT, [1, LAGS + 1, N_FEATURES])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])
    contrib = helper.make_tensor_value_info("contrib", TensorProto.FLOAT, [1, N_FEATURES])
    init = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(p, "P"),
        numpy_helper.from_array(np.array([0, 0, 0], np.int64), "s0"),
        numpy_helper.from_array(np.array([1, LAGS, N_FEATURES], np.int64), "e0"),
        numpy_helper.from_array(np.array([0, LAGS, 0], np.int64), "s1"),
        numpy_helper.from_array(np.array([1, LAGS + 1, N_FEATURES], np.int64), "e1"),
        numpy_helper.from_array(np.array([1, LAGS * N_FEATURES], np.int64), "hshape"),
        numpy_helper.from_array(np.array([1, N_FEATURES], np.int64), "cshape"),
        numpy_helper.from_array(np.array(RESIDUAL_CLIP, np.float32), "clip"),
    ]
    nodes = [
        helper.make_node("Slice", ["window", "s0", "e0"], ["hist3"]),
        helper.make_node("Reshape", ["hist3", "hshape"], ["hist"]),
        helper.make_node("Slice", ["window", "s1", "e1"], ["cur3"]),
        helper.make_node("Reshape", ["cur3", "cshape"], ["cur"]),
        helper.make_node("MatMul", ["hist", "W"], ["pw"]),
        helper.make_node("Add", ["pw", "b"], ["pred"]),
        helper.make_node("Sub", ["cur", "pred"], ["res"]),
        helper.make_node("Abs", ["res"], ["ares"]),
        helper.make_node("Min", ["ares", "clip"], ["cres"]),
        helper.make_node("Mul", ["cres", "cres"], ["var_term"]),
        helper.make_node("MatMul", ["cur", "P"], ["off"]),
        helper.make_node("Abs", ["off"], ["aoff"]),
        helper.make_node("Min", ["aoff", "clip"], ["coff"]),
        helper.make_node("Mul", ["coff", "coff"], ["sub_term"]),
        helper.make_node("Add", ["var_term", "sub_term"], ["contrib"]),
        helper.make_node("ReduceMean", ["contrib"], ["score"], axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(nodes, "understudy_host_anomaly", [window], [score, contrib], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="understudy models/train.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def train(ds, name, rows_per_day, describe):
    machines = datasets.machines(ds)
    trains = []
    for m in machines:
        x = datasets.load(m, "train", ds)
        mu, sd = detector.baseline(x)
        trains.append(detector.normalise(x, mu, sd))
    n_features = trains[0].shape[1]
    w, b = fit(trains)
    p = fit_subspace(trains)
    smoothed = [detector.smooth(scores(z, w, b, p)) for z in trains]
    threshold, q, fa = detector.pick_threshold(smoothed, rows_per_day=rows_per_day)
    onnx_path = HERE / f"{name}.onnx"
    export(w, b, p, onnx_path)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (HERE / f"{name}.toml").write_text(f"""# Written by models/train.py; see models/cards/anomaly.md.
file = "{name}.onnx"
sha256 = "{sha}"
# Input: LAGS + 1 normalised samples of {describe}.
input_shape = [1, {LAGS + 1}, {n_features}]
features = {n_features}
outputs = ["score", "contrib"]
# Alarm when the smoothed score exceeds this (train quantile {q}: {fa:.2f} alarm events per
# machine-day on the train halves).
threshold = {threshold:.6f}
ema_alpha = {detector.EMA_ALPHA}
z_clip = {detector.Z_CLIP}
std_floor_rel = {detector.STD_FLOOR_REL}
merge_gap = {detector.MERGE_GAP}
""")
    # Parity fixture: onnxruntime's outputs on fixed inputs.
    rng = np.random.default_rng(7)
    inputs = (rng.standard_normal((8, 1, LAGS + 1, n_features)) * 3).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path))
    cases = []
    for x in inputs:
        s, c = sess.run(["score", "contrib"], {"window": x})
        cases.append({"window": x.reshape(-1).tolist(), "score": float(s[0, 0]), "contrib": c.reshape(-1).tolist()})
    (HERE / "fixtures").mkdir(exist_ok=True)
    (HERE / "fixtures" / f"{name}-parity.json").write_text(json.dumps({"cases": cases}))
    print(f"{name}: trained on {len(machines)} {ds.upper()} machines ({sum(len(z) for z in trains)} rows); "
          f"threshold {threshold:.4f} (train quantile {q}, {fa:.2f} alarm events/machine-day on train); sha256 {sha}")


def main():
    schema = features.load()
    assert [m.get("smd_column") for m in schema["metric"][:38]] == list(range(1, 39))
    train("smd", "anomaly", datasets.ROWS_PER_DAY["smd"], "the schema's first 38 metrics (the SMD columns)")
    train("asd", "anomaly-asd", datasets.ROWS_PER_DAY["asd"], "ASD's 19 (unnamed) metrics")


if __name__ == "__main__":
    main()

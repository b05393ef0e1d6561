"""Builds the short-horizon resource forecaster (models/forecast.onnx).

    .venv/bin/python models/forecast.py

For each resource series (the newest WINDOW samples of mem_u, cpu_r, disk_u and fs_used, one per
second), a least-squares line through the window extrapolated HORIZON steps ahead gives the
central estimate. The upper bound adds K times the line's residual root-sum-of-squares, with one
K per metric calibrated on real telemetry: on the SMD train parts (the same window and horizon
in samples), K is the 90th percentile of (actual - central) / rss, so the bound is a p90 that
holds on real hosts' data rather than under an independent-normal-noise assumption (which
covered only 53-66 % for CPU and memory). fs_used has no SMD column and takes mem_u's K.
Every step is a fixed linear map of the window plus a square root. Writes forecast.onnx,
forecast.toml and fixtures/forecast-parity.json (onnxruntime outputs on fixed inputs).
"""

import hashlib
import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

import datasets
import features

HERE = pathlib.Path(__file__).resolve().parent
WINDOW = 120
HORIZON = 300
METRICS = ["mem_u", "cpu_r", "disk_u", "fs_used"]
Z90 = 1.2815516
Z_QUANTILE = 0.9


# Metrics without an SMD column borrow another's calibration.
BORROWS = {"fs_used": "mem_u"}
# Windows start every STRIDE rows when calibrating (neighbouring windows overlap anyway).
STRIDE = 10


def matrices():
    """(central weights [W], residual projection [W, W], the normal-theory p90 multiplier)."""
    t = np.arange(WINDOW, dtype=np.float64)
    x = np.stack([np.ones(WINDOW), t], axis=1)
    xtx_inv = np.linalg.inv(x.T @ x)
    hat = x @ xtx_inv @ x.T
    x0 = np.array([1.0, WINDOW - 1 + HORIZON])
    central = x0 @ xtx_inv @ x.T                      # [W]
    resid = np.eye(WINDOW) - hat                       # r = resid @ y
    k = np.sqrt(1.0 + x0 @ xtx_inv @ x0)
    return central, resid, Z90 * k / np.sqrt(WINDOW - 2)


def windows(y):
    """(windows [n, W], the value HORIZON steps after each) of one series."""
    idx = np.arange(WINDOW - 1, len(y) - HORIZON, STRIDE)
    return np.stack([y[t - WINDOW + 1:t + 1] for t in idx]), y[idx + HORIZON]


def line(win):
    """(central, rss) of the line through each window, as the graph computes them."""
    central, resid, _ = matrices()
    return win @ central, np.sqrt(((win @ resid.T) ** 2).sum(axis=1))


def smd_columns():
    """Metric name -> 0-based SMD column, for the metrics that have one."""
    return {m["name"]: m["smd_column"] - 1 for m in features.load()["metric"] if "smd_column" in m}


def calibrate(part="train"):
    """Per metric in METRICS, the multiplier K that makes central + K * rss cover 90 % of the
    actual values HORIZON steps ahead over every SMD machine's `part`."""
    cols = smd_columns()
    ratios = {m: [] for m in METRICS if m in cols}
    for machine in datasets.machines("smd"):
        rows = datasets.load(machine, part, "smd")
        for m in ratios:
            win, actual = windows(rows[:, cols[m]])
            c, rss = line(win)
            ratios[m].append((actual - c) / np.maximum(rss, 1e-9))
    k = {m: float(np.quantile(np.concatenate(r), Z_QUANTILE)) for m, r in ratios.items()}
    for m, other in BORROWS.items():
        k[m] = k[other]
    return [k[m] for m in METRICS]


def main():
    central, resid, _ = matrices()
    k = calibrate()
    n = len(METRICS)
    series = helper.make_tensor_value_info("series", TensorProto.FLOAT, [n, WINDOW])
    out_c = helper.make_tensor_value_info("central", TensorProto.FLOAT, [n, 1])
    out_u = helper.make_tensor_value_info("upper", TensorProto.FLOAT, [n, 1])
    init = [
        numpy_helper.from_array(central.reshape(WINDOW, 1).astype(np.float32), "C"),
        numpy_helper.from_array(resid.T.astype(np.float32), "R"),
        numpy_helper.from_array(np.array(k, np.float32).reshape(n, 1), "scale"),
    ]
    nodes = [
        helper.make_node("MatMul", ["series", "C"], ["central"]),
        helper.make_node("MatMul", ["series", "R"], ["res"]),
        helper.make_node("Mul", ["res", "res"], ["res2"]),
        helper.make_node("ReduceSum", ["res2"], ["ss"], keepdims=1),
        helper.make_node("Sqrt", ["ss"], ["rss"]),
        helper.make_node("Mul", ["rss", "scale"], ["half"]),
        helper.make_node("Add", ["central", "half"], ["upper"]),
    ]
    # ReduceSum in opset 13 takes axes as an input; without it, it must reduce axis 1 only.
    nodes[3] = helper.make_node("ReduceSum", ["res2", "axes"], ["ss"], keepdims=1)
    init.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    graph = helper.make_graph(nodes, "understudy_forecast", [series], [out_c, out_u], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="understudy models/forecast.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = HERE / "forecast.onnx"
    onnx.save(model, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    metrics = ", ".join(f'"{m}"' for m in METRICS)
    (HERE / "forecast.toml").write_text(f"""# Written by models/forecast.py.
file = "forecast.onnx"
sha256 = "{sha}"
# Input [metrics, window]: the newest `window` samples (one per second) of each metric.
metrics = [{metrics}]
window = {WINDOW}
# Steps (seconds) ahead of the newest sample that the outputs estimate.
horizon = {HORIZON}
quantile = 0.9
# Upper-bound multipliers of the line's residual root-sum-of-squares, calibrated on the SMD
# train parts: {", ".join(f"{m} {v:.3f}" for m, v in zip(METRICS, k))}.
""")
    rng = np.random.default_rng(3)
    sess = ort.InferenceSession(str(path))
    cases = []
    for _ in range(4):
        x = (rng.random((n, WINDOW)) + np.linspace(0, 0.5, WINDOW)).astype(np.float32)
        c, u = sess.run(["central", "upper"], {"series": x})
        cases.append({"series": x.reshape(-1).tolist(), "central": c.reshape(-1).tolist(),
                      "upper": u.reshape(-1).tolist()})
    (HERE / "fixtures" / "forecast-parity.json").write_text(json.dumps({"cases": cases}))
    print(f"forecast.onnx: window {WINDOW}, horizon {HORIZON}, p90 multipliers "
          + ", ".join(f"{m} {v:.3f}" for m, v in zip(METRICS, k)) + f"; sha256 {sha}")


if __name__ == "__main__":
    main()

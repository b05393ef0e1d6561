"""Exports the short-horizon resource forecaster (models/forecast.onnx).

    .venv/bin/python models/forecast.py

For each resource series (the newest WINDOW samples of mem_u, cpu_r, disk_u and fs_used, one per
second), a least-squares line through the window extrapolated HORIZON steps ahead gives the
central estimate; the upper bound adds the one-sided p90 prediction interval of that line
(z = 1.2816 times the residual standard deviation, scaled for the extrapolation distance).
Every step is a fixed linear map of the window plus a square root, so the model has no
trained weights: the matrices follow from WINDOW and HORIZON. Writes forecast.onnx,
forecast.toml and fixtures/forecast-parity.json (onnxruntime outputs on fixed inputs).
"""

import hashlib
import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

HERE = pathlib.Path(__file__).resolve().parent
WINDOW = 120
HORIZON = 300
METRICS = ["mem_u", "cpu_r", "disk_u", "fs_used"]
Z90 = 1.2815516


def matrices():
    t = np.arange(WINDOW, dtype=np.float64)
    x = np.stack([np.ones(WINDOW), t], axis=1)
    xtx_inv = np.linalg.inv(x.T @ x)
    hat = x @ xtx_inv @ x.T
    x0 = np.array([1.0, WINDOW - 1 + HORIZON])
    central = x0 @ xtx_inv @ x.T                      # [W]
    resid = np.eye(WINDOW) - hat                       # r = resid @ y
    k = np.sqrt(1.0 + x0 @ xtx_inv @ x0)
    return central, resid, Z90 * k / np.sqrt(WINDOW - 2)


def main():
    central, resid, scale = matrices()
    n = len(METRICS)
    series = helper.make_tensor_value_info("series", TensorProto.FLOAT, [n, WINDOW])
    out_c = helper.make_tensor_value_info("central", TensorProto.FLOAT, [n, 1])
    out_u = helper.make_tensor_value_info("upper", TensorProto.FLOAT, [n, 1])
    init = [
        numpy_helper.from_array(central.reshape(WINDOW, 1).astype(np.float32), "C"),
        numpy_helper.from_array(resid.T.astype(np.float32), "R"),
        numpy_helper.from_array(np.array(scale, np.float32), "scale"),
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
    print(f"forecast.onnx: window {WINDOW}, horizon {HORIZON}, sha256 {sha}")


if __name__ == "__main__":
    main()

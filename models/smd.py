"""Reading the Server Machine Dataset as laid out in ../shared/datasets/smd."""

import io
import pathlib
import subprocess

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "smd"


def _read_zst(path):
    out = subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return out.decode()


def machines():
    """Machines with both train and test data, sorted."""
    return sorted(p.name.removesuffix(".txt.zst") for p in (ROOT / "test").glob("*.txt.zst")
                  if (ROOT / "train" / p.name).exists())


def load(machine, part):
    """The `part` ("train" or "test") rows of `machine` as a float64 array [rows, 38]."""
    text = _read_zst(ROOT / part / f"{machine}.txt.zst")
    return np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2)


def labels(machine):
    """Per-row 0/1 labels of the test part."""
    return np.array([int(x) for x in _read_zst(ROOT / "test_label" / f"{machine}.txt.zst").split()], dtype=np.int8)


def path(machine, part):
    return ROOT / part / f"{machine}.txt.zst"

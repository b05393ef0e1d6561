"""Reading the multivariate datasets in ../shared/datasets: SMD (Server Machine Dataset,
38 metrics, one row per minute) and ASD (Application Server Dataset, 19 metrics, one row
per five minutes). Both are laid out the same way: `train/`, `test/` and `test_label/`
holding `<machine>.txt.zst`."""

import io
import pathlib
import subprocess

import numpy as np

SHARED = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
# Rows per machine-day.
ROWS_PER_DAY = {"smd": 1440, "asd": 288}


def _read_zst(path):
    out = subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return out.decode()


def machines(ds="smd"):
    """Machines with both train and test data, sorted."""
    root = SHARED / ds
    return sorted(p.name.removesuffix(".txt.zst") for p in (root / "test").glob("*.txt.zst")
                  if (root / "train" / p.name).exists())


def load(machine, part, ds="smd"):
    """The `part` ("train" or "test") rows of `machine` as a float64 array [rows, metrics]."""
    text = _read_zst(path(machine, part, ds))
    return np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2)


def labels(machine, ds="smd"):
    """Per-row 0/1 labels of the test part."""
    text = _read_zst(SHARED / ds / "test_label" / f"{machine}.txt.zst")
    return np.array([int(x) for x in text.split()], dtype=np.int8)


def path(machine, part, ds="smd"):
    return SHARED / ds / part / f"{machine}.txt.zst"

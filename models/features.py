"""The host feature schema, as the training and evaluation code reads it.

`models/schema.toml` is the only list of features; the agent compiles the same file in
(agent/src/hostmetrics/schema.rs). Run `python3 models/features.py` to print it.
"""

import pathlib
import sys
import tomllib

SCHEMA_PATH = pathlib.Path(__file__).with_name("schema.toml")
SCHEMA_VERSION = 1


def load(path=SCHEMA_PATH):
    """Returns the schema dict, checked: supported version, unique names, SMD columns 1..38 first."""
    with open(path, "rb") as f:
        schema = tomllib.load(f)
    if schema.get("version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: version {schema.get('version')} is not supported (this code reads {SCHEMA_VERSION})")
    names = [m["name"] for m in schema["metric"]]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: a metric is listed twice")
    smd = [m.get("smd_column") for m in schema["metric"][:38]]
    if smd != list(range(1, 39)):
        raise ValueError(f"{path}: the first 38 metrics must be SMD columns 1..38 in order")
    return schema


def names(schema=None):
    """Feature names in model input order."""
    return [m["name"] for m in (schema or load())["metric"]]


if __name__ == "__main__":
    s = load()
    for i, m in enumerate(s["metric"]):
        col = m.get("smd_column", "-")
        print(f"{i:2} {m['name']:<18} {m['unit']:<17} {m['kind']:<8} smd:{col!s:<3} {m['source']}")
    sys.exit(0)

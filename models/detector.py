"""What the agent does around a model, mirrored for training and baselines: per-host
normalisation, the score's smoothing, alarm events, and the threshold rule. The agent's
Rust implementation (agent/src/predict/) follows the same definitions; the parameters
travel in models/anomaly.toml."""

import numpy as np

Z_CLIP = 10.0          # normalised inputs are clipped to +-Z_CLIP
STD_FLOOR_REL = 0.01   # sigma is at least STD_FLOOR_REL * max(1, |mean|)
EMA_ALPHA = 0.2        # smoothing of the raw score
MERGE_GAP = 10         # alarm rows closer than this form one alarm event


def baseline(x):
    """Per-feature mean and floored standard deviation of baseline rows x [n, d]."""
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    return mu, np.maximum(sd, STD_FLOOR_REL * np.maximum(1.0, np.abs(mu)))


def normalise(x, mu, sd):
    return np.clip((x - mu) / sd, -Z_CLIP, Z_CLIP)


def smooth(scores):
    out = np.empty_like(scores)
    acc = 0.0
    for i, s in enumerate(scores):
        acc = s if i == 0 else EMA_ALPHA * s + (1 - EMA_ALPHA) * acc
        out[i] = acc
    return out


def events(flags):
    """Maximal runs of 1s in flags, runs closer than MERGE_GAP merged: [(start, end_inclusive)]."""
    idx = np.flatnonzero(flags)
    out = []
    for i in idx:
        if out and i - out[-1][1] <= MERGE_GAP:
            out[-1][1] = i
        else:
            out.append([i, i])
    return [tuple(e) for e in out]


def false_alarms_per_day(flags, rows_per_day=1440):
    return len(events(flags)) / max(len(flags) / rows_per_day, 1e-9)


def pick_threshold(smoothed_per_machine, target_fa_per_day=0.5, rows_per_day=1440):
    """Smallest threshold (over 60 high quantiles of the pooled train scores, 1 - 10^-1.5 to
    1 - 10^-5, log-spaced) whose alarm events on the train data stay at or under target per
    machine-day."""
    pooled = np.concatenate(smoothed_per_machine)
    days = len(pooled) / rows_per_day
    for q in 1.0 - np.logspace(-1.5, -5.0, 60):
        t = float(np.quantile(pooled, q))
        fa = sum(len(events(s > t)) for s in smoothed_per_machine) / days
        if fa <= target_fa_per_day:
            return t, round(float(q), 6), fa
    return float(pooled.max()), 1.0, 0.0

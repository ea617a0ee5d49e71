"""Fits the claims suite and ``dynamics-bench-aggregate --fit`` read rates from: a straight line, a power law
y ∝ x^slope (a line in log-log) and an exponential y ∝ e^{rate·t} (a line in semi-log), by least squares with R²,
over the last decades of x; and the first time a curve reaches a level, interpolated in log y."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fit:
    """log y ≈ intercept + slope·(log x or x); r2 the coefficient of determination; points the number used."""

    slope: float
    intercept: float
    r2: float
    points: int


def line(u, v) -> Fit:
    """Least-squares v ≈ intercept + slope·u with R² (NaN fit for fewer than two distinct u)."""
    u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    if len(u) < 2 or np.ptp(u) == 0:
        return Fit(math.nan, math.nan, math.nan, len(u))
    slope, intercept = np.polyfit(u, v, 1)
    residual = v - (intercept + slope * u)
    total = float(np.sum((v - v.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / total if total > 0 else 1.0
    return Fit(float(slope), float(intercept), r2, len(u))


def _positive(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (y > 0)
    return x[keep], y[keep]


def last_decades(x, decades: float | None) -> np.ndarray:
    """Mask of the points with x in the last `decades` decades of the positive x (None: every positive x)."""
    x = np.asarray(x, dtype=float)
    positive = np.isfinite(x) & (x > 0)
    if decades is None or not positive.any():
        return positive
    return positive & (x >= x[positive].max() / 10.0 ** decades)


def fit_window(x, y, decades: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The points power_law(x, y, decades) fits: finite, x > 0, y > 0, x in the last `decades` decades of those x
    (exponential uses the same ones when decades is given)."""
    x, y = _positive(x, y)
    keep = last_decades(x, decades)
    return x[keep], y[keep]


def power_law(x, y, decades: float | None = None) -> Fit:
    """slope of log y against log x (points with x > 0 and y > 0; the last `decades` decades of x if given)."""
    x, y = fit_window(x, y, decades)
    return line(np.log(x), np.log(y))


def exponential(t, y, decades: float | None = None) -> Fit:
    """rate of log y against t (y > 0; over the last `decades` decades of t if given): y ≈ e^{intercept + rate·t}."""
    t, y = fit_window(t, y, decades) if decades is not None else _positive(t, y)
    return line(t, np.log(y))


def time_to_reach(t, y, level: float, rising: bool = False) -> float:
    """The first t where y ≤ level (rising=True: y ≥ level), interpolated linearly in (t, log y) between the
    samples around the crossing, in (t, y) where one of them is not positive (the first sample if it is already
    there); NaN if y never gets there."""
    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    there = np.flatnonzero(np.isfinite(y) & ((y >= level) if rising else (y <= level)))
    if len(there) == 0:
        return math.nan
    k = int(there[0])
    if k == 0:
        return float(t[0])
    y0, y1 = y[k - 1], y[k]
    if y0 == y1 or not np.isfinite(y0):
        return float(t[k])
    log = y0 > 0 and y1 > 0 and level > 0
    s = (math.log(y0 / level) / math.log(y0 / y1)) if log else (y0 - level) / (y0 - y1)
    return float(t[k - 1] + s * (t[k] - t[k - 1]))

"""Closed forms from theory.md that several test files check the harness against."""
from __future__ import annotations

import math


def vector_case_time(x0: float, x1: float, y: float, c: float) -> float:
    """Gradient-flow time for the vector case's product to go from x0 to x1 under f = ½(x − y)² with imbalance c
    (theory.md §1.6.3): T = F(x1) − F(x0), F(x) = (1/q)·ln|(q√(4x² + c) + 4yx + c)/(x − y)|, q = √(4y² + c)."""
    q = math.sqrt(4 * y * y + c)

    def big_f(x: float) -> float:
        return math.log(abs((q * math.sqrt(4 * x * x + c) + 4 * y * x + c) / (x - y))) / q
    return big_f(x1) - big_f(x0)

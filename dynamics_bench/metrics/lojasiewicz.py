"""Łojasiewicz diagnostics: how the gradient scales with the loss, and the local order of the loss's decay
(Zhou–Ge–Jin 2021, Thm 4 and Claim 2; Xu–Du 2023; docs/theory.md §6.4, P2.3).

With L̃ = L − metrics.loss_floor (each member's own under ensemble.vary): `pl_ratio` ‖∇L‖²/L̃ (bounded below
under a PL inequality; → 0 when PL fails, as for m > r students), `kappa` ‖∇L‖/L̃ (Thm 4's κ, bounded below). From
the member's previous row: `loj_exponent` Δlog‖∇L‖/Δlog L̃ (θ in ‖∇L‖ ∝ L̃^θ: 2/3 along an O(t⁻³) decay),
`loss_slope` Δlog L̃/Δlog t (p in L̃ ∝ t^p) and `loss_rate` −Δlog L̃/Δt (r in L̃ ∝ e^{−rt}). A column is empty
where it is undefined: no previous row, L̃ ≤ 0, t = 0 (for loss_slope), or a zero denominator.

Five numbers per member from three: plain floats, which cost a fraction of tensor operations at this size.
"""
from __future__ import annotations

import math

import torch

from dynamics_bench.metrics.base import Memory, Metric, Snapshot, Values

COLUMNS = ("pl_ratio", "kappa", "loj_exponent", "loss_slope", "loss_rate")
NAN = math.nan


def _log(v: float) -> float:
    return math.log(v) if v > 0 else NAN  # NaN and inf fall through to NaN and inf


def _ratio(a: float, b: float) -> float:
    """a/b, or NaN where that is no number (b = 0, inf/inf, NaN); 0, not −0."""
    if b == 0:
        return NAN
    r = a / b
    return r + 0.0 if math.isfinite(r) else NAN


def _row(excess: float, grad: float, t: float, prev: list[float]) -> tuple[list[float], list[float]]:
    """The member's five columns, and what its next row needs: (log L̃, log‖∇L‖, log t, t)."""
    now = [_log(excess), _log(grad), _log(t), t]
    d_loss, d_grad, d_log_t, dt = (a - b for a, b in zip(now, prev))
    positive = excess if excess > 0 else NAN
    return [_ratio(grad * grad, positive), _ratio(grad, positive), _ratio(d_grad, d_loss), _ratio(d_loss, d_log_t),
            _ratio(-d_loss, dt)], now


def lojasiewicz(s: Snapshot, previous: Memory) -> tuple[Values, Memory]:
    loss = s.loss_and_grad()[0]
    floor, grads = s.settings.loss_floor, s.grad_norm().tolist()
    floors = floor.tolist() if isinstance(floor, torch.Tensor) else [floor] * len(grads)  # per member under vary
    prev = previous["row"].tolist() if previous else [[NAN] * 4] * len(grads)
    rows, memory = zip(*(_row(v - f, g, t, p) for v, f, g, t, p in zip(loss.tolist(), floors, grads, s.t, prev)))
    values = torch.tensor(rows, dtype=torch.float64, device=loss.device)  # (E, 5), float64 whatever the dtype
    return dict(zip(COLUMNS, values.unbind(1))), {"row": torch.tensor(memory, dtype=torch.float64, device=loss.device)}


LOJASIEWICZ = {"lojasiewicz": Metric(lojasiewicz, remembers=True)}

"""The claims suite: every prediction of docs/theory.md §8 as a :class:`Prediction` that runs the harness, judges
the numbers against the stated tolerance and draws a figure. ``dynamics-bench-claims`` (dynamics_bench.claims.cli)
runs a selection and writes claims.md, claims.json, figures/ and overview.png."""
from __future__ import annotations

from dynamics_bench.claims import local, ntk, paper1_flow, paper1_saddles
from dynamics_bench.claims.base import Check, Context, Prediction, at_least, at_most, in_range, within

PREDICTIONS: dict[str, Prediction] = {p.id: p for module in (paper1_flow, paper1_saddles, local, ntk)
                                      for p in module.PREDICTIONS}


def matches(selector: str, identifier: str) -> bool:
    """`selector` names `identifier` or a prefix of it in whole `_`-separated parts: p1_1 is P1.1, not P1.10."""
    want, have = selector.lower().split("_"), identifier.split("_")
    return have[:len(want)] == want


def select(selectors: list[str]) -> list[Prediction]:
    """The predictions a list of ids selects (all for an empty list), in registry order; a sub-claim's id selects
    its prediction (its bullets are measured together). Raises KeyError naming an id that selects nothing."""
    if not selectors:
        return list(PREDICTIONS.values())
    chosen: set[str] = set()
    for selector in selectors:
        hits = {p.id for p in PREDICTIONS.values()
                if matches(selector, p.id) or any(matches(selector, s) for s in p.subclaims)}
        if not hits:
            raise KeyError(selector)
        chosen |= hits
    return [p for p in PREDICTIONS.values() if p.id in chosen]


__all__ = ["PREDICTIONS", "Check", "Context", "Prediction", "at_least", "at_most", "in_range", "matches", "select",
           "within"]

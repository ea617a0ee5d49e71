"""What a claim is: a :class:`Prediction` of docs/theory.md §8 runs the harness (``measure``), turns the numbers
into :class:`Check` verdicts against stated tolerances (``judge``, a pure function: tested on synthetic data) and
draws its figure (``draw``). :class:`Context` is what ``measure`` gets: the size regime, the device and ``run``,
which runs a preset of conf/experiment/claims/ through the harness and records the command that reproduces it."""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

SENSES = ("le", "ge", "within")


@dataclass
class Check:
    """One verdict row: `measured` against `bound` with `tolerance` (the scale of the normalized margin).

    sense "le": passes iff measured ≤ bound; "ge": iff measured ≥ bound; "within": iff |measured − bound| ≤
    tolerance. `margin` is (measured − bound)/tolerance signed so that ≥ 0 passes (for "within": 1 − |measured −
    bound|/tolerance). `note` says what was substituted, how a tolerance left open was fixed, or why it fails."""

    id: str
    statement: str  # one line
    quantity: str  # what `measured` is
    measured: float
    sense: str
    bound: float
    tolerance: float
    note: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)  # everything else measured, for claims.json

    def __post_init__(self) -> None:
        if self.sense not in SENSES:
            raise ValueError(f"Check {self.id}: sense must be one of {SENSES}, got {self.sense!r}")
        if not self.tolerance > 0:
            raise ValueError(f"Check {self.id}: tolerance must be > 0, got {self.tolerance!r}")
        self.measured = float(self.measured)

    @property
    def margin(self) -> float:
        m = self.measured
        if not math.isfinite(m):
            return -math.inf
        if self.sense == "le":
            return (self.bound - m) / self.tolerance
        if self.sense == "ge":
            return (m - self.bound) / self.tolerance
        return 1.0 - abs(m - self.bound) / self.tolerance

    @property
    def passed(self) -> bool:
        return self.margin >= 0

    @property
    def predicted(self) -> str:
        if self.sense == "le":
            return f"≤ {self.bound:.4g}"
        if self.sense == "ge":
            return f"≥ {self.bound:.4g}"
        return f"{self.bound:.4g} ± {self.tolerance:.3g}"


def at_most(id: str, statement: str, quantity: str, measured: float, bound: float, tolerance: float | None = None,
            **kw: Any) -> Check:
    """Passes iff measured ≤ bound; the margin's scale is `tolerance` (default |bound|, or 1 for a bound of 0: a
    count of violations)."""
    scale = tolerance if tolerance is not None else (abs(bound) or 1.0)
    return Check(id, statement, quantity, measured, "le", bound, scale, **kw)


def at_least(id: str, statement: str, quantity: str, measured: float, bound: float, tolerance: float | None = None,
             **kw: Any) -> Check:
    """Passes iff measured ≥ bound; margin scale `tolerance` (default |bound|, or 1 for 0)."""
    scale = tolerance if tolerance is not None else (abs(bound) or 1.0)
    return Check(id, statement, quantity, measured, "ge", bound, scale, **kw)


def within(id: str, statement: str, quantity: str, measured: float, predicted: float, tolerance: float,
           **kw: Any) -> Check:
    """Passes iff |measured − predicted| ≤ tolerance."""
    return Check(id, statement, quantity, measured, "within", predicted, tolerance, **kw)


def in_range(id: str, statement: str, quantity: str, measured: float, low: float, high: float,
             **kw: Any) -> Check:
    """Passes iff low ≤ measured ≤ high (a "within" check about the middle)."""
    return Check(id, statement, quantity, measured, "within", (low + high) / 2, (high - low) / 2, **kw)


def relative_error(measured: float, predicted: float) -> float:
    return abs(measured - predicted) / abs(predicted) if predicted != 0 else abs(measured)


@dataclass(frozen=True)
class Prediction:
    """One prediction of docs/theory.md §8 (P1.1 … P3.6).

    id: ``p<paper>_<number>_<name>``; its checks are either one row with this id or sub-claims
    ``p<paper>_<number>_<letter>_<name>``, one per bullet. `setting`: model, task, loss (with its reduction),
    trainer and clock, sizes and seeds, as run at full size. `measure(ctx) -> data`, `judge(data) -> checks`
    (pure), `draw(data, checks) -> Figure or {id: Figure}` (the prediction's own id among them)."""

    id: str
    paper: str
    statement: str
    setting: str
    measure: Callable[["Context"], dict[str, Any]]
    judge: Callable[[dict[str, Any]], list[Check]]
    draw: Callable[[dict[str, Any], list[Check]], Any]
    subclaims: tuple[str, ...] = ()  # the ids judge returns, one per bullet; () when it returns one row (self.id)

    @property
    def number(self) -> str:
        """'p1_5' of 'p1_5_imbalance_ordering'."""
        return "_".join(self.id.split("_")[:2])


@dataclass
class Run:
    """A harness run's outputs: its directory, summary.json (as a dict) and, read on demand, metrics.csv."""

    dir: Path
    summary: dict[str, Any]
    command: str

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """metrics.csv, read once (claims take several views of it)."""
        return pd.read_csv(self.dir / "metrics.csv")

    def final_params(self) -> dict[str, torch.Tensor]:
        return torch.load(self.dir / "final_params.pt", weights_only=True)

    def task(self) -> dict[str, Any]:
        return torch.load(self.dir / "task.pt", weights_only=True)

    def member(self, i: int) -> pd.DataFrame:
        m = self.metrics
        return m[m["member"] == i].reset_index(drop=True)


QUIET = ("logger.progress=false", "logger.tensorboard=false")
RUNS = "$RUNS"  # how recorded commands name the claim's work directory (<out>/runs/<id>: its init grids, data)


class Context:
    """What a prediction's `measure` is given: `fast` (small sizes, seconds), `device` ("cpu", "cuda", …), the
    work directory for its runs, and `run`/`pick`/`write_init`. Every run's command line is kept (`commands`)."""

    def __init__(self, work_dir: Path, fast: bool = False, device: str = "cpu",
                 on_run: Callable[[str], None] | None = None):
        self.work_dir, self.fast, self.device = Path(work_dir).resolve(), fast, device
        self.commands: list[str] = []
        self.on_run = on_run

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def pick(self, full: Any, fast: Any, cuda: Any = None) -> Any:
        """The size for this regime: `fast` under --fast, `cuda` (default `full`) on a CUDA device, else `full`."""
        if self.fast:
            return fast
        return cuda if self.cuda and cuda is not None else full

    def run(self, name: str, preset: str | None, *overrides: str) -> Run:
        """Run ``dynamics-bench experiment=claims/<preset> overrides…`` (preset None: the defaults) in-process into
        work_dir/name, on this context's device, without TensorBoard; returns its outputs. A config error raises."""
        from dynamics_bench import compose
        from dynamics_bench.experiment import run as run_experiment

        args = ([f"experiment=claims/{preset}"] if preset else []) + list(overrides)
        if self.device != "cpu":
            args.append(f"device={self.device}")
        command = "dynamics-bench " + " ".join(shlex.quote(a) for a in args).replace(str(self.work_dir), RUNS)
        self.commands.append(command)
        if self.on_run is not None:
            self.on_run(name)
        out = self.work_dir / name
        summary = run_experiment(compose(*QUIET, *args), out)
        return Run(out, summary, command)

    def write_init(self, name: str, params: dict[str, torch.Tensor]) -> Path:
        """Save {name: (E, …) tensor} for ``model.init=file model.init_path=<returned path>``."""
        path = self.work_dir / "inits" / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().to("cpu", torch.float64).contiguous() for k, v in params.items()}, path)
        return path

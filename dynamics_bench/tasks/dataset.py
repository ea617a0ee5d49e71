"""A user's own regression data, read from a file: .pt, .npz or .csv.

For data no generator draws, e.g. two inputs at distance δ for a separation claim. The file is read when the task
is built, so a bad file stops the run before any work, with a ConfigError naming the key to fix. A relative
task.path is relative to the working directory (dynamics_bench never changes it).

- .pt: ``torch.load(path, weights_only=True)`` gives a dict with tensors "x" (n, d) and "y" (n, o) or (n,).
- .npz: arrays "x" and "y", shaped alike (no pickled objects).
- .csv: a header row of column names; x = the columns ``task.inputs`` (null: every column that is not a target),
  y = the columns ``task.targets`` (null: ["y"]).

Targets are regression targets: y is cast to float, and (n,) becomes (n, 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor

from dynamics_bench.config import read_file, require
from dynamics_bench.tasks.base import Task, data_state

if TYPE_CHECKING:
    import pandas as pd

SUFFIXES = (".pt", ".npz", ".csv")


@dataclass
class DatasetConfig:
    name: str = "dataset"
    seed: int = 0  # unused (the data come from the file); kept so that every task has task.seed
    path: str | None = None
    inputs: list[str] | None = None
    targets: list[str] | None = None
    normalize_inputs: bool = False

    def __post_init__(self) -> None:
        require(self.path is not None, "task.path", self.path,
                "is required: a .pt, .npz or .csv file holding x and y (task.path=<file>)")
        suffix = Path(self.path).suffix.lower()
        require(suffix in SUFFIXES, "task.path", self.path, "must be a file ending in " + ", ".join(SUFFIXES))
        for key in ("inputs", "targets"):
            value = getattr(self, key)
            require(value is None or suffix == ".csv", f"task.{key}", value,
                    f"must be null for a {suffix} file (column names apply to .csv files only)")
            require(value is None or len(value) > 0, f"task.{key}", value, "must be null or name at least one column")
        shared = sorted(set(self.inputs or []) & set(self.targets or ["y"])) if self.inputs is not None else []
        require(not shared, "task.inputs", self.inputs,
                f"must not name a target column ({', '.join(shared)} is in task.targets): the target would leak into x")
        require(Path(self.path).expanduser().is_file(), "task.path", self.path,
                f"no such file (a relative path is relative to the working directory, {Path.cwd()})")


def _float64(path: str, name: str, value: Any) -> Tensor:
    """A real numeric array (tensor or numpy) as a float64 CPU tensor, or ConfigError on task.path."""
    if isinstance(value, np.ndarray):
        require(value.dtype.kind in "biuf", "task.path", path, f'"{name}" must be numeric, not dtype {value.dtype}')
        value = torch.from_numpy(value)
    require(isinstance(value, Tensor) and not value.is_complex(), "task.path", path,
            f'"{name}" must be a real-valued tensor, not {getattr(value, "dtype", type(value).__name__)}')
    return value.detach().to(device="cpu", dtype=torch.float64)


def _named_arrays(path: str, arrays: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """x and y from named arrays (a .pt dict, an .npz archive)."""
    missing = [k for k in ("x", "y") if k not in arrays]
    require(not missing, "task.path", path, f'has no {" and ".join(map(repr, missing))}: it must hold "x" (n, d) and '
            f'"y" (n, o) or (n,); found {", ".join(map(repr, map(str, arrays))) or "nothing"}')
    return _float64(path, "x", arrays["x"]), _float64(path, "y", arrays["y"])


def _load(path: str, load: Callable[[Path], Any]) -> Any:
    """load(file); a file the reader refuses becomes a ConfigError on task.path."""
    return read_file("task.path", path, load, f"a {Path(path).suffix} file")


def _npz_arrays(file: Path) -> dict[str, np.ndarray]:
    data = np.load(file)  # allow_pickle=False: plain arrays only
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive (np.savez(path, x=..., y=...)) but a single array")
    with data:
        return {k: data[k] for k in data.files}


def _read_pt(path: str) -> tuple[Tensor, Tensor]:
    data = _load(path, lambda file: torch.load(file, map_location="cpu", weights_only=True))
    require(isinstance(data, dict), "task.path", path,
            f'must hold a dict with "x" and "y", not a {type(data).__name__}')
    return _named_arrays(path, data)


def _columns(key: str, names: list[str], frame: pd.DataFrame, path: str) -> Tensor:
    """The named numeric columns of frame, (n, len(names)) float64; ConfigError on key otherwise."""
    import pandas as pd  # here, not at the top: slow to import, and only CSV files need it

    unknown = [c for c in names if c not in frame.columns]
    require(not unknown, key, names, f"{path} has no column {', '.join(map(repr, unknown))}; its columns: "
            + ", ".join(map(str, frame.columns)))
    text = [c for c in names if not pd.api.types.is_numeric_dtype(frame[c])]
    require(not text, key, names, f"column {', '.join(map(repr, text))} of {path} is not numeric (name numeric "
            f"columns in {key})")
    return torch.tensor(frame[names].to_numpy(dtype=np.float64))  # (n, len(names)), a copy


def _read_csv(path: str, inputs: list[str] | None, targets: list[str] | None) -> tuple[Tensor, Tensor]:
    import pandas as pd  # here, not at the top: slow to import, and only CSV files need it

    frame = _load(path, pd.read_csv)
    targets = targets or ["y"]
    y = _columns("task.targets", targets, frame, path)
    if inputs is None:
        inputs = [c for c in frame.columns if c not in targets]
        require(bool(inputs), "task.inputs", None, f"has no default: every column of {path} is a target")
    return _columns("task.inputs", inputs, frame, path), y


def _read(path: str, inputs: list[str] | None, targets: list[str] | None) -> tuple[Tensor, Tensor]:
    """x, y as float64 CPU tensors, as the file holds them."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, inputs, targets)
    return _read_pt(path) if suffix == ".pt" else _named_arrays(path, _load(path, _npz_arrays))


def _checked(path: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """x (n, d), y (n, o) ((n,) made (n, 1)), both finite with n ≥ 1 rows; ConfigError on task.path otherwise."""
    require(x.dim() == 2 and min(x.shape) >= 1, "task.path", path,
            f"x must have shape (n, d) with n, d >= 1, not {tuple(x.shape)}")
    require(y.dim() in (1, 2), "task.path", path, f"y must have shape (n, o) or (n,), not {tuple(y.shape)}")
    y = y[:, None] if y.dim() == 1 else y  # (n, o)
    require(y.shape[1] >= 1, "task.path", path, f"y must have at least one column, not shape {tuple(y.shape)}")
    require(x.shape[0] == y.shape[0], "task.path", path,
            f"x has {x.shape[0]} rows but y has {y.shape[0]}: both need one row per sample")
    for name, t in (("x", x), ("y", y)):
        bad = (~torch.isfinite(t)).nonzero()[:3].tolist()  # [[row, column], ...]
        require(not bad, "task.path", path, f"{name} must be finite, but is not at (row, column) {bad}")
    return x, y


def _unit_rows(x: Tensor) -> Tensor:
    """x (n, d) with every row scaled to unit norm; ConfigError on a zero row."""
    norms = x.norm(dim=1, keepdim=True)  # (n, 1)
    zero = (norms[:, 0] == 0).nonzero()[:3, 0].tolist()
    require(not zero, "task.normalize_inputs", True, f"x is zero in row(s) {zero}: cannot scale them to unit norm")
    return x / norms


class DatasetTask(Task):
    """x (n, d), y (n, o) float from task.path; state(): "x", "y" when n·d ≤ 10⁶."""

    name = "dataset"

    def __init__(self, *, seed: int, path: str, inputs: list[str] | None, targets: list[str] | None,
                 normalize_inputs: bool, dtype: torch.dtype, device: torch.device):
        x, y = _checked(path, *_read(path, inputs, targets))  # float64 on the CPU
        if normalize_inputs:
            x = _unit_rows(x)
        self.input_dim, self.output_dim = x.shape[1], y.shape[1]
        self._x, self._y = x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)

    def data(self) -> tuple[Tensor, Tensor]:
        return self._x, self._y

    def state(self) -> dict[str, Tensor]:
        return data_state(self._x, self._y)

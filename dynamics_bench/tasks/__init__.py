"""Tasks: where the data (or the cost) comes from. One module per ``conf/task/<name>.yaml``."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from dynamics_bench.config import choice, parse_section
from dynamics_bench.tasks.base import Task, Teacher
from dynamics_bench.tasks.classification import Classification, ClassificationConfig
from dynamics_bench.tasks.dataset import DatasetConfig, DatasetTask
from dynamics_bench.tasks.linear_regression import LinearRegression, LinearRegressionConfig
from dynamics_bench.tasks.matrix_cost import MatrixCost, MatrixCostConfig
from dynamics_bench.tasks.teacher import TeacherConfig, TeacherTask

TASKS: dict[str, tuple[type, type[Task]]] = {
    "linear_regression": (LinearRegressionConfig, LinearRegression),
    "matrix_cost": (MatrixCostConfig, MatrixCost),
    "teacher": (TeacherConfig, TeacherTask),
    "classification": (ClassificationConfig, Classification),
    "dataset": (DatasetConfig, DatasetTask),
}


def build_task(section: dict[str, Any], *, dtype: torch.dtype, device: torch.device) -> Task:
    """Validate the plain ``task`` config dict (ConfigError on any bad key or value) and build the task."""
    name = choice("task.name", section.get("name"), TASKS)
    config_cls, task_cls = TASKS[name]
    cfg = parse_section(config_cls, section, "task")
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}
    return task_cls(**kwargs, dtype=dtype, device=device)


__all__ = ["TASKS", "Task", "Teacher", "build_task"]

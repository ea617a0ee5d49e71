"""Build an experiment from a composed config and run it: ``run(cfg, out_dir)``.

Everything is validated and built before any work starts; the outputs (metrics.csv, summary.json,
final_params.pt, tb/, params/) go to out_dir, which is passed in, never taken from the working directory.
"""
from __future__ import annotations

import math
import platform
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dynamics_bench.batches import check_batch_size, make_batches
from dynamics_bench.checkpoints import CheckpointConfig, Checkpointer, RunInterrupted, Signals, loop_state
from dynamics_bench.config import choice, parse_section, require
from dynamics_bench.losses import build_loss
from dynamics_bench.clocks import check_grid
from dynamics_bench.metrics import MetricsConfig, Settings, Snapshot, select_metrics
from dynamics_bench.metrics.base import Metric
from dynamics_bench.models import build_model
from dynamics_bench.models.base import Model, Params, TaskView
from dynamics_bench.objective import Objective, ObjectiveConfig, build_objective
from dynamics_bench.outputs import LoggerConfig, RunFiles
from dynamics_bench.recorder import Recorder
from dynamics_bench.memory import check_memory
from dynamics_bench.status import INTERRUPTED
from dynamics_bench.runtime import (Launcher, Runtime, apply_runtime, parse_runtime, peak_memory_bytes, step_work,
                                    torch_settings)
from dynamics_bench.tasks import build_task
from dynamics_bench.tasks.base import Task
from dynamics_bench.trainer import TrainResult, train
from dynamics_bench.trainers import TRAINERS, Schedule
from dynamics_bench.vary import Sweep, parse_vary

DTYPES = {"float64": torch.float64, "float32": torch.float32}
SECTIONS = ("model", "task", "loss", "trainer", "metrics", "logger", "ensemble", "checkpoint")
DATA_SEED_OFFSET = 2**31  # a member's minibatches/online samples come from its seed + this: apart from its init


@dataclass
class Experiment:
    """A validated, fully built experiment: nothing has been computed yet."""

    config: dict[str, Any]
    seed: int
    ensemble_size: int
    device: torch.device
    dtype: torch.dtype
    task: Task
    objective: Objective
    schedule: Schedule
    metrics_config: MetricsConfig
    metrics: dict[str, Metric]
    settings: Settings  # what the metrics are told (probe size, Lanczos steps, the fixed step, ...)
    logger: LoggerConfig
    sweep: Sweep  # ensemble.vary's combinations × ensemble.size seeds (without it: one combination)
    init_models: list[Model]  # the model drawing each combination's starts (objective.model where they agree)
    runtime: Runtime = Runtime()  # threads and matmul_precision, applied when the run starts
    checkpoint: CheckpointConfig = CheckpointConfig()

    @property
    def member_seeds(self) -> list[int]:
        """Member c·E + k (seed k of combination c; E = ensemble.size): seed·E + k."""
        return self.sweep.member_seeds(self.seed)


def to_plain(cfg: DictConfig | dict) -> dict[str, Any]:
    """A resolved, plain-Python copy of the config (no DictConfig/ListConfig reaches torch)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True, throw_on_missing=True)


def resolve_device(value: Any) -> torch.device:
    require(isinstance(value, str) and (value in ("cpu", "cuda", "auto") or value.startswith("cuda:")),
            "device", value, "must be cpu, cuda, cuda:<index> or auto")
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value.startswith("cuda"):
        require(torch.cuda.is_available(), "device", value,
                "CUDA is not available on this machine; use device=cpu or device=auto")
        index = torch.device(value).index
        require(index is None or index < torch.cuda.device_count(), "device", value,
                f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(value)


def _section(cfg: dict, key: str) -> dict:
    value = cfg.get(key, {})
    require(isinstance(value, dict), key, value, "must be a config group (a mapping)")
    return value


def build(cfg: DictConfig | dict) -> Experiment:
    """Validate the whole config and build every component; raises ConfigError before any work. Under
    ensemble.vary what the members share is built from the first combination's config (its multirun job's),
    what they don't from each combination's, and an error in a varied value names ensemble.vary.<key>."""
    plain = to_plain(cfg)
    resume = plain.pop("resume", None)  # the command line's, never part of the recorded config
    require(resume is None, "resume", resume, "is read by the command line (dynamics-bench resume=PATH); from "
                                              "Python, call dynamics_bench.resume(PATH)")
    unknown = sorted(set(plain) - {"seed", "device", "dtype", "threads", "matmul_precision", *SECTIONS})
    require(not unknown, unknown[0] if unknown else "", plain.get(unknown[0]) if unknown else None,
            "unknown top-level key; allowed: seed, device, dtype, threads, matmul_precision, "
            + ", ".join(SECTIONS))
    seed = plain.get("seed", 0)
    require(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "seed", seed,
            "must be an integer >= 0")
    dtype = DTYPES[choice("dtype", plain.get("dtype", "float64"), DTYPES)]
    device = resolve_device(plain.get("device", "cpu"))
    runtime = parse_runtime(plain)
    ensemble = _section(plain, "ensemble")
    require(set(ensemble) <= {"size", "vary"}, "ensemble." + next(iter(set(ensemble) - {"size", "vary"}), ""),
            None, "unknown key; allowed keys: size, vary")
    size = ensemble.get("size", 1)
    require(isinstance(size, int) and not isinstance(size, bool) and size >= 1, "ensemble.size", size,
            "must be an integer >= 1")
    sweep = parse_vary(ensemble.get("vary"), size)
    checkpoint = parse_section(CheckpointConfig, _section(plain, "checkpoint"), "checkpoint")
    with sweep.naming():
        experiment = _build(sweep.config(plain, 0), plain, sweep, seed=seed, dtype=dtype, device=device)
    return replace(experiment, runtime=runtime, checkpoint=checkpoint)


def _build(plain: dict[str, Any], recorded: dict[str, Any], sweep: Sweep, *, seed: int, dtype: torch.dtype,
           device: torch.device) -> Experiment:
    """build() from `plain`, the first combination's config; `recorded` is the config as given."""
    size = sweep.seeds
    trainer_section = _section(plain, "trainer")
    trainer_cfg = parse_section(TRAINERS[choice("trainer.name", trainer_section.get("name"), TRAINERS)],
                                trainer_section, "trainer")
    metrics_cfg = parse_section(MetricsConfig, _section(plain, "metrics"), "metrics")
    logger_cfg = parse_section(LoggerConfig, _section(plain, "logger"), "logger")
    loss = build_loss(_section(plain, "loss"))
    task = build_task(_section(plain, "task"), dtype=dtype, device=device)
    model_section = _section(plain, "model")
    objective_keys = {f.name for f in fields(ObjectiveConfig)}
    objective_cfg = parse_section(ObjectiveConfig, {k: v for k, v in model_section.items() if k in objective_keys},
                                  "model")
    model = build_model({k: v for k, v in model_section.items() if k not in objective_keys},
                        input_dim=task.input_dim, output_dim=loss.output_dim(task))
    objective = build_objective(model, loss, task, objective_cfg, model_name=model_section.get("name"),
                                trainer=trainer_section.get("name"))
    check_memory(plain, objective=objective, task=task, schedule=trainer_cfg.schedule(torch.finfo(dtype).eps),
                 members=sweep.size, dtype=dtype, device=device)  # before an init (nnls, near_teacher) allocates
    x, y = task.data()
    model.prepare(task_view(task, objective))
    model.check_members(size)
    schedule = _member_schedule(trainer_cfg.schedule(torch.finfo(dtype).eps), recorded, sweep, metrics_cfg,
                                torch.finfo(dtype).eps)
    check_batch_size(task, schedule.batch_size)
    require(not (schedule.adaptive and task.online), "trainer.method", trainer_section.get("method"),
            "adaptive step-size control needs a fixed data set, but task.online=true draws fresh samples every "
            "step: use a fixed-step method (rk4) or task.online=false")
    check_grid(metrics_cfg.grid(), schedule)
    if schedule.adaptive and not model.smooth and not task.population:  # the closed form is C² (away from 0)
        warnings.warn(f"trainer.method={trainer_section.get('method')} on a model with kinks "
                      f"(model.activation={_section(plain, 'model').get('activation')}): step-size control cannot "
                      "see past a kink, so adaptive steps crawl there; rk4 with a fixed h is the better choice "
                      "(trainer.max_steps bounds the run)", stacklevel=2)
    metrics = select_metrics(metrics_cfg.names, objective, task)
    settings = _member_settings(metrics_cfg.settings(x.shape[0], None if schedule.adaptive else schedule.h),
                                recorded, sweep, device, dtype)
    for check in (m.check for m in metrics.values() if m.check is not None):
        check(parameters=objective.num_params, members=sweep.size, settings=settings, device=device, dtype=dtype)
    init_models = _init_models(recorded, sweep, model, task, objective, loss.output_dim(task))
    return Experiment(recorded, seed, sweep.size, device, dtype, task, objective, schedule,
                      metrics_cfg, metrics, settings, logger_cfg, sweep, init_models)


# a varied key -> the Schedule fields that hold a tuple, member e's value at [e]
SCHEDULE_FIELDS = {"trainer.lr": ("h", "t_max"), "trainer.target_loss": ("target_loss",)}


def _member_schedule(schedule: Schedule, recorded: dict[str, Any], sweep: Sweep, metrics_cfg: MetricsConfig,
                     eps: float) -> Schedule:
    """`schedule` with each field a varied key sets as a per-member tuple, from each combination's trainer."""
    varied = [name for key in sweep.keys for name in SCHEDULE_FIELDS.get(key, ())]
    if not varied:
        return schedule
    require("trainer.lr" not in sweep.keys or metrics_cfg.times is None, "metrics.times", metrics_cfg.times,
            "must be null when ensemble.vary varies trainer.lr: the members' steps land on different times "
            "(log on steps with metrics.points or metrics.every)")

    def schedule_of(config: dict[str, Any]) -> Schedule:
        trainer = config["trainer"]
        return parse_section(TRAINERS[trainer["name"]], trainer, "trainer").schedule(eps)
    schedules = sweep.per_combination(recorded, schedule_of, "trainer")
    return replace(schedule, **{name: tuple(sweep.per_member([getattr(s, name) for s in schedules]))
                                for name in varied})


def _member_settings(settings: Settings, recorded: dict[str, Any], sweep: Sweep, device: torch.device,
                     dtype: torch.dtype) -> Settings:
    """`settings` with an (E,) tensor where members differ: the step size under a varied trainer.lr, the loss
    floor under a varied metrics.loss_floor."""
    changes: dict[str, Any] = {}
    if isinstance(settings.step_size, tuple):
        changes["step_size"] = torch.tensor(settings.step_size, dtype=dtype, device=device)
    if "metrics.loss_floor" in sweep.keys:
        configs = sweep.per_combination(recorded, lambda c: parse_section(MetricsConfig, c["metrics"], "metrics"),
                                        "metrics")
        floors = sweep.per_member([config.loss_floor for config in configs])
        changes["loss_floor"] = torch.tensor(floors, dtype=torch.float64, device=device)
    return replace(settings, **changes)


def _init_models(recorded: dict[str, Any], sweep: Sweep, model: Model, task: Task, objective: Objective,
                 output_dim: int) -> list[Model]:
    """The model drawing each combination's starts: `model` (the objective's) where the combination's model
    section is the first's, else one built from it and told the task likewise. Only init keys vary, so every
    one of them computes the same function."""
    first = sweep.config(recorded, 0)["model"]
    objective_keys = {f.name for f in fields(ObjectiveConfig)}

    def start_model(config: dict[str, Any]) -> Model:
        if config["model"] == first:
            return model
        other = build_model({k: v for k, v in config["model"].items() if k not in objective_keys},
                            input_dim=task.input_dim, output_dim=output_dim)
        other.prepare(task_view(task, objective))
        other.check_members(sweep.seeds)
        return other
    return sweep.per_combination(recorded, start_model, "model")


def task_view(task: Task, objective: Objective) -> TaskView:
    """What the model may know of its task before step 0 (float64 CPU), with the cost of the plain network: the
    population or sample loss of one member's unbatched parameters, whatever lazy or linearized model is trained."""
    x, y = task.data()
    cpu = lambda t: None if t is None else t.detach().to(device="cpu", dtype=torch.float64)  # noqa: E731
    loss = objective.loss_fn
    plain = objective if not objective.config.anchored else Objective(
        model=objective.model, loss=loss, sum_over_samples=task.sum_over_samples)
    modes = task.modes()
    return TaskView(cost=lambda p: plain.loss({k: v.to(x) for k, v in p.items()}, x, y).to(torch.float64),
                    x=cpu(x), y=y.detach().cpu() if loss.classification else cpu(y), task=task.name, loss=loss.name,
                    reduction="sum" if task.sum_over_samples else loss.reduction, population=task.population,
                    teacher_weights=cpu(task.teacher.weights) if task.teacher is not None else None,
                    teacher_activation=task.teacher.activation if task.teacher is not None else None,
                    modes=None if modes is None else tuple(cpu(t) for t in modes), whitened=task.whitened)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def versions() -> dict[str, str]:
    names = ["dynamics_bench", "torch", "hydra-core", "omegaconf", "tensorboard", "pandas", "numpy"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """The source checkout's commit (with -dirty for local changes), or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _summary(exp: Experiment, result: TrainResult, rows: list[dict[str, float]],
             drift_max: list[float | None], metric_seconds: dict[str, float],
             provenance: dict[str, Any]) -> dict[str, Any]:
    """rows: each member's last written metrics row (its stop row, or the end's); drift_max: each member's largest
    imbalance_drift_rel logged (None without the metric); provenance: :func:`provenance`'s, taken at the
    start. The outcome (status, steps, t,
    final loss, time to target, rejected steps) is stated for the whole batch and, in `combinations`, for each
    combination's members alone, as its multirun job would state it; the cost (seconds, iterations, gradient
    evaluations, memory) is the process's."""
    members, seeds, varied = [], exp.member_seeds, exp.sweep.member_values()
    for i, (m, row) in enumerate(zip(result.members, rows)):
        members.append({
            "member": i, "seed": seeds[i], **varied[i], "status": m.status if m.status != "running" else "max_steps",
            "stop_step": m.stop_step, "diverged_step": m.stop_step if m.status == "diverged" else None,
            "final_loss": _finite_or_none(row["loss"]), "time_to_target": m.time_to_target,
            "steps": result.steps[i], "t": result.t[i], "rejected_steps": result.rejected[i],
            "grad_evals": result.member_grad_evals[i],
            "final": {k: _finite_or_none(v) for k, v in row.items()},
        })
    loop_seconds = result.wall_seconds - result.compile_seconds
    return {
        **_outcome(members), "invariant_drift_max": _largest(drift_max),
        "wall_seconds": result.wall_seconds,
        "metric_seconds": metric_seconds,  # per metric, inside wall_seconds
        "compile_seconds": result.compile_seconds,  # inside wall_seconds, outside steps_per_second
        "steps_per_second": result.iterations / loop_seconds if loop_seconds > 0 else None,
        "iterations": result.iterations, "grad_evals": result.grad_evals, "ensemble_size": exp.ensemble_size,
        "device": str(exp.device), "dtype": str(exp.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "peak_memory_bytes": peak_memory_bytes(exp.device),
        **provenance, "config": exp.config,
        "combinations": _combinations(exp.sweep, members, drift_max), "members": members,
    }


def _outcome(members: list[dict[str, Any]]) -> dict[str, Any]:
    """What a run states of its members (their summary entries): its status (diverged if one diverged, else
    step_budget if one ran out of it, else converged if all did, else max_steps), steps and t (the furthest
    member's), final loss and time to target (:func:`_final`) and rejected steps (summed)."""
    statuses = [m["status"] for m in members]
    status = ("diverged" if "diverged" in statuses else "step_budget" if "step_budget" in statuses else
              "converged" if all(s == "converged" for s in statuses) else "max_steps")
    return {"status": status, "steps": max(m["steps"] for m in members), "t": max(m["t"] for m in members),
            **_final(members), "rejected_steps": sum(m["rejected_steps"] for m in members)}


def _combinations(sweep: Sweep, members: list[dict[str, Any]],
                  drift_max: list[float | None]) -> list[dict[str, Any]]:
    """Per combination (one without ensemble.vary): its varied values, its members (indices into `members`) and
    the outcome its multirun job would state."""
    return [{**values, "members": list(sweep.members(c)), **_outcome([members[e] for e in sweep.members(c)]),
             "invariant_drift_max": _largest([drift_max[e] for e in sweep.members(c)])}
            for c, values in enumerate(sweep.combinations)]


def _largest(values: list[float | None]) -> float | None:
    """The largest of the values given (None: not measured), or None if none is."""
    measured = [v for v in values if v is not None]
    return max(measured) if measured else None


def _final(members: list[dict[str, Any]]) -> dict[str, float | None]:
    """The final loss of members (their summary entries) and their time to target, as the summary states them."""
    losses = [m["final_loss"] for m in members if m["status"] != "diverged"]
    times = [m["time_to_target"] for m in members]
    return {"final_loss": None if None in losses or not losses else sum(losses) / len(losses),  # mean, not diverged
            "time_to_target": None if None in times else max(times)}  # when the last member got there


def provenance() -> dict[str, Any]:
    """What wrote a run: the versions of the packages and the source's git revision (two git calls: once a run)."""
    return {"versions": versions(), "git_revision": git_revision()}


def write_failed(out_dir: str | Path, exc: Exception, config: dict[str, Any], wall_seconds: float = 0.0,
                 overrides: list[str] | None = None, written_by: dict[str, Any] | None = None) -> None:
    """summary.json of a run that raised: status failed, the reason, and what is needed to reproduce it
    (`written_by`: the run's provenance, if taken already)."""
    RunFiles(out_dir).write_failed(exc, config, {"wall_seconds": wall_seconds, "overrides": overrides,
                                                 **(written_by or provenance())})


def init_params(exp: Experiment) -> Params:
    """Member i from its own generator seeded seed·E + i, drawn in float64 on the CPU, then moved. Under
    ensemble.vary, combination c's members are drawn by its own model (configured with its values) and
    concatenated in order, so member k of each is member k of its multirun job."""
    seeds = exp.member_seeds
    parts = [model.init_params([torch.Generator().manual_seed(seeds[e]) for e in exp.sweep.members(c)])
             for c, model in enumerate(exp.init_models)]
    params = {k: torch.cat([part[k] for part in parts]) if len(parts) > 1 else parts[0][k] for k in parts[0]}
    return {k: v.to(device=exp.device, dtype=exp.dtype) for k, v in params.items()}


def _horizon(schedule: Schedule) -> float:
    """The schedule's furthest t_max (members' may differ under a varied trainer.lr)."""
    return max(schedule.t_max) if isinstance(schedule.t_max, tuple) else schedule.t_max


def _write_hparams(recorder: Recorder, exp: Experiment, summary: dict[str, Any]) -> None:
    """TensorBoard's HParams: the config with the final loss and time to target in tb/ itself; under
    ensemble.vary, each combination with a run of its own gets its config (its multirun job's) and its members'
    final numbers there instead."""
    if not exp.sweep.keys:
        recorder.tb.write_hparams(_hparams(exp.config), _tb_final(summary))
        return
    for c, run_name in enumerate(recorder.tb_runs):  # the first combinations, in order
        recorder.tb.write_hparams(_hparams(exp.sweep.config(exp.config, c)), _tb_final(summary["combinations"][c]),
                                  run_name)


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    return flatten({k: config[k] for k in config if k != "metrics"})


def _tb_final(final: dict[str, Any]) -> dict[str, float | None]:
    return {"loss": final["final_loss"], "time_to_target": final["time_to_target"]}


def _progress(bar: tqdm, t_max: float) -> Callable[[float], None]:
    """Move the bar to flow time t, at most ~200 times per run (a refresh costs more than a small step)."""
    quantum = t_max / 200 if t_max > 0 else math.inf

    def update(t: float) -> None:
        if not bar.disable and t - bar.n >= quantum:
            bar.update(t - bar.n)
    return update


def _step_work(exp: Experiment) -> int:
    """threads=auto's measure of one step: parameters × samples per step (a minibatch, else the data) × members."""
    return step_work(exp.objective.num_params, exp.schedule.batch_size or exp.task.data()[0].shape[0],
                     exp.ensemble_size)


def run_experiment(exp: Experiment, out_dir: str | Path, launcher: Launcher = Launcher(),
                   resume: dict[str, Any] | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train a built experiment, writing every output to out_dir; returns the summary. `launcher`: how Hydra's
    launcher shares the machine among jobs (threads=auto stays within this job's share). `resume`: out_dir's
    checkpoint (:meth:`RunFiles.load_checkpoint`) to go on from, else a fresh start (an earlier attempt's outputs
    in out_dir are removed). `overrides`: the command line's, recorded. torch's threads and matmul precision are
    the run's while it runs, and the caller's again after. SIGTERM, SIGINT and the preemption signal during
    training save a checkpoint and raise RunInterrupted (summary.json says how to resume)."""
    restore = torch_settings()
    try:
        apply_runtime(exp.runtime, work=_step_work(exp), launcher=launcher, device=exp.device)
        return _train_and_write(exp, RunFiles(out_dir), resume, overrides)
    finally:
        restore()


def _train_and_write(exp: Experiment, files: RunFiles, resume: dict[str, Any] | None,
                     overrides: list[str] | None) -> dict[str, Any]:
    """run_experiment's work, under the run's torch settings."""
    files.create()
    if resume is None:
        files.clear()
    else:
        files.cut_back(resume["recorder"]["csv"]["bytes"])
    started, before = time.time(), resume["wall_seconds"] if resume is not None else 0.0  # earlier attempts' time
    recorder = Recorder(files.root, exp.metrics, heavy_every=exp.metrics_config.heavy_every, sweep=exp.sweep,
                        logger=exp.logger, save_params=exp.metrics_config.save_params,
                        resume=None if resume is None else (resume["recorder"], resume["iteration"]))
    signals, written_by = Signals(), provenance()
    try:
        if resume is None:
            files.write_task(exp.task.state())  # what the task drew, before any work
        params0 = init_params(exp) if resume is None else resume["params0"]
        written = {"config": exp.config, "overrides": overrides, **written_by}

        def extra() -> dict[str, Any]:  # a checkpoint's part besides the loop's
            return {**written, "params0": params0, "recorder": recorder.state_dict(),
                    "wall_seconds": before + time.time() - started}
        with signals:  # a signal after training (the final writes) acts as it would without dynamics_bench
            checkpointer = Checkpointer(exp.checkpoint, files, signals, extra,
                                        0 if resume is None else resume["iteration"])
            result = _train(exp, params0, recorder, checkpointer, resume)
        result.wall_seconds += before
        return _finish(exp, files, result, recorder, overrides, written_by)
    except RunInterrupted as stop:
        files.write_summary(_interrupted(exp, files, stop, overrides, before + time.time() - started, written_by))
        signals.chain()  # after the checkpoint and the summary: submitit's handler requeues the job and exits
        raise
    except Exception as exc:
        write_failed(files.root, exc, exp.config, before + time.time() - started, overrides, written_by)
        raise
    finally:
        recorder.close()


def _train(exp: Experiment, params0: Params, recorder: Recorder, checkpointer: Checkpointer,
           resume: dict[str, Any] | None) -> TrainResult:
    """The training loop of the experiment from θ_0 (or from the checkpoint `resume`), with a progress bar."""
    exp.objective.anchor(params0)
    data_generators = [torch.Generator().manual_seed(s + DATA_SEED_OFFSET) for s in exp.member_seeds]
    batches = make_batches(exp.task, exp.schedule.batch_size, exp.ensemble_size, data_generators)
    x, y = exp.task.data()
    x, y = x.expand(exp.ensemble_size, *x.shape), y.expand(exp.ensemble_size, *y.shape)

    def snapshot(**kw: Any) -> Snapshot:
        return Snapshot(params0=params0, objective=exp.objective, task=exp.task, x=x, y=y, settings=exp.settings, **kw)

    show = exp.logger.progress and sys.stderr.isatty()
    with tqdm(total=_horizon(exp.schedule), disable=not show, leave=False, unit="t",
              bar_format="{l_bar}{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}]") as bar:
        return train(objective=exp.objective, params=params0, batches=batches, schedule=exp.schedule,
                     grid=exp.metrics_config.grid(), on_log=recorder, snapshot=snapshot,
                     progress=_progress(bar, _horizon(exp.schedule)),
                     freeze=not exp.metrics_config.save_params,  # params/ holds every member at each row
                     pause=checkpointer, resume=None if resume is None else loop_state(resume["loop"]))


def _finish(exp: Experiment, files: RunFiles, result: TrainResult, recorder: Recorder,
            overrides: list[str] | None, written_by: dict[str, Any]) -> dict[str, Any]:
    """The finished run's files: final_params.pt, summary.json, TensorBoard's hparams; the checkpoint deleted
    (unless checkpoint.keep). Returns the summary."""
    files.write_final_params(result.params)
    summary = {**_summary(exp, result, recorder.last_rows, recorder.drift_max, recorder.evaluator.seconds,
                          written_by), "overrides": overrides}
    files.write_summary(summary)
    if recorder.tb is not None:
        _write_hparams(recorder, exp, summary)
    if not exp.checkpoint.keep:
        files.delete_checkpoint()
    return summary


def _interrupted(exp: Experiment, files: RunFiles, stop: RunInterrupted, overrides: list[str] | None,
                 wall_seconds: float, written_by: dict[str, Any]) -> dict[str, Any]:
    """summary.json of a run stopped by a signal: where its checkpoint is and how to resume it."""
    saved = files.checkpoint.is_file()
    return {"status": INTERRUPTED, "signal": signal.Signals(stop.signum).name,
            "checkpoint": files.checkpoint.name if saved else None,
            "resume": resume_command(files.root) if saved else None, "wall_seconds": wall_seconds,
            "overrides": overrides, **written_by, "config": exp.config}


def resume_command(run_dir: Path) -> str:
    return f"dynamics-bench resume={run_dir.resolve()}"


def run(cfg: DictConfig | dict, out_dir: str | Path) -> dict[str, Any]:
    """Validate `cfg` (a composed config: see :func:`dynamics_bench.compose`), train, write every output to
    out_dir, and return the summary (also in out_dir/summary.json). Raises ConfigError before any work."""
    return run_experiment(build(cfg), out_dir)


"""Tune only what the MetaSchedule database lacks.

The database lives at ``<cache_dir>/tvm/<hash of the target dict>/`` and outlives the
process. Its key is the structural hash of each fused PrimFunc (shapes, not weights), so
a pruned candidate reuses every workload whose shape did not change and only the
workloads a pruning step created are tuned.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from hwprune_fx.targets.tvm_env import load_cpu_tensor_intrin, worker_initializer

__all__ = ["TuningReport", "MODULE_EQUALITY", "database_dir", "open_database", "extract_tasks",
           "is_tuned", "tune_missing"]

# conv+bias+relu and conv+bias+add+relu share a task: one tuning serves both.
MODULE_EQUALITY = "anchor-block"
# A build imports TVM and the x86 intrinsics before compiling: 30 s is too tight here.
BUILD_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 60.0
#: trials measured per search iteration (MetaSchedule's ``num_trials_per_iter``); the XGBoost
#: cost model is refitted on the measurements after each, so a task's first batch is chosen
#: with an untrained model
TRIALS_PER_BATCH = 64
# MetaSchedule marks a failed measurement with this run time (seconds).
_FAILED_RUN_S = 1e9


@dataclass(frozen=True)
class TuningReport:
    """What preparing one model cost in tuning, and how much the database already knew."""

    workloads_total: int
    already_in_database: int
    newly_tuned: int
    still_untuned: int
    tuning_seconds: float
    trials_per_task: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def database_dir(cache_dir: Path, target: dict[str, Any]) -> Path:
    """``<cache_dir>/tvm/<hash of target>/``: one database per CPU/core-count target."""
    digest = hashlib.sha256(json.dumps(target, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "tvm" / digest


def open_database(tvm: types.ModuleType, path: Path, target: dict[str, Any]) -> Any:
    """The persistent JSON database at ``path`` (created on first use)."""
    from tvm.s_tir import meta_schedule as ms

    path.mkdir(parents=True, exist_ok=True)
    note = path / "target.json"
    if not note.exists():
        note.write_text(json.dumps(target, sort_keys=True) + "\n")
    return ms.database.JSONDatabase(work_dir=str(path), module_equality=MODULE_EQUALITY)


def extract_tasks(tvm: types.ModuleType, legalized: Any, target: Any) -> list[Any]:
    """The fused kernels of a legalized Relax module, one task per distinct workload."""
    from tvm.s_tir import meta_schedule as ms

    return list(ms.relax_integration.extract_tasks(legalized, target, module_equality=MODULE_EQUALITY))


def is_tuned(database: Any, task: Any, target: Any) -> bool:
    """Whether ``task`` has a schedule: ``database`` holds a *successful* measurement of it,
    or it arrived already scheduled (MetaSchedule does not tune those).

    Why not ``has_workload`` alone: a task whose every trial failed to build or run is
    committed as a workload too, with failure run times, and would compile to naive loops.
    """
    attrs = task.mod.attrs
    if attrs is not None and bool(attrs.get("tirx.is_scheduled", False)):
        return True
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return False
    record = database.query_tuning_record(mod, target, "main")
    if record is None or record.run_secs is None:
        return False
    secs = [float(s) for s in record.run_secs]
    return bool(secs) and max(secs) < _FAILED_RUN_S


def _search_strategy(trials: int) -> Any:
    """An evolutionary search whose population is sized to the trial budget.

    Why: the default population (512) costs ~30 s per round on two cores, far more than
    the handful of trials a small budget measures; the cost model is untrained below
    ~100 measurements anyway, so a larger population buys nothing there.
    """
    from tvm.s_tir import meta_schedule as ms

    population = int(min(512, max(64, 8 * trials)))
    return ms.search_strategy.EvolutionarySearch(population_size=population,
                                                 init_min_unmeasured=min(50, population // 2))


@contextlib.contextmanager
def _task_loggers(names: list[str], log_dir: Path) -> Iterator[list[logging.Logger]]:
    """One private logger per task, writing to ``log_dir/<task>.log`` while tuning runs.

    Why not MetaSchedule's own: ``extracted_tasks_to_tune_contexts`` calls
    ``logging.config.dictConfig``, which closes every handler of the host process, adds a
    console handler that prints tuning tables, and crashes when another library (pytest's
    log capture) has attached an unnamed handler to its logger.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    loggers: list[logging.Logger] = []
    try:
        for i, name in enumerate(names):
            logger = logging.getLogger(f"{__name__}.task_{i}_{name[:100]}")
            handler = logging.FileHandler(log_dir / f"task_{i}_{name[:100]}.log", mode="a")
            handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
            loggers.append(logger)
        yield loggers
    finally:
        for logger in loggers:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()


def _tune_contexts(tasks: list[Any], trials: int, loggers: list[logging.Logger]) -> list[Any]:
    from tvm.s_tir import meta_schedule as ms

    return [ms.TuneContext(mod=task.dispatched[0], target=task.target, space_generator="post-order-apply",
                           search_strategy=_search_strategy(trials), task_name=task.task_name,
                           logger=logger, rand_state=seed, num_threads="physical").clone()
            for task, logger, seed in zip(tasks, loggers, ms.utils.fork_seed(None, n=len(tasks)))]


def tune_missing(tvm: types.ModuleType, tasks: list[Any], database: Any, target: Any, trials: int,
                 work_dir: Path, make_runner: Callable[[], Any] | None = None,
                 progress: Callable[[str], None] | None = None, batch: int = TRIALS_PER_BATCH) -> TuningReport:
    """Tune the tasks ``database`` lacks with ``trials`` trials each, measured ``batch`` at a
    time; report what happened.

    The tasks are tuned one after another, sharing one cost model. Why not all in one
    ``tune_tasks`` call: its task scheduler sends a task's candidates to the runner and goes
    on to *build* the next task's while they are timed, so on a small machine (2 cores here)
    the candidates are timed while compiler processes compete for the same cores, and the
    schedule kept is the one that ran fastest beside them.

    ``make_runner`` creates what measures candidates (a local runner by default; an RPC
    runner measures on the remote device); it is called only when something is tuned,
    since creating a runner starts worker processes. Per-task logs go to
    ``work_dir/logs``; ``progress`` gets a line as each task starts (tuning a network takes
    minutes to hours). Failed trials are not an error here: the caller counts
    ``still_untuned`` and decides.
    """
    from tvm.s_tir import meta_schedule as ms

    missing = [task for task in tasks if not is_tuned(database, task, target)]
    seconds = 0.0
    if missing and trials > 0:
        start = time.perf_counter()
        load_cpu_tensor_intrin()  # TuneContext imports the intrinsics in this process too
        init = worker_initializer()
        builder = ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S, initializer=init)
        runner = make_runner() if make_runner else ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, initializer=init)
        with _task_loggers([task.task_name for task in missing], work_dir / "logs") as loggers:
            contexts = _tune_contexts(missing, trials, loggers)
            cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=contexts[0].num_threads,
                                                       tree_method="auto")
            for i, context in enumerate(contexts, 1):
                if progress:
                    progress(f"TVM tuning {i}/{len(contexts)}: {context.task_name}, {trials} trials "
                             f"({time.perf_counter() - start:.0f} s so far; "
                             f"{len(tasks) - len(missing)} of {len(tasks)} workloads already in the database)")
                ms.tune_tasks(tasks=[context], task_weights=[1.0], work_dir=str(work_dir),
                              max_trials_global=trials, max_trials_per_task=trials,
                              num_trials_per_iter=min(batch, trials), builder=builder, runner=runner,
                              database=database, cost_model=cost_model, module_equality=MODULE_EQUALITY)
        seconds = time.perf_counter() - start
    still = sum(not is_tuned(database, task, target) for task in missing)
    return TuningReport(workloads_total=len(tasks), already_in_database=len(tasks) - len(missing),
                        newly_tuned=len(missing) - still, still_untuned=still,
                        tuning_seconds=seconds, trials_per_task=trials)

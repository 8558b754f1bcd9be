"""``hwprune-fx bench``: compare pass pipelines on one model in one measurement session."""
from __future__ import annotations

import os
import time

import click

__all__ = ["bench_command"]


@click.command("bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="ort-cpu", show_default=True, help="Where latency is measured.")
@click.option("--pipeline", "pipelines", multiple=True,
              help='A pass pipeline, e.g. "fold-bn,prune(budget=60%),cleanup" (repeat the option).')
@click.option("--pipeline-file", "pipeline_files", multiple=True, type=click.Path(dir_okay=False),
              help="A YAML/JSON pipeline file (repeat the option).")
@click.option("--calib", "calib_path", type=click.Path(),
              help="Calibration data (.npz/.npy/image folder): data-driven criteria and the fidelity inputs.")
@click.option("--repeat", type=int, default=3, show_default=True, help="Interleaved measurement rounds.")
@click.option("--runs", "runs_per_round", type=int, default=10, show_default=True,
              help="Timed runs per model in each round.")
@click.option("--threads", type=int, default=1, show_default=True, help="Fixed thread count for timing.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Measurement / look-up-table cache.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG bar chart here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def bench_command(model: str, target: str, pipelines: tuple[str, ...], pipeline_files: tuple[str, ...],
                  calib_path: str | None, repeat: int, runs_per_round: int, threads: int, seed: int,
                  cache_dir: str | None, json_path: str | None, plot_path: str | None, quiet: bool) -> None:
    """Run every pipeline on MODEL and print one table: measured latency (median, spread), predicted
    latency, params, MACs, fidelity against the original, and time per pass.

    All outputs and the original are measured in one session with interleaved rounds, on the
    same inputs and seeds, so machine drift cannot favour one pipeline.
    """
    from hwprune_fx.benchmark import bench
    from hwprune_fx.errors import UserError
    from hwprune_fx.pass_infra import Pipeline

    # every pipeline is parsed before any work is done: a typo writes nothing
    parsed = [Pipeline.parse(p) for p in pipelines] + [Pipeline.from_file(f) for f in pipeline_files]
    if not parsed:
        raise UserError("give at least one --pipeline or --pipeline-file")
    if repeat < 1 or threads < 1 or runs_per_round < 1:
        raise UserError("--repeat, --runs and --threads must be >= 1")
    for out in (json_path, plot_path):
        if out and os.path.isdir(out):
            raise UserError(f"{out}: is a directory")
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        if not quiet:
            click.echo(f"[{time.perf_counter() - t0:6.1f}s] {msg}", err=True)

    result = bench(model, parsed, target=target, calib=calib_path, repeat=repeat, threads=threads, seed=seed,
                   runs_per_round=runs_per_round, cache_dir=cache_dir, progress=progress)
    data = result.to_dict()
    click.echo(result.table())
    if json_path:
        from hwprune_fx.emit.files import write_json_atomic

        write_json_atomic(json_path, data)
    if plot_path:
        from hwprune_fx.emit.bench_report import plot_bench

        plot_bench(data, plot_path)

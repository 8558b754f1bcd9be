"""``hwprune-fx`` command line. No logic of its own: it parses, calls the pipeline, prints.

Heavy modules (onnx, torch, the pipeline) are imported inside the commands so that
``hwprune-fx --help`` starts fast.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

import click

from hwprune_fx import __version__
from hwprune_fx.errors import HwpruneError, UserError

__all__ = ["cli", "main"]


class _Progress:
    """Step lines on stderr (``-q`` silences them)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            click.echo(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", err=True)


def _floats(_: Any, __: Any, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers such as 0.485,0.456,0.406, got {value!r}") from None


def _ratio(_: Any, __: Any, value: float | None) -> float | None:
    if value is not None and not 0.0 < value < 1.0:
        raise click.BadParameter(f"must be strictly between 0 and 1, got {value}")
    return value


def _fraction(value: str, example: str) -> float:
    """``3%`` or ``0.03`` -> 0.03; anything else is a usage error naming ``example``."""
    text = value.strip()
    try:
        return float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"expected a percentage such as {example}, got {value!r}") from None


def _percent(_: Any, __: Any, value: str) -> float:
    """``3%`` or ``0.03`` -> 0.03, in [0, 50%)."""
    frac = _fraction(value, "3%")
    if not 0.0 <= frac < 0.5:
        raise click.BadParameter(f"must be in [0%, 50%), got {value}")
    return frac


def _share(_: Any, __: Any, value: str | None) -> float | None:
    """``50%`` or ``0.5`` -> 0.5, in (0, 100%]."""
    if value is None:
        return None
    frac = _fraction(value, "50%")
    if not 0.0 < frac <= 1.0:
        raise click.BadParameter(f"must be in (0%, 100%], got {value}")
    return frac


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwprune-fx")
def cli() -> None:
    """Hardware-aware structured pruning for ONNX models and torch modules."""


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--input-shape", "input_shape", multiple=True,
              help="Static input shape, NAME:1x3x224x224 (or 1x3x224x224 for a single input).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--all", "show_all", is_flag=True, help="Also list single-channel, non-prunable groups.")
def analyze(model: str, input_shape: tuple[str, ...], as_json: bool, show_all: bool) -> None:
    """List the channel groups of MODEL: size, members, prunable or the reason not."""
    from hwprune_fx.analysis import analyze_dependencies
    from hwprune_fx.emit.analysis_report import analysis_table, analysis_to_dict
    from hwprune_fx.frontends.onnx_io import parse_input_shapes
    from hwprune_fx.pipeline import load_onnx_model

    loaded = load_onnx_model(model, parse_input_shapes(input_shape))
    t0 = time.perf_counter()
    analysis = analyze_dependencies(loaded.channel_graph)
    data = analysis_to_dict(analysis, model)
    data["summary"]["analysis_seconds"] = round(time.perf_counter() - t0, 4)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(analysis_table(data, show_all))


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("-o", "--output", required=True, type=click.Path(), help="Where to write the pruned ONNX model.")
@click.option("--budget", help="Latency to reach, measured on the target: 12ms, 800us, 60% (of baseline) or 1.8x.")
@click.option("--ratio", type=float, callback=_ratio,
              help="Instead of a budget: fraction of every prunable channel group to remove, in (0, 1).")
@click.option("--target", default="ort-cpu", show_default=True, help="Where latency is measured.")
@click.option("--search", type=click.Choice(["opti-cut", "hilp", "flops", "uniform"]), default="opti-cut", show_default=True)
@click.option("--criterion", default="l1", show_default=True,
              type=click.Choice(["l1", "l2", "bn", "random", "taylor", "ig", "ig-mean", "similarity"]),
              help="Importance criterion; taylor, ig (information gain), ig-mean (information gain when a "
                   "recalibration restores each channel's mean) and similarity (merge near-copies into their "
                   "twin) need --calib.")
@click.option("--rescore/--no-rescore", default=None,
              help="Score the data-driven criterion again on the network cut so far, each 10% of the baseline "
                   "the search goes down, instead of only on the original [on for ig-mean, off otherwise].")
@click.option("--calib", "calib_path", type=click.Path(),
              help="Calibration inputs for taylor/ig/ig-mean/similarity: a .npz (one array per input), a .npy, or a folder of images.")
@click.option("--calib-limit", type=int, default=64, show_default=True, help="Calibration samples used.")
@click.option("--calib-mean", callback=_floats, help="Image folders: per-channel mean [ImageNet's].")
@click.option("--calib-std", callback=_floats, help="Image folders: per-channel std [ImageNet's].")
@click.option("--calib-resize", type=int, help="Image folders: shorter side before the centre crop.")
@click.option("--align", default="8", show_default=True,
              help="Channel multiple kept per group: N, or 'auto' (per group, from the measured latency staircase).")
@click.option("--threads", type=int, default=1, show_default=True, help="Fixed thread count for timing.")
@click.option("--repeat", type=int, default=20, show_default=True, help="Timed runs per measurement.")
@click.option("--best-effort", is_flag=True, help="Write the best network found even if the budget is missed.")
@click.option("--margin", default="3%", show_default=True, callback=_percent,
              help="How far under the budget the search aims: timings of one network differ by a few percent "
                   "between processes, and the budget must hold in the one that deploys.")
@click.option("--max-group-cut", callback=_share,
              help="opti-cut and flops [50%]: the share of a group's channels the greedy takes while another group "
                   "still has channels within its share (then an eighth of a group more with "
                   "l1/l2/bn/random/similarity, half of what is left with ig/ig-mean/taylor, and so on); "
                   "100%: no cap.")
@click.option("--report", type=click.Path(), help="Write a JSON report here.")
@click.option("--input-shape", "input_shape", multiple=True,
              help="Static input shape, NAME:1x3x224x224 (or 1x3x224x224 for a single input).")
@click.option("--cache-dir", type=click.Path(), help="Measurement cache (default ~/.cache/hwprune-fx).")
@click.option("--no-verify", is_flag=True, help="With --ratio: skip the oracle check (not recommended).")
@click.option("--plot", type=click.Path(), help="Draw latency per search step (predicted vs measured) and per-layer "
                                                "latency before/after (measured on --target) to this PNG; the "
                                                "per-layer numbers also go into --report under \"layers\".")
@click.option("--emit-library", "emit_library", type=click.Path(),
              help="tvm-llvm: also compile the pruned network with the tuning database and write the "
                   "shared library (.so).")
@click.option("--tune-trials", type=int, default=64, show_default=True,
              help="tvm-llvm: MetaSchedule trials per workload missing from the tuning database.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def prune(model: str, output: str, budget: str | None, ratio: float | None, target: str, search: str,
          criterion: str, align: str, threads: int, repeat: int, best_effort: bool, report: str | None,
          input_shape: tuple[str, ...], cache_dir: str | None, no_verify: bool, quiet: bool,
          calib_path: str | None, calib_limit: int, calib_mean: tuple[float, ...] | None,
          calib_std: tuple[float, ...] | None, calib_resize: int | None, plot: str | None,
          emit_library: str | None, tune_trials: int, margin: float, rescore: bool | None,
          max_group_cut: float | None) -> None:
    """Remove channels from MODEL until its measured latency meets --budget (or by --ratio)."""
    from hwprune_fx.calib import CalibrationSource, ImageOptions
    from hwprune_fx.emit.files import write_json_atomic
    from hwprune_fx.emit.prune_summary import budget_summary, prune_summary
    from hwprune_fx.frontends.onnx_io import parse_input_shapes, save_onnx
    from hwprune_fx.pipeline import check_output_path, prune_onnx

    if (budget is None) == (ratio is None):
        raise click.UsageError("give exactly one of --budget or --ratio")
    if max_group_cut is not None and (budget is None or search not in ("opti-cut", "flops")):
        raise click.UsageError("--max-group-cut caps the greedy of --budget with --search opti-cut or flops")
    if rescore and budget is None:
        raise click.UsageError("--rescore re-scores as a budgeted search cuts: it needs --budget")
    if emit_library:
        from hwprune_fx.embed.tvm_build import LIBRARY_TARGETS

        if target not in LIBRARY_TARGETS:
            raise UserError(f"--emit-library compiles with TVM: use --target {' or '.join(LIBRARY_TARGETS)} "
                            f"(got --target {target})")
    progress = _Progress(quiet)
    defaults = ImageOptions()
    calib = None if calib_path is None else CalibrationSource(
        calib_path, calib_limit, ImageOptions(calib_mean or defaults.mean, calib_std or defaults.std, calib_resize))
    outputs = [(flag, path) for flag, path in (("-o", output), ("--report", report), ("--plot", plot),
                                                ("--emit-library", emit_library)) if path]
    for i, (flag, path) in enumerate(outputs):
        check_output_path(path, (model,))
        for other_flag, other in outputs[:i]:
            if os.path.abspath(path) == os.path.abspath(other):
                raise UserError(f"{flag} and {other_flag} name the same file {path}")
    backend_options = {"tune_trials": tune_trials, "progress": progress} if target == "tvm-llvm" else None
    if budget is not None:
        from hwprune_fx.prune_budget import prune_to_budget
        from hwprune_fx.search.budget import parse_budget

        parsed = parse_budget(budget)
        if threads < 1 or repeat < 1:
            raise UserError("--threads and --repeat must be >= 1")
        progress(f"pruning {model} to {budget} on {target}: search {search}, criterion {criterion}")
        out = prune_to_budget(model, parsed, target=target, search=search, criterion=criterion, align=align,
                              threads=threads, repeat=repeat, input_shapes=parse_input_shapes(input_shape),
                              cache_dir=cache_dir, best_effort=best_effort, progress=progress, calib=calib,
                              backend_options=backend_options, margin=margin, rescore=rescore,
                              max_group_cut=max_group_cut)
        rep, pruned = out["report"], out["model"]
        summary = budget_summary
    else:
        progress(f"pruning {model}: ratio {ratio}, criterion {criterion}")
        res = prune_onnx(model, ratio=ratio, criterion=criterion, input_shapes=parse_input_shapes(input_shape),
                         verify_output=not no_verify, calib=calib, progress=progress)
        rep, pruned = res.report, res.model
        progress(f"analysis {rep['seconds']['analysis']:.2f}s: {rep['prunable_groups']} of {rep['groups']} "
                 f"groups prunable, {rep['removed_units']} channels removed")
        summary = prune_summary
    if plot:
        from hwprune_fx.profiling.compare import layer_latency_before_after

        backend = _make_backend(target, threads, repeat, cache_dir, tune_trials, None, None, progress)
        rep["layers"] = layer_latency_before_after(model, pruned, backend, input_shapes=parse_input_shapes(input_shape),
                                                   progress=progress)
    written: list[str] = []
    try:  # the long work is done: write every output, or none of them
        if emit_library:
            from hwprune_fx.embed.tvm_build import export_library

            export_library(pruned, emit_library, target=target, threads=threads, repeat=repeat,
                           tune_trials=tune_trials, cache_dir=cache_dir, progress=progress)
            written.append(emit_library)
            rep["library"] = os.fspath(emit_library)
        if plot:
            from hwprune_fx.emit.prune_plot import plot_prune

            plot_prune(rep, plot)
            written.append(plot)
            rep["plot"] = os.fspath(plot)
        save_onnx(pruned, output)
        written.append(output)
        rep["output"] = os.fspath(output)
        if report:
            write_json_atomic(report, rep)
    except BaseException:
        for path in written:
            if os.path.exists(path):
                os.unlink(path)
        raise
    click.echo(summary(rep))
    for flag, path in (("library", emit_library), ("plot", plot)):
        if path:
            click.echo(f"wrote {flag} {path}")


@cli.command()
@click.argument("name", default="resnet18")
@click.option("-o", "--output", required=True, type=click.Path(), help="Where to write the ONNX model.")
@click.option("--size", type=int, default=None, help="Input side length (default: the model's own).")
@click.option("--seed", type=int, default=0, show_default=True)
def example(name: str, output: str, size: int | None, seed: int) -> None:
    """Build a torchvision classifier NAME with random weights (no download) and export it to ONNX."""
    try:
        import torchvision
    except ImportError:
        raise UserError("the example needs torchvision: pip install 'hwprune-fx[examples]'") from None
    from hwprune_fx.pipeline import check_output_path
    from hwprune_fx.zoo import build_model, export_onnx, input_shape_for

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise UserError(f"unknown model {name!r}; choose a torchvision classifier such as resnet18, mobilenet_v2")
    check_output_path(output, ())
    shape = input_shape_for(name, size)
    export_onnx(build_model(name, seed), shape, output)
    click.echo(f"wrote {output} ({name}, random weights, input {'x'.join(map(str, shape))})")


def _bar_note(msg: str) -> None:
    """A step line on stderr that does not break a progress bar drawn there."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


class _Bar:
    """A tqdm progress bar on stderr whose total is learnt from the first ``(done, total)`` call."""

    def __init__(self, quiet: bool, desc: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=0, desc=desc, disable=quiet, file=sys.stderr, leave=False)

    def __call__(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _make_backend(target: str, threads: int, repeat: int, cache_dir: str | None, tune_trials: int,
                  rpc_tracker: str | None, rpc_key: str | None,
                  progress: Callable[[str], None] | None = None) -> Any:
    from hwprune_fx.targets import TimingConfig, create_backend

    extra: dict[str, Any] = {}
    if target == "tvm-llvm":
        extra = {"tune_trials": tune_trials, "rpc_tracker": rpc_tracker, "rpc_key": rpc_key, "progress": progress}
    elif rpc_tracker or rpc_key:
        raise UserError("--rpc-tracker/--rpc-key need --target tvm-llvm")
    return create_backend(target, timing=TimingConfig(warmup=5, repeat=repeat, threads=threads),
                          cache_dir=cache_dir, **extra)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--target", default="ort-cpu", show_default=True, help="Where to measure (see `hwprune-fx targets`).")
@click.option("--threads", type=int, default=1, show_default=True, help="Fixed thread count for timing.")
@click.option("--repeat", type=int, default=30, show_default=True, help="Timed runs per measurement (median).")
@click.option("--json", "json_path", type=click.Path(), help="Also write the result as JSON here.")
@click.option("--sweep", "sweep_layer_name", help="Sweep this layer's kept channels: the latency staircase.")
@click.option("--axis", type=click.Choice(["out", "in"]), default="out", show_default=True)
@click.option("--points", type=int, default=32, show_default=True, help="Channel counts in a sweep.")
@click.option("--plot", type=click.Path(), help="With --sweep: draw the staircase to this PNG.")
@click.option("--input-shape", "input_shape", multiple=True, help="Static input shape, NAME:1x3x224x224.")
@click.option("--cache-dir", type=click.Path(), help="Measurement cache (default ~/.cache/hwprune-fx).")
@click.option("--tune-trials", type=int, default=64, show_default=True, help="tvm-llvm: MetaSchedule trials per task.")
@click.option("--rpc-tracker", help="tvm-llvm: measure on a remote device via a TVM RPC tracker HOST:PORT.")
@click.option("--rpc-key", help="tvm-llvm: the device key registered with the tracker.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def profile(model: str, target: str, threads: int, repeat: int, json_path: str | None,
            sweep_layer_name: str | None, axis: str, points: int, plot: str | None,
            input_shape: tuple[str, ...], cache_dir: str | None, tune_trials: int,
            rpc_tracker: str | None, rpc_key: str | None, quiet: bool) -> None:
    """Measure MODEL on a target: per-layer table and whole-network latency, or one layer's sweep."""
    from hwprune_fx.emit.files import write_json_atomic
    from hwprune_fx.emit.table import format_table
    from hwprune_fx.frontends.onnx_io import parse_input_shapes
    from hwprune_fx.pipeline import check_output_path, load_onnx_model
    from hwprune_fx.profiling.profile import find_layer, profile_layers
    from hwprune_fx.profiling.sweep import sweep_layer

    if threads < 1 or repeat < 1 or points < 2:
        raise UserError("--threads and --repeat must be >= 1, --points >= 2")
    if plot and not sweep_layer_name:
        raise UserError("--plot draws a sweep: give --sweep LAYER")
    for path in (json_path, plot):
        if path:
            check_output_path(path, (model,))
    backend = _make_backend(target, threads, repeat, cache_dir, tune_trials, rpc_tracker, rpc_key,
                            None if quiet else _bar_note)
    loaded = load_onnx_model(model, parse_input_shapes(input_shape))
    if sweep_layer_name:
        layer = find_layer(loaded.graph, sweep_layer_name)
        full = layer.in_channels if axis == "in" else layer.out_channels
        counts = sorted({max(1, round(1 + (full - 1) * i / (points - 1))) for i in range(points)} | {full})
        bar = _Bar(quiet, f"sweep {layer.name}")
        result = sweep_layer(layer, backend, axis, counts, progress=bar)
        bar.close()
        rows = [[c, round(ms, 4), round(ms / result.ms[-1], 3)] for c, ms in zip(result.counts, result.ms)]
        click.echo(format_table([f"{result.axis} channels", "ms", "vs full"], rows))
        click.echo(f"latency steps at: {', '.join(map(str, result.steps())) or 'none above 5%'}")
        data: dict[str, Any] = {"target": target, "settings": backend.settings(), "sweep": result.to_dict(),
                                "steps": result.steps()}
        if plot:
            from hwprune_fx.emit.plots import plot_sweep

            plot_sweep(result, plot, target)
            click.echo(f"wrote {plot}")
    else:
        bar = _Bar(quiet, "layers")
        data = profile_layers(loaded.graph, loaded.original, backend, progress=bar)
        bar.close()
        rows = [[r["layer"], r["op"], "x".join(map(str, r["input_shape"])), f"{r['in_channels']}->{r['out_channels']}",
                 round(r["ms"], 4), f"{100 * r['share']:.1f}%", r["macs"]] for r in data["layers"]]
        click.echo(format_table(["layer", "op", "input", "channels", "ms", "share", "MACs"], rows))
        w = data["whole"]
        click.echo(f"whole network: {w['median_ms']:.3f} ms median (p10 {w['p10_ms']:.3f}, p90 {w['p90_ms']:.3f}, "
                   f"{w['threads']} thread(s), {target}); sum of layers {data['sum_of_layers_ms']:.3f} ms")
    if json_path:
        write_json_atomic(json_path, data)


@cli.command()
def targets() -> None:
    """List the measurement targets and what each needs."""
    from hwprune_fx.emit.table import format_table
    from hwprune_fx.targets import available_backends

    rows = [[name, cls.description, cls.requires] for name, cls in sorted(available_backends().items())]
    click.echo(format_table(["target", "what", "needs"], rows, max_width=70))


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one line on stderr and a non-zero exit."""
    debug = bool(os.environ.get("HWPRUNE_FX_DEBUG"))
    try:
        rc = cli.main(args=argv, prog_name="hwprune-fx", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except HwpruneError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback for users
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(f"internal error: {type(exc).__name__}: {first} "
                   f"(set HWPRUNE_FX_DEBUG=1 for the traceback)", err=True)
        sys.exit(3)
    sys.exit(rc if isinstance(rc, int) else 0)


from hwprune_fx.cli_passes import passes as _passes_command  # noqa: E402  (`hwprune-fx passes`)
cli.add_command(_passes_command)
from hwprune_fx.cli_bench import bench_command as _bench_command  # noqa: E402  (`hwprune-fx bench`)
cli.add_command(_bench_command)

if __name__ == "__main__":  # pragma: no cover
    main()

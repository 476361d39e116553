"""The ``hwloop`` command line: ``train``, ``eval``, ``runs list|show|compare``, ``devices``,
``device serve``, ``export``, ``import``, ``study run|show|report``.

Exit status: 0 success; 1 a run that could not go on (disk full, NaN loss) or an internal
error; 2 bad input (one line ``error: <what is wrong and how to fix it>`` on stderr, before
any output file is created or changed); 130 / 143 stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

import hwloop
from deploy import DESCRIPTIONS as EXPORT_FORMATS
from hwloop.backends import backend_listing
from hwloop.config import TrainConfig, build_config, load_config_file
from hwloop.errors import RunError, UserError
from hwloop.evaluation import Evaluation, evaluate, save_evaluation
from hwloop.interrupts import Interrupted, critical, stop_on_signals
from hwloop.jsonout import dumps
from hwloop.runs import RUN_FILE, compare_runs, find_runs, read_run, record_summary
from hwloop.threads import configure_threads
from hwloop.training import TrainingCallbacks
from hwloop.training import TrainingPlan, plan_training, run_plan
from hwloop.trainer import EpochMetrics, StepMetrics, Trainer

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEFAULTS = TrainConfig()


class _Stopped(Exception):
    """Carries a KeyboardInterrupt (Ctrl-C, or ``Interrupted`` by a signal) past click, which
    would otherwise print an empty line and lose the message."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__()
        self.interrupt = interrupt


class HwloopGroup(click.Group):
    """A click group whose every error is one line on stderr, with hwloop's exit statuses."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as interrupt:
            raise _Stopped(interrupt) from None

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as error:
            click.echo(error.ctx.get_help() if error.ctx else "")
            sys.exit(0)
        except UserError as error:
            _fail(str(error), EXIT_BAD_INPUT)
        except RunError as error:
            _fail(str(error), EXIT_FAILED)
        except _Stopped as stopped:
            interrupt = stopped.interrupt
            if isinstance(interrupt, Interrupted):
                _fail(interrupt.message, interrupt.exit_status)
            _fail("interrupted; nothing was written", 130)
        except click.exceptions.Abort:  # Ctrl-C while click itself was parsing
            _fail("interrupted; nothing was written", 130)
        except click.ClickException as error:
            _fail(error.format_message(), error.exit_code)
        except MemoryError:
            _fail("out of memory; use a smaller network, batch or task", EXIT_FAILED)
        except Exception as error:  # a bug: one line unless HWLOOP_TRACEBACK asks for more
            if os.environ.get("HWLOOP_TRACEBACK"):
                raise
            _fail(f"internal error ({type(error).__name__}: {error}); rerun with "
                  "HWLOOP_TRACEBACK=1 to see where, and please report it", EXIT_FAILED)
        sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


@click.group("hwloop", cls=HwloopGroup, context_settings=CONTEXT)
@click.version_option(hwloop.__version__, "-V", "--version", prog_name="hwloop")
def main() -> None:
    """Train spiking neural networks with the neuromorphic device in the loop.

    Start with `hwloop train --out runs/demo --epochs 5`, then `hwloop runs show runs/demo`
    and `hwloop eval runs/demo`. Every command takes -h for its options.
    """


def _default(key: str) -> str:
    value = getattr(DEFAULTS, key)
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return f" [default: {value}]"


@main.command(context_settings=CONTEXT)
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML config file (keys as in docs/cli.md).")
@click.option("--task", help="cue, digits, shd or ssc." + _default("task"))
@click.option("--neuron", help="lif, alif, adlif, brf or loihi_lif (Lava's integer LIF; "
              "needs --dtype float64)." + _default("neuron"))
@click.option("--learner", help="hypr, eprop, bptt, or eprop-onchip (the device learns, e.g. "
              "SpiNNaker 2)." + _default("learner"))
@click.option("--lambda", "lam", type=int, help="HYPR subsequence length λ ≥ 1 (steps)."
              + _default("lam"))
@click.option("--epochs", type=int, help="Passes over the training split." + _default("epochs"))
@click.option("--seed", type=int, help="Seed of every random source: data, initialisation, "
              "shuffling, device noise." + _default("seed"))
@click.option("--batch-size", type=int, help="Samples per optimizer step."
              + _default("batch_size"))
@click.option("--lr", type=float, help="Learning rate (presets may change it)." + _default("lr"))
@click.option("--hidden", help="Hidden layer widths, comma-separated, e.g. 64,64."
              + _default("hidden"))
@click.option("--recurrence", help="none, full or self." + _default("recurrence"))
@click.option("--dtype", help="float32 or float64." + _default("dtype"))
@click.option("--device", help="cpu, cuda or cuda:N." + _default("device"))
@click.option("--backend", help="Device in the loop: none, ideal, pcm, loihi2, loihi2-lava or "
              "a spec such as pcm://?mode=verify (docs/backends.md)." + _default("backend"))
@click.option("--bits", type=int, help="Weight bits on the device (2..8) [default: the "
              "backend's].")
@click.option("--scheme", help="Update scheme on the device: direct, mixed, sign or "
              "stochastic." + _default("scheme"))
@click.option("--forward", help="Where the forward pass runs: host (with the read-back "
              "weights) or device (the backend's crossbar, or the whole network on a device "
              "that runs it, e.g. Loihi 2)." + _default("forward"))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--checkpoint-every", type=int, help="Also checkpoint every this many optimizer "
              "steps [default: after every epoch only].")
@click.option("--threads", type=int, help="CPU threads for torch [default: the cores this "
              "process may use].")
@click.option("--dry-run", is_flag=True, help="Validate everything and print the resolved "
              "config; train nothing, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar and no description of the run on "
              "stderr (errors are still printed).")
@click.argument("overrides", nargs=-1)
def train(
    config_file: str | None,
    hidden: str | None,
    out: str,
    overwrite: bool,
    resume: bool,
    checkpoint_every: int | None,
    threads: int | None,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
    overrides: tuple[str, ...],
    **options: Any,
) -> None:
    """Train a network into the run directory --out.

    KEY=VALUE arguments override any config key, e.g. epochs=3 task_options.delay=80
    neuron_options.dt=0.02 (docs/cli.md lists the keys)."""
    configure_threads(threads)
    if hidden is not None:
        options["hidden"] = _parse_widths(hidden)
    config: TrainConfig | None = None
    if resume:
        given = [k for k, v in options.items() if v is not None and k != "epochs"]
        if config_file or overrides or given:
            raise UserError("--resume continues a run with its stored config; only --epochs "
                            "may be given (to extend it)")
    else:
        file_values = load_config_file(config_file) if config_file else None
        config = build_config(file_values, list(overrides), **options)
    plan = plan_training(config, out, resume=resume, overwrite=overwrite,
                         epochs=options["epochs"] if resume else None,
                         checkpoint_every=checkpoint_every)
    if dry_run:
        plan.trainer.close()
        _print_plan(plan, as_json)
        return
    console = Console(stderr=True)
    start = time.perf_counter()
    bar_display = Progress(
        TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
        console=console, disable=quiet or as_json, transient=False,
    )
    bar = bar_display.add_task("train", total=plan.trainer.steps_per_epoch, epoch=0, status="",
                               start=False)
    started = []
    try:

        def on_start(trainer: Trainer) -> None:  # the directory is locked: training starts
            if not (as_json or quiet):
                console.print(_plan_line(plan))
            bar_display.start()
            started.append(True)
            bar_display.reset(bar, total=trainer.steps_per_epoch, epoch=trainer.epoch + 1,
                              completed=0 if trainer.progress is None
                              else trainer.progress.steps_done, status="")

        def on_step(metrics: StepMetrics) -> None:
            bar_display.update(bar, advance=1, status=f"loss {metrics.loss:.4f} acc "
                               f"{metrics.accuracy:.3f}")

        def on_epoch(metrics: EpochMetrics) -> None:
            bar_display.update(bar, status=f"loss {metrics.train_loss:.4f} test acc "
                               f"{metrics.test_accuracy:.3f}")
            if metrics.epoch < plan.config.epochs:
                bar_display.reset(bar, total=plan.trainer.steps_per_epoch,
                                  epoch=metrics.epoch + 1, status="")

        record = run_plan(plan, TrainingCallbacks(on_start, on_step, on_epoch))
    finally:
        if started:
            bar_display.stop()
    summary = record_summary(record)
    summary["seconds"] = time.perf_counter() - start
    if as_json:
        click.echo(dumps(summary))
        return
    where = "" if summary["device"] is None else f" on device {summary['backend']}"
    click.echo(f"test accuracy{where} {_fmt(summary['final_test_accuracy'])} (final epoch); "
               f"best {summary['selection_split']} accuracy {_fmt(summary['best_accuracy'])} "
               f"(epoch {summary['best_epoch']}); train loss "
               f"{_fmt(summary['final_train_loss'])}; {summary['seconds']:.1f} s -> "
               f"{record.path}")
    if summary["writes"] is not None:
        writes = summary["writes"]
        click.echo(f"device: mean write error {writes['mean_write_error']:.4g} (weight units), "
                   f"{writes['cells_written']} cells written, {writes['pulses']} pulses, "
                   f"{writes['failures']} failures, {writes['device_seconds']:.3g} s device "
                   "time")


def _plan_line(plan: TrainingPlan) -> str:
    config, trainer = plan.config, plan.trainer
    text = (f"{plan.task.description} · {config.neuron} · {_learner_text(config.learner, config.lam)} · "
            f"{sum(p.numel() for p in trainer.network.parameters())} parameters · seed "
            f"{config.seed}")
    if trainer.session is not None:
        caps = trainer.session.backend.capabilities()
        bits = "" if caps.bits is None else f", {caps.bits} bits"
        text += (f" · device {config.backend} ({caps.weight_format}{bits}), scheme "
                 f"{config.scheme}, products on the {config.forward}")
    if plan.resumed is not None:
        text += f" · resuming after step {trainer.step} (epoch {trainer.epoch} done)"
    return text


def _print_plan(plan: TrainingPlan, as_json: bool) -> None:
    directory = plan.directory.path
    if plan.resumed is not None:
        status = f"resume after step {plan.trainer.step}"
    elif (directory / RUN_FILE).exists():
        status = "replace the run there (--overwrite)"
    else:
        status = "new run"
    payload = {
        "out": str(directory), "action": status, "task": plan.task.description,
        "parameters": sum(p.numel() for p in plan.trainer.network.parameters()),
        "presets_applied": plan.presets, "config": plan.config.to_dict(),
    }
    if as_json:
        click.echo(dumps(payload))
        return
    click.echo(f"dry run: everything is valid; nothing was trained or written.\n"
               f"out: {directory} ({status})\n{_plan_line(plan)}")
    click.echo("presets applied beneath your values: "
               + (dumps(plan.presets) if plan.presets else "none"))
    click.echo("resolved config:")
    for key, value in plan.config.to_dict().items():
        click.echo(f"  {key} = {dumps(value)}")


@main.command("eval", context_settings=CONTEXT)
@click.argument("run", type=click.Path())
@click.option("--weights", default="final", show_default=True,
              help="final or best (the best epoch's weights).")
@click.option("--backend", help="Backend spec of fresh devices [default: the run's own "
              "backend; the host for a run trained without a device].")
@click.option("--bits", type=int, help="Weight bits of the fresh devices [default: the run's].")
@click.option("--drift", default="0", show_default=True,
              help="Drift times, comma-separated, with units s, min, h, d, w, mo, y "
              "(e.g. 0,1h,1d,1mo).")
@click.option("--device-seeds", type=int, default=1, show_default=True,
              help="Fresh devices to program and evaluate (0: only the run's own device).")
@click.option("--gdc", default="on", show_default=True,
              help="Global drift compensation: on, off or both.")
@click.option("--forward", help="host or device (products on the device) [default: as the "
              "run trained].")
@click.option("--split", default="test", show_default=True, help="test or validation.")
@click.option("--name", help="File name of the results in RUN/eval [default: backend, weights "
              "and a digest of the settings].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def eval_command(run: str, name: str | None, as_json: bool, **settings: Any) -> None:
    """Evaluate a run on devices: accuracy and loss per drift time and device seed.

    Stores RUN/eval/NAME.json, .png and .svg; the training record is not touched
    (docs/eval.md)."""
    with stop_on_signals():  # Ctrl-C or SIGTERM: one line, exit 130/143, no partial file
        result = evaluate(run, **settings)
        with critical():
            paths = save_evaluation(result, name)
    if as_json:
        click.echo(dumps({**result.to_dict(), "files": [str(p) for p in paths]}))
        return
    _print_evaluation(result)
    click.echo(f"{result.seconds:.1f} s -> {', '.join(str(p) for p in paths)}")


def _print_evaluation(result: Evaluation) -> None:
    console = Console()
    devices = f"{result.device_seeds} fresh device(s)" if result.device_seeds else ""
    console.print(f"{result.run}: {result.weights} weights on {result.backend}"
                  f"{'' if result.bits is None else f' ({result.bits} bits)'}, {devices} "
                  f"products on the {result.forward}, {result.split} split")
    table = _table("device", "drift", "gdc", "n", "accuracy", "loss")
    for entry in result.summary():
        gdc = {None: "-", True: "on", False: "off"}[entry["gdc"]]
        table.add_row(entry["device"], entry["drift"], gdc, str(entry["n"]),
                      _mean_std(entry["accuracy_mean"], entry["accuracy_std"]),
                      _mean_std(entry["loss_mean"], entry["loss_std"]))
    console.print(table)


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


@main.group(context_settings=CONTEXT, invoke_without_command=False)
def runs() -> None:
    """List, show and compare run directories."""


@runs.command("list", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(), default=".")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_command(directory: str, as_json: bool) -> None:
    """One line per run found under DIRECTORY (default: here)."""
    rows = find_runs(directory)
    if as_json:
        click.echo(dumps(rows))
        return
    if not rows:
        click.echo(f"no runs under {directory}")
        return
    table = _table("run", "task", "neuron", "learner", "device", "bits", "scheme", "epochs",
                   "best acc", "final acc")
    for row in rows:
        table.add_row(row["path"], _fmt(row["task"]), _fmt(row["neuron"]), _fmt(row["learner"]),
                      _fmt(row["device"]), _fmt(row["bits"]), _fmt(row["scheme"]),
                      f"{row['epochs_done']}/{_fmt(row['epochs_planned'])}",
                      _fmt(row["best_accuracy"]), _fmt(row["final_test_accuracy"]))
    Console().print(table)


@runs.command("show", context_settings=CONTEXT)
@click.argument("run", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def show(run: str, as_json: bool) -> None:
    """Summarise RUN (a run directory or its run.h5), damaged runs included."""
    summary = record_summary(read_run(run, lenient=True))
    if as_json:
        click.echo(dumps(summary))
        return
    console = Console()
    for problem in summary["damage"]:
        console.print(f"[bold red]damaged:[/bold red] {problem}")
    console.print(f"[bold]{summary['path']}[/bold]  {_fmt(summary['task'])} · "
                  f"{_fmt(summary['neuron'])} · {_learner_text(summary['learner'], summary['lambda'])} · seed "
                  f"{_fmt(summary['seed'])}")
    console.print(f"epochs {summary['epochs_done']}/{_fmt(summary['epochs_planned'])}, final "
                  f"test accuracy {_fmt(summary['final_test_accuracy'])}, best "
                  f"{summary['selection_split']} accuracy {_fmt(summary['best_accuracy'])} "
                  f"(epoch {_fmt(summary['best_epoch'])}), final train loss "
                  f"{_fmt(summary['final_train_loss'])}, {summary['seconds']:.1f} s")
    device, writes = summary["device"], summary["writes"]
    if device is None:
        console.print("device: none (trained on the host)")
    else:
        bits = "backend default" if device["bits"] is None else f"{device['bits']} bits"
        console.print(f"device: {device['backend']}, {bits}, scheme {device['scheme']}, "
                      f"products on the {device['forward']}, options "
                      f"{dumps(device['backend_options'])}")
    if writes is not None:
        console.print(f"writes: {writes['updates']} updates, {writes['cells_written']} cells "
                      f"({writes['cells_per_update']:.1f} per update), {writes['pulses']} "
                      f"pulses, {writes['failures']} failures, {writes['clipped']} clipped, "
                      f"mean write error "
                      f"{writes['mean_write_error']:.4g} (max per update "
                      f"{writes['max_write_error']:.4g}), {writes['device_seconds']:.3g} s "
                      f"device time")
        if writes["device_runs"]:
            console.print(f"device runs: {writes['device_runs']} batches, "
                          f"{writes['spike_mismatches']} spikes where the device and the "
                          "host's replay differ")
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()))
    table = _table("epoch", "train loss", "train acc", "test acc", "val acc", "seconds")
    for row in summary["epochs"]:
        table.add_row(str(row["epoch"]), _fmt(row["train_loss"]), _fmt(row["train_accuracy"]),
                      _fmt(row["test_accuracy"]), _fmt(row["validation_accuracy"]),
                      f"{row['seconds']:.2f}")
    console.print(table)
    if summary["config"] is not None:
        console.print("config: " + ", ".join(f"{k}={dumps(v)}"
                                             for k, v in summary["config"].items()))


@runs.command("compare", context_settings=CONTEXT)
@click.argument("run_paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(run_paths: tuple[str, ...], as_json: bool) -> None:
    """Config differences and metrics of two or more runs side by side."""
    if len(run_paths) < 2:
        raise UserError("give two or more runs to compare")
    comparison = compare_runs([read_run(path, lenient=True) for path in run_paths])
    if as_json:
        click.echo(dumps(comparison))
        return
    console = Console()
    names = comparison["runs"]
    table = _table("", *names)
    table.add_row("[bold]config differences[/bold]", *[""] * len(names))
    if not comparison["config_differences"]:
        table.add_row("(none)", *[""] * len(names))
    for key, values in comparison["config_differences"].items():
        table.add_row(key, *[dumps(v) for v in values])
    table.add_row("[bold]metrics[/bold]", *[""] * len(names))
    for key, values in comparison["metrics"].items():
        table.add_row(key, *[_fmt(v) for v in values])
    console.print(table)


@main.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def devices(as_json: bool) -> None:
    """List the installed device backends and their capabilities (broken ones too)."""
    listing = backend_listing()
    if as_json:
        click.echo(dumps(listing))
        return
    table = _table("backend", "weights", "bits", "levels", "tile", "products", "drift",
                   "compensation", "runs on device", "learns on device")
    for caps in listing:
        if caps.get("broken"):
            table.add_row(caps["name"], f"[red]broken:[/red] {caps['broken']}",
                          *[""] * 8)
            continue
        table.add_row(caps["name"], caps["weight_format"], _fmt(caps["bits"]),
                      _fmt(caps["levels"]), _fmt(caps["tile_size"]), _yes(caps["mvm"]),
                      _yes(caps["time"]), _yes(caps["compensation"]),
                      ", ".join(caps["neurons"]) or "-", ", ".join(caps["learners"]) or "-")
    Console().print(table)


EXPORT_HELP = (
    "Export a trained RUN (a run directory or run.h5) for hardware. Every file records hwloop's "
    "version, the source run and a checksum that loading verifies; a run trained with a device "
    "in the loop exports what its device held. Nothing is written on an error.\n\n\b\nFormats:\n"
    + "\n".join(f"  {name}: {text}" for name, text in EXPORT_FORMATS.items())
)


@main.command("export", context_settings=CONTEXT, help=EXPORT_HELP)
@click.argument("run", type=click.Path())
@click.option("--format", "fmt", required=True, type=click.Choice(list(EXPORT_FORMATS)),
              help="The hardware format (see below).")
@click.option("--out", required=True, type=click.Path(), help="The file to write.")
@click.option("--weights", type=click.Choice(("final", "best")), default="final",
              show_default=True, help="Which of the run's weights.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--weight-format", type=click.Choice(("f32", "s16.15", "int8", "int4")),
              help="spinnaker2: the weights' format in SRAM (default: the run's, else f32).")
@click.option("--bits", type=int, help="netx: weight bits of a run not trained on Loihi 2 "
              "(2..8; default the run's, else 8).")
@click.option("--standard-only", is_flag=True, default=None,
              help="nir: refuse models that need hwloop's extension nodes.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export_command(run: str, fmt: str, out: str, weights: str, overwrite: bool,
                   weight_format: str | None, bits: int | None, standard_only: bool | None,
                   as_json: bool) -> None:
    from deploy import export_run

    options: dict[str, Any] = {}
    for name, value, owner in (("weight_format", weight_format, "spinnaker2"),
                               ("bits", bits, "netx"), ("standard_only", standard_only, "nir")):
        if value is not None:
            if fmt != owner:
                raise UserError(f"--{name.replace('_', '-')} applies to --format {owner} only")
            options[name] = value
    path = export_run(run, fmt, out, weights=weights, overwrite=overwrite, **options)
    result = {"path": str(path), "format": fmt, "weights": weights, "bytes": path.stat().st_size}
    click.echo(dumps(result) if as_json else f"wrote {fmt} export of {run} ({weights} weights) "
               f"to {path} ({result['bytes']:,} B)")


@main.command("import", context_settings=CONTEXT)
@click.argument("file", type=click.Path())
@click.option("--out", required=True, type=click.Path(),
              help="The run directory to create (hwloop eval and train --resume use it).")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
def import_command(file: str, out: str, overwrite: bool) -> None:
    """Import an hwloop NIR export FILE as a run directory: the network with its exported
    parameters, on the host (backend none), ready for `hwloop eval` and for further training
    (`hwloop train --out OUT --resume --epochs N`). The file's checksum is verified first."""
    from deploy.nir import import_run

    path = import_run(file, out, overwrite=overwrite)
    click.echo(f"imported {file} into {path}")


DEVICE_SERVERS = ("spinnaker2",)
"""Devices ``hwloop device serve`` can emulate behind a serial link."""


@main.group(context_settings=CONTEXT, invoke_without_command=False)
def device() -> None:
    """Emulated devices behind a link, for host code that will talk to real hardware."""


@device.command("serve", context_settings=CONTEXT)
@click.argument("name", type=click.Choice(DEVICE_SERVERS))
@click.option("--port", default="pty", show_default=True,
              help="pty (a pseudo-terminal) or socket://127.0.0.1:PORT (PORT 0 picks a free "
                   "one); another address only if you name it.")
@click.option("--numeric", type=click.Choice(("f32", "s16.15")), default="f32",
              show_default=True, help="The PEs' arithmetic.")
@click.option("--n-pe", type=click.IntRange(1, 152), default=152, show_default=True,
              help="Processing elements of the chip.")
def serve_command(name: str, port: str, numeric: str, n_pe: int) -> None:
    """Serve an emulated NAME chip on a serial link until Ctrl-C; prints where to connect,
    e.g. `--backend "spinnaker2://?port=socket://127.0.0.1:5000"`."""
    from simulators.spinnaker2.server import serve

    try:
        serve(port, numeric=numeric, n_pe=n_pe, announce=click.echo)
    except ValueError as error:
        raise UserError(str(error)) from None
    except OSError as error:
        raise UserError(f"cannot serve {name} on {port!r}: {error.strerror or error}") from None


@main.group(context_settings=CONTEXT, invoke_without_command=False)
def study() -> None:
    """Robustness studies: grids of trainings and evaluations on Dask (docs/studies.md)."""


@study.command("run", context_settings=CONTEXT)
@click.argument("study_file", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="The study directory (created; a re-run continues it).")
@click.option("--workers", type=int, help="Worker processes of a local Dask cluster on "
              "127.0.0.1 [default: the cores this process may use // [study] threads].")
@click.option("--scheduler", help="Use the Dask cluster of this scheduler (tcp://HOST:PORT) "
              "instead of a local one.")
@click.option("--dashboard", is_flag=True, help="Serve the Dask dashboard of the local cluster "
              "on 127.0.0.1 (needs bokeh) and print its address.")
@click.option("--dry-run", is_flag=True, help="Validate the study and list its trials; run "
              "nothing, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def study_run(study_file: str, overrides: tuple[str, ...], out: str, workers: int | None,
              scheduler: str | None, dashboard: bool, dry_run: bool, as_json: bool,
              quiet: bool) -> None:
    """Run every trial of STUDY_FILE (TOML) into --out; a re-run skips finished trials.

    KEY=VALUE arguments override the file: study.replicates=1, grid.bits=[2,4],
    evaluate.drift=["0","1d"], or a [base] key such as epochs=3. Exit status 1 when trials
    failed (their errors are in `hwloop study show`)."""
    from hwloop.study import StudyStore, check_trials, load_study, open_cluster, run_study
    from hwloop.study.runner import check_cluster_options

    plan = load_study(study_file, list(overrides))
    check_cluster_options(workers, scheduler, plan.settings.threads, dashboard)
    check_trials(plan)
    store = StudyStore(out, plan)
    stored = store.check()
    finished = set(stored.results) if stored is not None else set()
    todo = [trial for trial in plan.trials if trial.id not in finished]
    if dry_run:
        outcome = {"study": plan.settings.name, "out": out, "trials": len(plan.trials),
                   "points": len(plan.points), "finished": len(finished),
                   "to_run": [trial.id for trial in todo]}
        if as_json:
            click.echo(dumps(outcome))
            return
        click.echo(f"study {plan.settings.name}: {len(plan.trials)} trials ({len(plan.points)} "
                   f"points), {len(finished)} finished, {len(todo)} to run in {out}")
        for trial in todo:
            click.echo(f"  {trial.id}")
        return
    console = Console(stderr=True)
    bar_display = Progress(
        TextColumn("trials"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console, disable=quiet or as_json,
    )
    bar = bar_display.add_task("study", total=len(plan.trials), failed=0)
    start = time.perf_counter()
    with stop_on_signals():
        try:
            cluster = open_cluster(workers, scheduler, plan.settings.threads, dashboard)
            try:
                store.open()
                try:
                    if not (quiet or as_json):
                        layout = cluster.layout
                        console.print(f"study {plan.settings.name}: {len(todo)} of "
                                      f"{len(plan.trials)} trials to run on {layout.workers} "
                                      f"worker(s) ({layout.scheduler}) × "
                                      f"{layout.torch_threads} torch thread(s) -> {out}",
                                      highlight=False)
                        if layout.dashboard:
                            console.print(f"dashboard: {layout.dashboard}")
                    with bar_display:
                        progress = run_study(plan, store, cluster, on_progress=lambda p: (
                            bar_display.update(bar, completed=p.skipped + p.done + p.failed,
                                               failed=p.failed)))
                finally:
                    store.close()
            finally:
                cluster.close()
        except KeyboardInterrupt as stop:
            interrupted = stop if isinstance(stop, Interrupted) else Interrupted(signal.SIGINT)
            done = len(store.state.results) if store.state is not None else len(finished)
            interrupted.message = (f"interrupted by {interrupted.signal_name}; {done} of "
                                   f"{len(plan.trials)} trials are stored in {out}; run the "
                                   "same command to continue")
            raise interrupted from None
    outcome = {"study": plan.settings.name, "out": out, "trials": len(plan.trials),
               "skipped": progress.skipped, "done": progress.done, "failed": progress.failed,
               "retried": progress.retried, "seconds": time.perf_counter() - start,
               "layout": dataclasses.asdict(cluster.layout)}
    if as_json:
        click.echo(dumps(outcome))
    else:
        click.echo(f"{progress.done} trials done, {progress.skipped} already finished, "
                   f"{progress.failed} failed ({progress.retried} retries) in "
                   f"{outcome['seconds']:.1f} s -> {out}; see `hwloop study show {out}` and "
                   f"`hwloop study report {out}`")
    if progress.failed:
        sys.exit(EXIT_FAILED)


@study.command("show", context_settings=CONTEXT)
@click.argument("directory", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print status and summary as JSON.")
def study_show(directory: str, as_json: bool) -> None:
    """Status of the study in DIRECTORY and accuracy (mean ± std over replicates)."""
    from hwloop.study import read_study
    from hwloop.study.report import headlines, summary

    state = read_study(directory)
    counts = {status: 0 for status in ("done", "failed", "pending")}
    for trial_id in state.trial_ids:
        counts[state.status(trial_id)] += 1
    rows = summary(state)
    if as_json:
        click.echo(dumps({"study": state.plan["settings"], "counts": counts,
                          "failed": state.failed, "sessions": state.sessions,
                          "headlines": headlines(state), "summary": rows}))
        return
    settings = state.plan["settings"]
    click.echo(f"study {settings['name']}: {len(state.trial_ids)} trials: {counts['done']} done, "
               f"{counts['failed']} failed, {counts['pending']} pending")
    if state.sessions:
        layout = state.sessions[-1]["layout"]
        click.echo(f"last run: {layout['workers']} worker(s) ({layout['scheduler']}) × "
                   f"{layout['torch_threads']} torch thread(s), started "
                   f"{state.sessions[-1]['started']}")
    for trial_id, failure in state.failed.items():
        click.echo(f"failed {trial_id} after {failure['attempts']} attempt(s): "
                   f"{failure['error']}")
    for line in headlines(state):
        click.echo(line)
    if rows:
        Console().print(_study_table(state, rows))


def _study_table(state: Any, rows: list[dict[str, Any]]) -> Table:
    """Accuracy per point group (axes without replicate), device and GDC; drift in columns."""
    axes = [name for name in state.plan["axes"] if name not in ("evaluate.drift",)]
    drifts = list(dict.fromkeys(row["drift"] for row in
                                sorted(rows, key=lambda row: row["drift_seconds"])))
    table = _table(*axes, "device", "gdc", *(f"acc @ {drift}" for drift in drifts))
    groups: dict[tuple[Any, ...], dict[str, str]] = {}
    for row in rows:
        key = (*(dumps(row.get(name)) for name in axes), row["device"], _gdc_text(row["gdc"]))
        groups.setdefault(key, {})[row["drift"]] = _percent(row["accuracy_mean"],
                                                            row["accuracy_std"])
    for key, cells in groups.items():
        table.add_row(*(str(part).strip('"') for part in key),
                      *(cells.get(drift, "") for drift in drifts))
    return table


def _gdc_text(gdc: bool | None) -> str:
    return "-" if gdc is None else ("on" if gdc else "off")


def _percent(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.1f}" + ("" if std is None else f"±{100 * std:.1f}")


@study.command("report", context_settings=CONTEXT)
@click.argument("directory", type=click.Path())
@click.option("--out", "report_dir", type=click.Path(file_okay=False),
              help="Where to write the report [default: DIRECTORY/report].")
@click.option("--open", "open_browser", is_flag=True, help="Open report.html in a browser.")
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
def study_report(directory: str, report_dir: str | None, open_browser: bool,
                 as_json: bool) -> None:
    """Write CSV tables, plots (PNG, SVG) and one HTML page for the study in DIRECTORY."""
    import webbrowser
    from pathlib import Path

    from hwloop.study import read_study
    from hwloop.study.report import write_report

    state = read_study(directory)
    target = Path(report_dir) if report_dir is not None else Path(directory) / "report"
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {target} is a file; choose a directory")
    paths = write_report(state, target)
    html = target / "report.html"
    if as_json:
        click.echo(dumps({"report": str(html), "files": [str(path) for path in paths]}))
    else:
        click.echo(f"wrote {len(paths)} files to {target}; open {html}")
    if open_browser:
        webbrowser.open(html.resolve().as_uri())


def _table(*columns: str) -> Table:
    """A table whose cells wrap (never cut) to fit the terminal."""
    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def _parse_widths(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--hidden must list layer widths like 64,64, got {text!r}") from None


def _learner_text(learner: str | None, lam: int | None) -> str:
    return (learner or "-") + (f" λ={lam}" if learner == "hypr" else "")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()

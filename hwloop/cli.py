"""The ``hwloop`` command line: ``train``, ``runs show``, ``devices``.

Bad input prints one line ``error: <what is wrong and how to fix it>`` on stderr and exits with
status 2, before any output file is created or changed.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import hwloop
from hwloop.backends import available_backends, open_backend
from hwloop.config import build_config, load_config_file
from hwloop.errors import UserError
from hwloop.trainer import EpochMetrics, StepMetrics, Trainer
from hwloop.plots import plot_curves
from hwloop.runs import RUN_FILE, device_summary, now_iso, read_run, record_summary, write_run
from hwloop.tasks import make_task

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class HwloopGroup(click.Group):
    """A click group whose every error is one line on stderr (exit status 2 for bad input)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except UserError as error:
            _fail(str(error))
        except click.ClickException as error:
            _fail(error.format_message().replace("\n", " "), error.exit_code)
        except click.exceptions.Abort as error:  # click wraps KeyboardInterrupt in Abort
            if isinstance(error.__cause__, KeyboardInterrupt):
                _fail("interrupted; the run file holds the last finished epoch (continue with "
                      "--resume)", EXIT_INTERRUPTED)
            _fail("aborted", 1)
        sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(cls=HwloopGroup)
@click.version_option(hwloop.__version__, prog_name="hwloop")
def main() -> None:
    """Train spiking neural networks with the neuromorphic device in the loop."""


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--task", help="cue, digits, shd or ssc.")
@click.option("--neuron", help="lif, alif, adlif or brf.")
@click.option("--learner", help="hypr, eprop or bptt.")
@click.option("--lambda", "lam", type=int, help="HYPR subsequence length λ ≥ 1 (steps).")
@click.option("--epochs", type=int, help="Passes over the training split.")
@click.option("--seed", type=int, help="Seed of data, initialisation and shuffling.")
@click.option("--batch-size", type=int, help="Samples per optimizer step.")
@click.option("--lr", type=float, help="Learning rate.")
@click.option("--hidden", help="Hidden layer widths, comma-separated, e.g. 64,64.")
@click.option("--recurrence", help="none, full or self.")
@click.option("--dtype", help="float32 or float64.")
@click.option("--device", help="cpu, cuda or cuda:N.")
@click.option("--backend", help="Device in the loop: none (default), ideal, pcm or a spec such as "
              "pcm://?mode=verify.")
@click.option("--bits", type=int, help="Weight bits on the device (1..8).")
@click.option("--scheme", help="Update scheme on the device: direct, mixed, sign or stochastic.")
@click.option("--forward", help="Where the forward pass computes weight products: host "
              "(default, with the read-back weights) or device (the backend's crossbar).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("overrides", nargs=-1)
def train(
    config_file: str | None,
    hidden: str | None,
    out: str,
    overwrite: bool,
    resume: bool,
    as_json: bool,
    quiet: bool,
    overrides: tuple[str, ...],
    **options: Any,
) -> None:
    """Train a network; KEY=VALUE arguments override any config key (e.g. epochs=3,
    task_options.delay=80, neuron_options.dt=0.02)."""
    directory = Path(out)
    if hidden is not None:
        options["hidden"] = _parse_widths(hidden)
    if resume:
        given = [k for k, v in options.items() if v is not None and k != "epochs"]
        if config_file or overrides or given:
            raise UserError("--resume continues a run with its stored config; only --epochs "
                            "may be given (to extend it)")
        record = read_run(directory)
        config = build_config(record.config, epochs=options["epochs"])
        if config.epochs < len(record.epochs):
            raise UserError(f"--epochs {config.epochs} is below the {len(record.epochs)} "
                            "epochs the run has done")
    else:
        if (directory / RUN_FILE).exists() and not overwrite:
            raise UserError(f"{directory} already holds a run ({RUN_FILE}); pass --overwrite "
                            "to replace it or --resume to continue it")
        file_values = load_config_file(config_file) if config_file else None
        config = build_config(file_values, list(overrides), **options)
    task = make_task(config.task, config.task_options, config.seed)
    trainer = Trainer(config, task)
    epochs: list[EpochMetrics] = []
    steps: list[StepMetrics] = []
    created = now_iso()
    if resume:
        trainer.load_state(record.checkpoint)
        epochs, steps, created = record.epochs, record.steps, record.created
        if trainer.session is not None:
            trainer.session.updates = list(record.updates)
    session = trainer.session
    directory.mkdir(parents=True, exist_ok=True)  # only now: everything above validated
    console = Console(stderr=True)
    if not as_json:
        console.print(f"{task.description} · {config.neuron} · {_learner_text(config.to_dict())}"
                      f" · {sum(p.numel() for p in trainer.network.parameters())} parameters"
                      + ("" if session is None else f" · device {config.backend} "
                         f"({_device_text(session.backend.capabilities())}), scheme "
                         f"{config.scheme}, products on the {config.forward}"))
    start = time.perf_counter()
    with Progress(
        TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
        console=console, disable=quiet, transient=False,
    ) as progress:
        bar = progress.add_task("train", total=trainer.steps_per_epoch, epoch=0, status="")
        while trainer.epoch < config.epochs:
            progress.reset(bar, total=trainer.steps_per_epoch, epoch=trainer.epoch + 1, status="")

            def on_step(metrics: StepMetrics) -> None:
                steps.append(metrics)
                progress.update(bar, advance=1, status=f"loss {metrics.loss:.4f} "
                                f"acc {metrics.accuracy:.3f}")

            result = trainer.train_epoch(on_step)
            epochs.append(result)
            progress.update(bar, status=f"loss {result.train_loss:.4f} test acc "
                            f"{result.test_accuracy:.3f}")
            write_run(directory, config=config.to_dict(), created=created, epochs=epochs,
                      steps=steps, checkpoint=trainer.state(),
                      updates=[] if session is None else session.updates)
    plot_curves(read_run(directory), directory / "curves.png")
    summary = {
        "out": str(directory),
        "epochs": len(epochs),
        "final_test_accuracy": epochs[-1].test_accuracy,
        "best_accuracy": trainer.best_accuracy,
        "final_train_loss": epochs[-1].train_loss,
        "seconds": time.perf_counter() - start,
        "config": config.to_dict(),
    }
    if session is not None:
        summary["device"] = device_summary(session.updates)
    if as_json:
        click.echo(json.dumps(summary))
        return
    where = "" if session is None else f" on device {config.backend}"
    click.echo(f"test accuracy{where} {summary['final_test_accuracy']:.4f} (best "
               f"{summary['best_accuracy']:.4f}), train loss {summary['final_train_loss']:.4f}"
               f", {summary['seconds']:.1f} s -> {directory / RUN_FILE}")
    if session is not None:
        device = summary["device"]
        click.echo(f"device: mean write error {device['mean_write_error']:.4g} (weight units), "
                   f"{device['cells_written']} cells written, {device['pulses']} pulses, "
                   f"{device['failures']} failures, {device['device_seconds']:.3g} s device time")


@main.group()
def runs() -> None:
    """Inspect run directories."""


@runs.command("show")
@click.argument("directory", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def show(directory: str, as_json: bool) -> None:
    """Summarise the run in DIRECTORY."""
    summary = record_summary(read_run(directory))
    if as_json:
        click.echo(json.dumps(summary))
        return
    console = Console()
    console.print(f"[bold]{summary['path']}[/bold]  {summary['task']} · {summary['neuron']} · "
                  f"{_learner_text({'learner': summary['learner'], 'lam': summary['lambda']})}"
                  f" · seed {summary['seed']}")
    console.print(f"epochs {summary['epochs_done']}/{summary['epochs_planned']}, final test "
                  f"accuracy {_fmt(summary['final_test_accuracy'])}, best "
                  f"{_fmt(summary['best_accuracy'])}, final train loss "
                  f"{_fmt(summary['final_train_loss'])}, {summary['seconds']:.1f} s")
    device = summary["device"]
    if device is not None:
        console.print(f"device {summary['backend']}: {device['updates']} updates, "
                      f"{device['cells_written']} cells written, {device['pulses']} pulses, "
                      f"{device['failures']} failures, mean write error "
                      f"{device['mean_write_error']:.4g}")
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()))
    table = Table("epoch", "train loss", "train acc", "test acc", "val acc", "seconds")
    for row in summary["epochs"]:
        table.add_row(str(row["epoch"]), _fmt(row["train_loss"]), _fmt(row["train_accuracy"]),
                      _fmt(row["test_accuracy"]), _fmt(row["validation_accuracy"]),
                      f"{row['seconds']:.2f}")
    console.print(table)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def devices(as_json: bool) -> None:
    """List the installed device backends and their capabilities."""
    listing = [asdict(open_backend(name).capabilities()) for name in sorted(available_backends())]
    if as_json:
        click.echo(json.dumps(listing))
        return
    table = Table("backend", "weights", "bits", "levels", "tile", "products", "runs on device",
                  "time")
    for caps in listing:
        table.add_row(caps["name"], caps["weight_format"], _fmt(caps["bits"]),
                      _fmt(caps["levels"]), _fmt(caps["tile_size"]),
                      "yes" if caps["mvm"] else "no", ", ".join(caps["neurons"]) or "-",
                      "yes" if caps["time"] else "no")
    Console().print(table)


def _device_text(caps: Any) -> str:
    return caps.weight_format + ("" if caps.bits is None else f", {caps.bits} bits")


def _parse_widths(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--hidden must list layer widths like 64,64, got {text!r}") from None


def _learner_text(config: dict[str, Any]) -> str:
    return config["learner"] + (f" λ={config['lam']}" if config["learner"] == "hypr" else "")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()

"""The training loop: batches → learner gradients → clipping → optimizer → constraints
(hypr.md §4). It sits above the learners (``hwloop.learning``) and the hardware-in-the-loop
session (``hwloop.session``), and drives both."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from hwloop.config import TrainConfig
from hwloop.errors import UserError
from hwloop.learning.bptt import BPTT
from hwloop.learning.eprop import EProp
from hwloop.learning.hypr import HYPR
from hwloop.learning.losses import LOSSES, PREDICTIONS, PredictionAccumulator
from hwloop.learning.network import RECURRENCE_MODES, SpikingNetwork
from hwloop.neurons import LI, make_neuron
from hwloop.options import build_options
from hwloop.session import HILSession, open_session_backend
from hwloop.tasks import SequenceDataset, Task, batches

LEARNERS = ("hypr", "eprop", "bptt")
LR_SCHEDULES = ("constant", "linear", "cosine")
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Learner(Protocol):
    """Computes the gradients of one batch into ``.grad`` and returns the batch loss."""

    name: str

    def compute_gradients(
        self,
        network: SpikingNetwork,
        inputs: Tensor,
        labels: Tensor,
        ignore_first: int,
        accumulator: PredictionAccumulator | None = None,
    ) -> float: ...


@dataclass
class StepMetrics:
    """One optimizer step: loss, batch accuracy, gradient norm before clipping, wall time (s)."""

    step: int
    epoch: int
    loss: float
    accuracy: float
    grad_norm: float
    seconds: float


@dataclass
class EpochMetrics:
    """One epoch: mean training loss/accuracy and accuracies of the evaluation splits."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    validation_accuracy: float | None
    seconds: float


def make_learner(config: TrainConfig) -> Learner:
    if config.learner not in LEARNERS:
        raise UserError(f"unknown learner {config.learner!r} (choose from: {', '.join(LEARNERS)})")
    if config.loss not in LOSSES:
        raise UserError(f"unknown loss {config.loss!r} (choose from: {', '.join(LOSSES)})")
    if config.learner == "bptt":
        return BPTT(config.loss)
    if config.loss != "per_step_ce":
        raise UserError(
            f"learner {config.learner!r} trains with loss per_step_ce only (got {config.loss!r}); "
            "use learner=bptt for other losses"
        )
    if config.learner == "eprop":
        return EProp(config.recurrent_timing)
    return HYPR(config.lam, config.recurrent_timing)


def make_network(config: TrainConfig, task: Task) -> SpikingNetwork:
    if config.recurrence not in RECURRENCE_MODES:
        raise UserError(
            f"unknown recurrence {config.recurrence!r} (choose from: {', '.join(RECURRENCE_MODES)})"
        )
    if not config.hidden or any(width < 1 for width in config.hidden):
        raise UserError(f"hidden must list one or more positive layer widths, got {config.hidden}")
    if config.dtype not in DTYPES:
        raise UserError(f"unknown dtype {config.dtype!r} (choose from: {', '.join(DTYPES)})")
    neuron = make_neuron(config.neuron, config.neuron_options)
    readout = build_options(LI, config.readout_options, "readout")
    network = SpikingNetwork(
        task.input_size,
        list(config.hidden),
        task.num_classes,
        neuron,
        readout,
        recurrence=config.recurrence,
        skip=config.skip,
        seed=config.seed,
        dtype=DTYPES[config.dtype],
    )
    with torch.no_grad():
        for layer in network.hidden:
            for weight in (layer.w_in, layer.w_rec, layer.w_skip):
                if weight is not None:
                    weight.mul_(config.init_gain)
    return network


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but no CUDA GPU is available; use device=cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r} (use cpu, cuda or cuda:N)")
    return device


def check_config(config: TrainConfig) -> None:
    """Reject values no component checks by itself (one-line UserErrors)."""
    for key in ("epochs", "batch_size", "eval_window"):
        if getattr(config, key) < 1:
            raise UserError(f"{key} must be >= 1, got {getattr(config, key)}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise UserError(f"lr must be a positive number, got {config.lr}")
    if not config.grad_clip > 0:
        raise UserError(f"grad_clip must be > 0, got {config.grad_clip}")
    if config.init_gain <= 0:
        raise UserError(f"init_gain must be > 0, got {config.init_gain}")
    if config.lr_schedule not in LR_SCHEDULES:
        raise UserError(
            f"unknown lr_schedule {config.lr_schedule!r} (choose from: {', '.join(LR_SCHEDULES)})"
        )
    if config.optimizer not in OPTIMIZERS:
        raise UserError(
            f"unknown optimizer {config.optimizer!r} (choose from: {', '.join(OPTIMIZERS)})"
        )
    if config.forward != "host" and config.backend == "none":
        raise UserError(f"forward={config.forward} needs a device in the loop; give a backend "
                        "(e.g. --backend pcm)")
    if config.prediction not in PREDICTIONS:
        raise UserError(
            f"unknown prediction {config.prediction!r} (choose from: {', '.join(PREDICTIONS)})"
        )


class Trainer:
    """Owns the network, learner, optimizer and data order of one training run."""

    def __init__(self, config: TrainConfig, task: Task) -> None:
        check_config(config)
        self.config, self.task = config, task
        self.device = resolve_device(config.device)
        self.learner = make_learner(config)
        self.network = make_network(config, task).to(self.device)
        self.dtype = DTYPES[config.dtype]
        self.optimizer = OPTIMIZERS[config.optimizer](self.network.parameters(), lr=config.lr)
        total_steps = config.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _schedule(config.lr_schedule, config.lr_end_factor, total_steps)
        )
        self.shuffle = torch.Generator().manual_seed(config.seed + 1)
        self.epoch = 0
        self.step = 0
        self.best_accuracy = -1.0
        self.session: HILSession | None = None
        if config.backend != "none":
            self.session = HILSession(
                self.network, open_session_backend(config), config.scheme, config.threshold,
                config.seed, config.forward,
            )
            self.session.begin()
        self.best_weights: dict[str, Tensor] = copy.deepcopy(self.network.state_dict())

    @property
    def steps_per_epoch(self) -> int:
        size, batch = len(self.task.train), self.config.batch_size
        return max(size // batch, 1)

    def train_epoch(self, on_step: Callable[[StepMetrics], None] | None = None) -> EpochMetrics:
        """One pass over the training split (shuffled, last incomplete batch dropped), then
        evaluation; the best weights so far (by model-selection accuracy) are kept."""
        start = time.perf_counter()
        losses, correct, seen = [], 0, 0
        self.network.train()
        for inputs, labels in batches(
            self.task.train, self.config.batch_size, shuffle=True, generator=self.shuffle,
            drop_last=True, dtype=self.dtype, device=self.device,
        ):
            step_start = time.perf_counter()
            accumulator = PredictionAccumulator(self.config.prediction, self.task.ignore_first)
            loss = self.learner.compute_gradients(
                self.network, inputs, labels, self.task.ignore_first, accumulator
            )
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
            )
            if self.session is not None:
                self.session.before_update()
            self.optimizer.step()
            self.scheduler.step()
            self.constrain()
            if self.session is not None:
                self.session.after_update(self.step + 1)
            hits = int((accumulator.predictions() == labels).sum())
            correct, seen = correct + hits, seen + len(labels)
            losses.append(loss)
            self.step += 1
            if on_step is not None:
                on_step(
                    StepMetrics(
                        self.step, self.epoch + 1, loss, hits / len(labels), grad_norm,
                        time.perf_counter() - step_start,
                    )
                )
        self.epoch += 1
        test_accuracy = self.accuracy(self.task.test)
        validation = self.task.validation
        validation_accuracy = self.accuracy(validation) if validation is not None else None
        selection = validation_accuracy if validation_accuracy is not None else test_accuracy
        if selection > self.best_accuracy:
            self.best_accuracy = selection
            self.best_weights = copy.deepcopy(self.network.state_dict())
        return EpochMetrics(
            self.epoch, sum(losses) / len(losses), correct / seen, test_accuracy,
            validation_accuracy, time.perf_counter() - start,
        )

    def constrain(self) -> None:
        """Project hidden-layer neuron parameters onto their allowed sets (not the readout)."""
        with torch.no_grad():
            for layer in self.network.hidden:
                layer.model.constrain_(dict(layer.params.items()))

    @torch.no_grad()
    def accuracy(self, dataset: SequenceDataset) -> float:
        """Fraction of correctly predicted samples, evaluated window by window."""
        self.network.eval()
        correct = 0
        for inputs, labels in batches(
            dataset, max(self.config.batch_size, 256), shuffle=False, dtype=self.dtype,
            device=self.device,
        ):
            accumulator = PredictionAccumulator(self.config.prediction, self.task.ignore_first)
            for outputs in self.network.windows(inputs, self.config.eval_window):
                accumulator.add(outputs)
            correct += int((accumulator.predictions() == labels).sum())
        return correct / len(dataset)

    def state(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (a checkpoint)."""
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "shuffle": self.shuffle.get_state(),
            "epoch": self.epoch,
            "step": self.step,
            "best_accuracy": self.best_accuracy,
            "best_weights": self.best_weights,
            **({} if self.session is None else {
                "session": self.session.state(), "device": self.session.backend.state_dict(),
            }),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["shuffle"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best_accuracy = float(state["best_accuracy"])
        self.best_weights = state["best_weights"]
        if self.session is not None:
            self.session.load_state(state["session"], state["device"])


def _schedule(name: str, end_factor: float, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor per optimizer step (hypr.md §4)."""
    total = max(total_steps, 1)
    if name == "linear":
        return lambda step: 1.0 + (end_factor - 1.0) * min(step / total, 1.0)
    if name == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / total, 1.0)))
    return lambda step: 1.0

"""The training loop: batches → learner gradients → clipping → optimizer → constraints
(hypr.md §4). It sits above the learners (``hwloop.learning``) and the hardware-in-the-loop
session (``hwloop.session``), and drives both."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from hwloop.config import TrainConfig
from hwloop.errors import Diverged, UserError
from hwloop.learning.bptt import BPTT
from hwloop.learning.eprop import EProp
from hwloop.learning.hypr import HYPR, RECURRENT_TIMINGS, check_lambda
from hwloop.learning.losses import LOSSES, PREDICTIONS, LossAccumulator, PredictionAccumulator
from hwloop.learning.network import RECURRENCE_MODES, SpikingNetwork
from hwloop.memory import check_fits
from hwloop.neurons import HIDDEN_NEURONS, NeuronModel, make_neuron, readout_for
from hwloop.options import build_options
from hwloop.seeds import SEED_LIMIT
from hwloop.session import FORWARDS, SCHEMES, HILSession, open_session_backend
from hwloop.tasks import SequenceDataset, Task, batches

LEARNERS = ("hypr", "eprop", "bptt", "eprop-onchip")
ON_DEVICE_LEARNERS = {"eprop-onchip": "eprop"}
"""Learners the device in the loop runs itself → the device's name for its learning rule."""
LR_SCHEDULES = ("constant", "linear", "cosine")
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
MAX_LR = 1e6
"""The largest learning rate: far above any useful one, low enough that an optimizer's step
size stays within float32."""
TRAIN_OPTION = "train"
"""Key of ``neuron_options`` / ``readout_options`` listing the neuron parameters to train."""


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


@dataclass
class EpochProgress:
    """An epoch in progress, so that a checkpoint inside it continues exactly.

    Attributes:
        shuffle_state: the shuffling generator's state at the epoch's start (it draws the
            epoch's sample order).
        steps_done: optimizer steps of the epoch already taken.
        loss_sum: sum of their batch losses; correct, seen: their correct predictions, samples.
        seconds: wall time spent in the epoch so far (s).
    """

    shuffle_state: Tensor
    steps_done: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


def make_learner(config: TrainConfig) -> Learner | None:
    """The host learner of ``config`` (None where the device learns: ``ON_DEVICE_LEARNERS``)."""
    if config.learner not in LEARNERS:
        raise UserError(f"unknown learner {config.learner!r} (choose from: {', '.join(LEARNERS)})")
    if config.loss not in LOSSES:
        raise UserError(f"unknown loss {config.loss!r} (choose from: {', '.join(LOSSES)})")
    if config.learner in ON_DEVICE_LEARNERS:
        check_on_device_learning(config)
        return None
    if config.learner == "bptt":
        return BPTT(config.loss)
    if config.learner == "eprop":
        return EProp(config.recurrent_timing, config.loss)
    return HYPR(config.lam, config.recurrent_timing, config.loss)


def check_on_device_learning(config: TrainConfig) -> None:
    """Refuse settings an on-device learner cannot honour (one-line UserErrors): it needs a
    device in the loop, the e-prop network the chip runs, its loss and Adam."""
    name = config.learner
    wanted = (
        (config.backend != "none", "a device in the loop (--backend spinnaker2)"),
        (config.neuron == "eprop_alif", "neuron = \"eprop_alif\" (the chip's ALIF)"),
        (len(config.hidden) == 1, "one hidden layer"),
        (config.recurrence == "full" and not config.skip, "recurrence = \"full\", no skip"),
        (config.loss == "mean_output_ce", "loss = \"mean_output_ce\" (the chip's loss)"),
        (config.optimizer == "adam", "optimizer = \"adam\" (the chip's optimizer)"),
        (config.scheme == "direct" and config.forward == "host",
         "scheme = \"direct\" and forward = \"host\" (the device writes its own updates)"),
    )
    for ok, need in wanted:
        if not ok:
            raise UserError(f"learner {name!r} trains on the device and needs {need}")


def split_train_option(
    options: dict[str, Any], model: type[NeuronModel], what: str
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Separate ``train`` (the neuron parameters to train; default all) from a model's options."""
    options = dict(options)
    names = model.param_names
    chosen = options.pop(TRAIN_OPTION, list(names))
    if not isinstance(chosen, list) or not all(isinstance(n, str) for n in chosen):
        raise UserError(f"{what}: train: expected a list of parameter names such as "
                        f"{list(names)}, got {chosen!r}")
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise UserError(f"{what}: train: unknown parameter {unknown[0]!r} (the model's "
                        f"parameters: {', '.join(names)})")
    return options, tuple(chosen)


def make_network(config: TrainConfig, input_size: int, num_classes: int) -> SpikingNetwork:
    """The network ``config`` describes, for ``input_size`` inputs and ``num_classes``
    outputs, with its initial weights; neuron parameters not listed in ``train`` are frozen
    (``requires_grad`` is False: no learner or optimizer changes them). ``config`` must have
    passed ``check_config``."""
    hidden_class = _neuron_class(config.neuron)
    neuron_options, hidden_train = split_train_option(
        config.neuron_options, hidden_class, f"neuron {config.neuron!r}"
    )
    readout_class = readout_for(config.neuron)
    readout_options, readout_train = split_train_option(config.readout_options, readout_class,
                                                        "readout")
    neuron = make_neuron(config.neuron, neuron_options)
    readout = build_options(readout_class, readout_options, "readout")
    network = SpikingNetwork(
        input_size,
        list(config.hidden),
        num_classes,
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
                    if not bool(torch.isfinite(weight).all()):
                        raise UserError(f"init_gain={config.init_gain:g} makes the initial "
                                        f"weights overflow {config.dtype}; lower it")
    for layers, train in ((network.hidden, hidden_train), ([network.readout], readout_train)):
        for layer in layers:
            for name, parameter in layer.params.items():
                parameter.requires_grad_(name in train)
            layer.bias.requires_grad_(layer.model.current_bias)
    return network


def _neuron_class(name: str) -> type[NeuronModel]:
    if name not in HIDDEN_NEURONS:
        raise UserError(f"unknown neuron {name!r} (choose from: {', '.join(HIDDEN_NEURONS)})")
    return HIDDEN_NEURONS[name]


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r} (use cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise UserError(f"device {name!r}: the installed torch {torch.__version__} is a "
                            "CPU-only build; install a CUDA build of torch (docs/"
                            "getting_started.md, 'GPU') or use device=cpu")
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but no CUDA GPU is available; use "
                            "device=cpu")
        if (device.index or 0) >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} "
                            "CUDA GPU(s), numbered from 0")
    return device


DEVICE_KEYS = ("bits", "scheme", "threshold", "forward", "backend_options")
"""Config keys that only mean something with a device in the loop (``backend``)."""


def check_config(config: TrainConfig) -> None:
    """Reject values no component checks by itself (one-line UserErrors)."""
    check_lambda(config.lam)
    for key in ("epochs", "batch_size", "eval_window"):
        if getattr(config, key) < 1:
            raise UserError(f"{key} must be >= 1, got {getattr(config, key)}")
    if not 0 <= config.seed < SEED_LIMIT:
        raise UserError(f"seed must lie in 0..2**63-1, got {config.seed}")
    if not 0 < config.lr <= MAX_LR:
        raise UserError(f"lr must be a positive number up to {MAX_LR:g}, got {config.lr}")
    for key in ("grad_clip", "init_gain"):
        if not getattr(config, key) > 0:
            raise UserError(f"{key} must be > 0, got {getattr(config, key)}")
    if not 0 <= config.lr_end_factor <= 1:
        raise UserError(f"lr_end_factor must lie in [0, 1] (the final learning rate is "
                        f"lr·lr_end_factor), got {config.lr_end_factor}")
    for key, allowed in (
        ("lr_schedule", LR_SCHEDULES), ("optimizer", OPTIMIZERS), ("prediction", PREDICTIONS),
        ("recurrent_timing", RECURRENT_TIMINGS), ("scheme", SCHEMES), ("forward", FORWARDS),
        ("dtype", DTYPES), ("recurrence", RECURRENCE_MODES),
    ):
        if getattr(config, key) not in allowed:
            raise UserError(f"unknown {key} {getattr(config, key)!r} (choose from: "
                            f"{', '.join(allowed)})")
    if config.backend == "none":
        defaults = TrainConfig()
        given = [key for key in DEVICE_KEYS if getattr(config, key) != getattr(defaults, key)]
        if given:
            raise UserError(f"{given[0]} is a device option but no device is in the loop; give "
                            "a backend (e.g. --backend pcm) or drop it")
    if not config.threshold > 0:
        raise UserError(f"threshold must be > 0 levels, got {config.threshold}")
    if config.bits is not None and not 1 <= config.bits <= 8:
        raise UserError(f"bits must lie in 1..8, got {config.bits}")
    if not config.hidden or any(width < 1 for width in config.hidden):
        raise UserError(f"hidden must list one or more positive layer widths, got {config.hidden}")
    neuron_class = _neuron_class(config.neuron)
    if neuron_class.integer_dynamics and config.dtype != "float64":
        raise UserError(f"neuron {config.neuron!r} reproduces the device's integer arithmetic "
                        "exactly only in float64; set dtype = float64 (--dtype float64)")
    if config.skip and len(config.hidden) < 2:
        raise UserError("skip=true connects layer l-2 to layer l and needs two or more hidden "
                        f"layers, got hidden={config.hidden}")


def check_memory(config: TrainConfig, task: Task) -> None:
    """Refuse a configuration whose training state cannot fit in this machine's memory,
    before the network is built.

    Counted: the parameters with gradients and two optimizer moments, and, for HYPR and
    e-prop, the synaptic eligibilities (B, N, d, P) of every layer, d state entries and P
    presynaptic inputs per neuron (hypr.md, "What is carried"). The task counts its data."""
    itemsize = DTYPES[config.dtype].itemsize
    state_size = len(_neuron_class(config.neuron).state_names)
    widths = [task.input_size, *config.hidden]
    batch = min(config.batch_size, len(task.train))
    parameters = eligibilities = 0
    for index, size in enumerate([*config.hidden, task.num_classes]):
        hidden = index < len(config.hidden)
        fan_in = widths[index] + 1
        if hidden and config.recurrence == "full":
            fan_in += size
        if hidden and config.skip and index >= 1:
            fan_in += widths[index - 1]
        parameters += size * fan_in
        eligibilities += batch * size * (state_size if hidden else 1) * fan_in
    needed = 4 * parameters * itemsize
    if config.learner != "bptt":
        needed += eligibilities * itemsize
    check_fits(needed, f"training this network ({parameters} weights, batch {batch})",
               "use fewer or smaller layers, or a smaller batch_size")


class Trainer:
    """Owns the network, learner, optimizer and data order of one training run."""

    def __init__(self, config: TrainConfig, task: Task) -> None:
        check_config(config)
        self.config, self.task = config, task
        self.device = resolve_device(config.device)
        self.learner = make_learner(config)
        check_memory(config, task)
        self.network = make_network(config, task.input_size, task.num_classes).to(self.device)
        if self.learner is None:  # the chip's e-prop has no self-connections
            with torch.no_grad():
                for layer in self.network.hidden:
                    if layer.w_rec is not None:
                        layer.w_rec.fill_diagonal_(0.0)
        self.dtype = DTYPES[config.dtype]
        self.trainable = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = OPTIMIZERS[config.optimizer](self.trainable, lr=config.lr)
        total_steps = config.epochs * self.steps_per_epoch
        self.lr_factor = _schedule(config.lr_schedule, config.lr_end_factor, total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.shuffle = torch.Generator().manual_seed(config.seed + 1)
        self.epoch = 0
        self.step = 0
        self.progress: EpochProgress | None = None
        self.best_accuracy = -1.0
        self.best_epoch = 0
        self.session: HILSession | None = None
        if config.backend != "none":
            self.session = HILSession(
                self.network, open_session_backend(config), config.scheme, config.threshold,
                config.seed, config.forward,
            )
            self.session.begin()
            if self.learner is None:
                rule = ON_DEVICE_LEARNERS[config.learner]
                if rule not in self.session.backend.capabilities().learners:
                    self.close()
                    raise UserError(f"learner {config.learner!r}: backend "
                                    f"{self.session.backend.name!r} cannot run {rule} on the "
                                    "device with these options (see docs/backends.md)")
        self.best_weights: dict[str, Tensor] = copy.deepcopy(self.network.state_dict())

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (the last incomplete batch is dropped)."""
        size, batch = len(self.task.train), self.config.batch_size
        return max(size // batch, 1)

    @property
    def selection_split(self) -> str:
        """The split that picks the best weights: ``validation`` if the task has one."""
        return "validation" if self.task.validation is not None else "test"

    def train_epoch(
        self,
        on_step: Callable[[StepMetrics], None] | None = None,
        checkpoint_every: int | None = None,
        on_checkpoint: Callable[[], None] | None = None,
    ) -> EpochMetrics:
        """One pass over the training split (shuffled, last incomplete batch dropped), then
        evaluation; the best weights so far (by model-selection accuracy) are kept.

        Continues an epoch a checkpoint interrupted (``progress``). With ``checkpoint_every``,
        ``on_checkpoint()`` is called after every such number of optimizer steps inside the
        epoch (a checkpoint taken then continues exactly).

        Raises:
            Diverged: the loss, the gradient norm or the weights became NaN or inf (the
                device is left as it was after the last good update).
        """
        if self.progress is None:
            self.progress = EpochProgress(self.shuffle.get_state())
        else:
            self.shuffle.set_state(self.progress.shuffle_state)
        progress = self.progress
        resumed_at = time.perf_counter() - progress.seconds
        self.network.train()
        for inputs, labels in batches(
            self.task.train, self.config.batch_size, shuffle=True, generator=self.shuffle,
            drop_last=True, dtype=self.dtype, device=self.device,
            first_batch=progress.steps_done,
        ):
            step_start = time.perf_counter()
            accumulator = PredictionAccumulator(self.config.prediction, self.task.ignore_first)
            if self.learner is None:
                loss, grad_norm = self._learn_on_device(inputs, labels, accumulator), 0.0
            else:
                loss, grad_norm = self._host_update(inputs, labels, accumulator)
            hits = int((accumulator.predictions() == labels).sum())
            progress.correct, progress.seen = progress.correct + hits, progress.seen + len(labels)
            progress.loss_sum += loss
            progress.steps_done += 1
            self.step += 1
            if on_step is not None:
                on_step(
                    StepMetrics(
                        self.step, self.epoch + 1, loss, hits / len(labels), grad_norm,
                        time.perf_counter() - step_start,
                    )
                )
            progress.seconds = time.perf_counter() - resumed_at
            if (checkpoint_every and on_checkpoint is not None
                    and progress.steps_done % checkpoint_every == 0
                    and progress.steps_done < self.steps_per_epoch):
                on_checkpoint()
        if self.learner is None:  # evaluate what the device learned
            assert self.session is not None
            self.session.load_device_weights()
        test_accuracy = self.accuracy(self.task.test)
        validation = self.task.validation
        validation_accuracy = self.accuracy(validation) if validation is not None else None
        self.epoch += 1
        selection = validation_accuracy if validation_accuracy is not None else test_accuracy
        if selection > self.best_accuracy:
            self.best_accuracy, self.best_epoch = selection, self.epoch
            self.best_weights = copy.deepcopy(self.network.state_dict())
        self.progress = None
        return EpochMetrics(
            self.epoch, progress.loss_sum / progress.steps_done, progress.correct / progress.seen,
            test_accuracy, validation_accuracy, time.perf_counter() - resumed_at,
        )

    def _host_update(self, inputs: Tensor, labels: Tensor,
                     accumulator: PredictionAccumulator) -> tuple[float, float]:
        """One host-learner step on a batch: gradients, clipping, the optimizer, the device
        update; (loss, gradient norm)."""
        if self.session is not None:
            self.session.replay(inputs)
        assert self.learner is not None
        loss = self.learner.compute_gradients(
            self.network, inputs, labels, self.task.ignore_first, accumulator
        )
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.config.grad_clip))
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            value = loss if what == "loss" else grad_norm
            raise Diverged(f"the {what} became {value} at step {self.step + 1} (epoch "
                           f"{self.epoch + 1}); training stopped before that update. Lower "
                           f"lr (now {self.config.lr:g}) or grad_clip, or check the inputs")
        if self.session is not None:
            self.session.before_update()
        self.optimizer.step()
        self.scheduler.step()
        self.constrain()
        if not all(bool(torch.isfinite(p).all()) for p in self.trainable):
            raise Diverged(f"the update of step {self.step + 1} (epoch {self.epoch + 1}) "
                           f"made weights NaN or inf; lower lr (now {self.config.lr:g})")
        if self.session is not None:
            self.session.after_update(self.step + 1)
        return loss, grad_norm

    def _learn_on_device(self, inputs: Tensor, labels: Tensor,
                         accumulator: PredictionAccumulator) -> float:
        """The device learns from the batch itself (its own rule, at the scheduled learning
        rate); returns the batch loss it reports."""
        assert self.session is not None
        run = self.session.backend.learn(
            inputs.detach().cpu().double().numpy(), labels.cpu().numpy(),
            self.task.ignore_first, self.config.lr * self.lr_factor(self.step),
        )
        accumulator.add(torch.from_numpy(run.outputs).to(inputs.dtype))
        loss = float(run.loss) if run.loss is not None else math.nan
        if not math.isfinite(loss):
            raise Diverged(f"the device's loss became {loss} at step {self.step + 1} (epoch "
                           f"{self.epoch + 1}); lower lr (now {self.config.lr:g})")
        return loss

    def close(self) -> None:
        """Release the device in the loop (stops a device's processes, e.g. Lava's)."""
        if self.session is not None:
            self.session.backend.close()

    def constrain(self) -> None:
        """Project hidden-layer neuron parameters onto their allowed sets (not the readout)."""
        with torch.no_grad():
            for layer in self.network.hidden:
                layer.model.constrain_(dict(layer.params.items()))

    def evaluate(self, dataset: SequenceDataset) -> tuple[float, float]:
        """(accuracy, loss) of the network on ``dataset`` (see ``evaluate_network``)."""
        return evaluate_network(self.network, dataset, self.config, self.task.ignore_first,
                                self.device)

    def accuracy(self, dataset: SequenceDataset) -> float:
        """Fraction of correctly predicted samples of ``dataset``."""
        return self.evaluate(dataset)[0]

    def state(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (a checkpoint)."""
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "shuffle": self.shuffle.get_state(),
            "epoch": self.epoch,
            "step": self.step,
            "progress": None if self.progress is None else asdict(self.progress),
            "best_accuracy": self.best_accuracy,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
            **({} if self.session is None else {
                "session": self.session.state(), "device": self.session.backend.state_dict(),
            }),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint ``state()`` returned (device state included)."""
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["shuffle"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        progress = state.get("progress")
        self.progress = None if progress is None else EpochProgress(**progress)
        self.best_accuracy = float(state["best_accuracy"])
        self.best_epoch = int(state.get("best_epoch", 0))
        self.best_weights = state["best_weights"]
        if self.session is not None:
            self.session.load_state(state["session"], state["device"])


@torch.no_grad()
def evaluate_network(
    network: SpikingNetwork,
    dataset: SequenceDataset,
    config: TrainConfig,
    ignore_first: int,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """(accuracy, loss) of ``network`` on ``dataset``, run window by window
    (``config.eval_window`` steps) in batches of max(batch_size, 256); the prediction and the
    loss are the configured ones, the loss averaged over the samples."""
    if len(dataset) == 0:
        raise UserError("cannot evaluate an empty split")
    network.eval()
    correct, loss_sum = 0, 0.0
    for inputs, labels in batches(
        dataset, max(config.batch_size, 256), shuffle=False, dtype=DTYPES[config.dtype],
        device=device,
    ):
        predictions = PredictionAccumulator(config.prediction, ignore_first)
        losses = LossAccumulator(config.loss, labels, ignore_first)
        for outputs in network.windows(inputs, config.eval_window):
            predictions.add(outputs)
            losses.add(outputs)
        correct += int((predictions.predictions() == labels).sum())
        loss_sum += losses.loss() * len(labels)
    return correct / len(dataset), loss_sum / len(dataset)


def _schedule(name: str, end_factor: float, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor per optimizer step (hypr.md §4)."""
    total = max(total_steps, 1)
    if name == "linear":
        return lambda step: 1.0 + (end_factor - 1.0) * min(step / total, 1.0)
    if name == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / total, 1.0)))
    return lambda step: 1.0

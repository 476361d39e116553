"""The hardware-in-the-loop session: every update is written to a device and read back, and the
read-back weights drive the next forward pass (docs/hil.md).

The device holds the network's weight matrices (``w_in``, full ``w_rec``, ``w_skip`` of every
hidden layer and the readout's ``w_in``); biases, self-recurrent weights and neuron parameters
stay on the host. Between optimizer steps the network's parameters hold the read-back weights,
so gradients, evaluation and the kept best weights all see what the device holds. Schemes:

- ``direct``: the host keeps float shadow weights; the optimizer updates them and the device
  re-programs every synapse whose quantized level changed.
- ``mixed``: mixed-precision accumulate-and-program. Updates accumulate in a digital
  accumulator χ; whole levels are transferred (the synapse is re-programmed at its new level)
  and subtracted from χ.
- ``sign``: updates accumulate in χ; where |χ| reaches ``threshold`` levels one SET pulse is
  fired in its sign's direction (on G+ or G−) and χ is cleared.
- ``stochastic``: each update fires one pulse in its direction with probability
  min(1, |Δw| / level), an unbiased stochastic transfer.

Pulse schemes refresh saturated differential pairs after each update (``Backend.refresh``).

With ``forward="device"`` the forward pass computes every product with a device-held matrix on
the device (``Backend.mvm``, e.g. the PCM crossbar's analog MVM); gradients flow as if the
product had been computed exactly with the read-back weights (a straight-through estimate).
A device that runs whole networks (``Capabilities.neurons``, e.g. Loihi 2) instead runs each
batch itself; the host's forward pass with the read-back weights replays it, the update is
computed on the replay, and every spike where device and replay differ is counted in the
update log (``spike_mismatches``).
"""

from __future__ import annotations

from dataclasses import dataclass
from inspect import signature
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hwloop.backends import (
    Backend,
    NeuronGroup,
    WriteReport,
    available_backends,
    open_backend,
    parse_backend_spec,
)
from hwloop.config import TrainConfig
from hwloop.errors import UserError
from hwloop.learning.network import Layer, SpikingNetwork
from hwloop.quantize import symmetric_levels, top_level
from hwloop.seeds import derive_seed

SCHEMES = ("direct", "mixed", "sign", "stochastic")
FORWARDS = ("host", "device")
DEVICE_WEIGHTS = ("w_in", "w_rec", "w_skip")


@dataclass
class UpdateMetrics:
    """One update written to the device, summed over its layers.

    Attributes:
        step: optimizer step (1-based).
        cells: synapses written or pulsed.
        pulses: SET pulses fired.
        iterations: program-and-verify iterations (max over layers).
        failures: cells that did not reach their target.
        write_error: mean |target − read-back| over written cells (weight units).
        device_seconds: simulated device time of the writes (s).
        device_wall_seconds: host time spent in the backend (s).
        clipped: cells written at the end of the device's range (their target lay beyond).
        device_runs: batches the device ran since the last update (forward=device on a
            device that runs the network; 0 otherwise).
        spike_mismatches: spikes of those batches where the device and the host's replay
            differ.
    """

    step: int
    cells: int
    pulses: int
    iterations: int
    failures: int
    write_error: float
    device_seconds: float
    device_wall_seconds: float
    clipped: int = 0
    device_runs: int = 0
    spike_mismatches: int = 0


def device_layers(network: SpikingNetwork) -> dict[str, torch.nn.Parameter]:
    """Name → parameter of every weight matrix the device holds."""
    return {
        name: parameter for name, parameter in network.named_parameters()
        if name.rsplit(".", 1)[-1] in DEVICE_WEIGHTS and parameter.dim() == 2
    }


def network_groups(network: SpikingNetwork) -> list[NeuronGroup]:
    """The populations of ``network`` as a device that runs it sees them (hidden, readout)."""
    groups = [
        NeuronGroup(f"hidden.{index}", layer.model.name, layer.model.options(), layer.size,
                    layer.recurrence, layer.w_skip is not None)
        for index, layer in enumerate(network.hidden)
    ]
    readout = network.readout
    return groups + [NeuronGroup("readout", readout.model.name, readout.model.options(),
                                 readout.size)]


def takes_option(backend_name: str, option: str) -> bool:
    """Whether the installed backend ``backend_name`` has the constructor option ``option``."""
    backend_class = available_backends().get(backend_name)
    return backend_class is not None and option in signature(backend_class).parameters


def open_session_backend(config: TrainConfig) -> Backend:
    """The backend named by ``config.backend``, with ``bits`` and ``backend_options``.

    A backend that takes a ``seed`` gets ``derive_seed(config.seed, "device")`` unless the
    spec or ``backend_options`` give one, so the run seed determines the device noise too.
    """
    options = dict(config.backend_options)
    if config.bits is not None:
        options["bits"] = config.bits
    name, query = parse_backend_spec(config.backend)
    if takes_option(name, "seed") and "seed" not in options and "seed" not in query:
        options["seed"] = derive_seed(config.seed, "device")
    return open_backend(config.backend, **options)


def load_device_weights(layers: dict[str, torch.nn.Parameter], backend: Backend) -> None:
    """Copy what ``backend`` holds of each layer into its parameter (``device_layers``)."""
    with torch.no_grad():
        for name, parameter in layers.items():
            parameter.copy_(torch.from_numpy(backend.read(name)).to(parameter.dtype))


def attach_crossbars(network: SpikingNetwork, backend: Backend) -> None:
    """Let ``backend`` compute every product with a device-held matrix (forward=device)."""
    for prefix, module in network.named_modules():
        if isinstance(module, Layer):
            module.crossbar = DeviceProducts(backend, prefix + ".")


class DeviceProducts:
    """The ``Crossbar`` of one layer: its products computed by ``backend.mvm``.

    Inputs (..., in) are sent as (batch, in) float64 rows; the result comes back in the
    weight's dtype. Where autograd is recording, the result is host + (device − host).detach(), so the
    value is the device's and the gradient that of the host product with the read-back weights.
    """

    def __init__(self, backend: Backend, prefix: str) -> None:
        self.backend, self.prefix = backend, prefix

    def product(self, weight_name: str, inputs: Tensor, weight: Tensor) -> Tensor:
        rows = _numpy(inputs.reshape(-1, inputs.shape[-1]))
        outputs = self.backend.mvm(self.prefix + weight_name, rows)
        device = torch.from_numpy(outputs).to(device=weight.device, dtype=weight.dtype)
        device = device.reshape(*inputs.shape[:-1], -1)
        if not (torch.is_grad_enabled() and (inputs.requires_grad or weight.requires_grad)):
            return device
        host = inputs @ weight.T
        return host + (device - host).detach()


class HILSession:
    """Drives one backend from a Trainer's optimizer steps.

    Call ``begin()`` once on a fresh run (programs the initial weights), then around every
    optimizer step ``before_update()`` and ``after_update(step)``.
    """

    def __init__(
        self, network: SpikingNetwork, backend: Backend, scheme: str, threshold: float, seed: int,
        forward: str = "host",
    ) -> None:
        if scheme not in SCHEMES:
            raise UserError(f"unknown scheme {scheme!r} (choose from: {', '.join(SCHEMES)})")
        if forward not in FORWARDS:
            raise UserError(f"unknown forward {forward!r} (choose from: {', '.join(FORWARDS)})")
        if not threshold > 0:
            raise UserError(f"threshold must be > 0 levels, got {threshold}")
        self.network, self.backend = network, backend
        self.scheme, self.threshold = scheme, float(threshold)
        self.layers = device_layers(network)
        self.shadow: dict[str, Tensor] = {}
        self.accumulators: dict[str, np.ndarray] = {}
        self.targets: dict[str, np.ndarray] = {}
        self.before: dict[str, Tensor] = {}
        self.rng = np.random.default_rng(seed + 2)
        self.updates: list[UpdateMetrics] = []
        caps = backend.capabilities()
        if scheme != "direct" and caps.levels is None:
            raise UserError(f"scheme {scheme!r} transfers whole levels and needs a quantizing "
                            f"backend; give bits (e.g. --bits 4) or use scheme=direct")
        if scheme in ("sign", "stochastic") and not caps.pulses:
            raise UserError(f"scheme {scheme!r} needs a backend with pulse updates; "
                            f"{caps.name!r} has none")
        groups = network_groups(network)
        # a device runs the network when it can run its models; it holds the weights of others
        self.runs_network = bool(caps.neurons) and (
            forward == "device" or all(group.model in caps.neurons for group in groups))
        self.device_runs = self.spike_mismatches = 0
        if self.runs_network:
            try:
                backend.declare_network(groups)
            except ValueError as error:
                raise UserError(f"backend {caps.name!r}: {error}") from None
        if forward == "device" and not self.runs_network:
            if not caps.mvm:
                raise UserError(f"backend {caps.name!r} cannot compute products on the device; "
                                "use forward=host")
            attach_crossbars(network, backend)
        self.forward = forward

    def begin(self) -> None:
        """Program the network's initial weights and load what the device holds."""
        reports = []
        for name, parameter in self.layers.items():
            weights = _numpy(parameter)
            self.backend.declare(name, tuple(parameter.shape))
            reports.append(self.backend.program(name, weights))
            self.shadow[name] = parameter.detach().clone()
            self.accumulators[name] = np.zeros(parameter.shape)
            step = self.backend.weight_step(name)
            if step is not None:
                self.targets[name] = symmetric_levels(
                    weights, self._bits(), scale=step
                )[0]
        self.load_device_weights()
        self.updates.append(_summarise(0, reports))

    def replay(self, inputs: Tensor) -> None:
        """With forward=device on a device that runs the network: run the batch inputs
        (B, T, M) on the device and count the spikes where the host's forward pass with the
        read-back weights (the replay the update is computed on) differs."""
        if not (self.runs_network and self.forward == "device"):
            return
        device = self.backend.run(_numpy(inputs))
        with torch.no_grad():
            host = self.network.trace(inputs)
        self.device_runs += 1
        for device_spikes, host_spikes in zip(device.spikes, host):
            self.spike_mismatches += int((_numpy(host_spikes) != device_spikes).sum())

    def before_update(self) -> None:
        """Just before ``optimizer.step()``: remember the device weights; the direct scheme
        hands the optimizer its shadow weights."""
        for name, parameter in self.layers.items():
            self.before[name] = parameter.detach().clone()
            if self.scheme == "direct":
                parameter.data.copy_(self.shadow[name])

    def after_update(self, step: int) -> UpdateMetrics:
        """After the optimizer step: write the update per scheme, read back, log."""
        reports: list[WriteReport] = []
        for name, parameter in self.layers.items():
            reports.extend(self._write(name, parameter))
        self.load_device_weights()
        metrics = _summarise(step, reports, self.device_runs, self.spike_mismatches)
        self.device_runs = self.spike_mismatches = 0
        self.updates.append(metrics)
        return metrics

    def _write(self, name: str, parameter: torch.nn.Parameter) -> list[WriteReport]:
        if self.scheme == "direct":
            self.shadow[name] = parameter.detach().clone()
            return [self.backend.program(name, _numpy(parameter))]
        level = np.asarray(self.backend.weight_step(name))
        delta = _numpy(parameter) - _numpy(self.before[name])
        top = top_level(self._bits())
        if self.scheme == "mixed":
            accumulator = self.accumulators[name] + delta
            transfer = np.trunc(accumulator / level)
            target = np.clip(self.targets[name] + transfer, -top, top).astype(np.int64)
            accumulator -= (target - self.targets[name]) * level
            accumulator = np.clip(accumulator, -level, level)  # saturated synapses stop growing
            self.accumulators[name], self.targets[name] = accumulator, target
            return [self.backend.program(name, target * level)]
        if self.scheme == "sign":
            accumulator = self.accumulators[name] + delta
            fire = np.abs(accumulator) >= self.threshold * level
            steps = np.where(fire, np.sign(accumulator), 0).astype(np.int64)
            self.accumulators[name] = np.where(fire, 0.0, accumulator)
        else:  # stochastic
            probability = np.minimum(np.abs(delta) / level, 1.0)
            fire = self.rng.random(delta.shape) < probability
            steps = np.where(fire, np.sign(delta), 0).astype(np.int64)
        reports = [self.backend.pulse(name, steps)]
        refreshed = self.backend.refresh(name)
        return reports + ([refreshed] if refreshed is not None else [])

    def load_device_weights(self) -> None:
        """Copy what the device holds into the network's parameters."""
        load_device_weights(self.layers, self.backend)

    def _bits(self) -> int:
        bits = self.backend.capabilities().bits
        assert bits is not None, "level schemes need a quantizing backend"
        return bits

    def state(self) -> dict[str, Any]:
        """Session state for a checkpoint (the device's own state is saved separately)."""
        return {
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
            "accumulators": {k: torch.from_numpy(v.copy()) for k, v in self.accumulators.items()},
            "targets": {k: torch.from_numpy(v.copy()) for k, v in self.targets.items()},
            "rng": self.rng.bit_generator.state,  # a plain dict: loads with weights_only
        }

    def load_state(self, state: dict[str, Any], device_state: dict[str, Any]) -> None:
        """Restore the session and the device, and load the device weights into the network."""
        self.backend.load_state_dict(device_state)
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.accumulators = {k: v.numpy().copy() for k, v in state["accumulators"].items()}
        self.targets = {k: v.numpy().copy() for k, v in state["targets"].items()}
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.load_device_weights()


def _summarise(step: int, reports: list[WriteReport], device_runs: int = 0,
               spike_mismatches: int = 0) -> UpdateMetrics:
    cells = sum(r.cells_programmed for r in reports)
    error = sum(r.write_error * r.cells_programmed for r in reports) / cells if cells else 0.0
    return UpdateMetrics(
        step=step, cells=cells, pulses=sum(r.pulses for r in reports),
        iterations=max((r.iterations for r in reports), default=0),
        failures=sum(r.failures for r in reports), write_error=error,
        device_seconds=sum(r.device_seconds for r in reports),
        device_wall_seconds=sum(r.wall_seconds for r in reports),
        clipped=sum(r.clipped for r in reports), device_runs=device_runs,
        spike_mismatches=spike_mismatches,
    )


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float64).numpy()

"""Small float64 networks whose every layer spikes, for gradient tests."""

from __future__ import annotations

import torch

from hwloop.learning.network import SpikingNetwork
from hwloop.neurons import (
    ALIF, BRF, LI, LIF, AdLIF, EpropALIF, LoihiATRLIF, LoihiLIF, NeuronModel,
)

B, M, N, K, T = 2, 7, 9, 3, 24
IGNORE_FIRST = 5

MODELS: dict[str, NeuronModel] = {
    "lif": LIF(),
    "alif": ALIF(),
    "adlif": AdLIF(),
    "brf": BRF(),
    "brf_exp": BRF(
        use_exponential=True, exponential_omega=True, exponential_b=True, surrogate="slayer_wide",
        omega_range=(1.0, 10.0), b_range=(0.1, 1.0),
    ),
    "loihi_lif": LoihiLIF(du=1024),  # the current carries over too (3071/4096 per step)
    # slower current and voltage than Lava's defaults; θ and r adapt at the defaults
    "loihi_atrlif": LoihiATRLIF(delta_i=0.25, delta_v=0.1),
    # a faster adaptation than the reference's 150 steps, so that it matters within T steps
    "eprop_alif": EpropALIF(tau_a=20.0, beta=1.0),
}
# weight gains that make every layer fire at 5-60 % with the inputs below
GAINS = {
    "lif": 30.0, "alif": 3.0, "adlif": 30.0, "brf": 100.0, "brf_exp": 100.0, "loihi_lif": 1.0,
    "loihi_atrlif": 1.0, "eprop_alif": 20.0,
}


def active_network(
    name: str,
    layers: int,
    recurrence: str = "full",
    skip: bool = False,
    seed: int = 0,
    readout: NeuronModel | None = None,
    neuron: NeuronModel | None = None,
) -> SpikingNetwork:
    network = SpikingNetwork(
        M, [N] * layers, K, neuron or MODELS[name], readout or LI(),
        recurrence=recurrence, skip=skip, seed=seed, dtype=torch.float64,
    )
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for layer in network.hidden:
            for weight in (layer.w_in, layer.w_rec, layer.w_skip):
                if weight is not None:
                    weight.mul_(GAINS[name])
            layer.bias.copy_(0.1 * torch.randn(N, generator=gen, dtype=torch.float64))
        network.readout.bias.copy_(0.1 * torch.randn(K, generator=gen, dtype=torch.float64))
    return network


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inputs = (torch.rand(B, T, M, generator=gen, dtype=torch.float64) < 0.5).double()
    labels = torch.tensor([0, 2])
    return inputs, labels


def hidden_rates(network: SpikingNetwork, inputs: torch.Tensor) -> list[float]:
    """Mean spike rate of each hidden layer on ``inputs``."""
    states = network.initial_states(inputs)
    signals = [inputs]
    with torch.no_grad():
        for index, layer in enumerate(network.hidden):
            source = network.skip_source(index)
            run = layer.run(
                signals[-1], signals[source] if source is not None else None, *states[index],
                layer.coefficients(), record=False,
            )
            signals.append(run.spikes)
    return [float(s.mean()) for s in signals[1:]]


def gradients(network: SpikingNetwork) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in network.named_parameters()}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)

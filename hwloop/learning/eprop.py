"""e-prop = HYPR with λ = 1, and a plainly written step-by-step oracle (hypr.md §3.8).

``eprop_reference_gradients`` is deliberately naive: one step at a time, every eligibility
updated by its recursion E ← A_t·E + c_t ⊗ pre_t (K_t for neuron parameters), the loss
derivative of step t propagated down the layers at that step only, grad += l_t·E_t. It shares
only the neuron models with HYPR and exists so tests can check HYPR against it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hwloop.learning.hypr import HYPR, check_timing
from hwloop.learning.losses import per_step_ce_window
from hwloop.learning.network import SpikingNetwork


class EProp(HYPR):
    """e-prop: HYPR with subsequences of one step (same gradients, slowest schedule)."""

    name = "eprop"

    def __init__(self, recurrent_timing: str = "fixed", loss: str = "per_step_ce") -> None:
        super().__init__(lam=1, recurrent_timing=recurrent_timing, loss=loss)


@torch.no_grad()
def eprop_reference_gradients(
    network: SpikingNetwork,
    inputs: Tensor,
    labels: Tensor,
    ignore_first: int,
    recurrent_timing: str = "fixed",
) -> dict[str, Tensor]:
    """Gradients of the per-step cross-entropy by the step-by-step recursion; keyed by name."""
    official = check_timing(recurrent_timing) == "official"
    layers = network.layers
    batch, steps, _ = inputs.shape
    valid = steps - ignore_first
    states = network.initial_states(inputs)
    traces: list[dict[str, Tensor]] = [{} for _ in layers]
    grads = {name: torch.zeros_like(p) for name, p in network.named_parameters()}
    for t in range(steps):
        outputs_of = [inputs[:, t]]
        jacobians = []
        pre_of = []
        for index, layer in enumerate(layers):
            coeffs = layer.coefficients()
            state, spike_prev = states[index]
            x = outputs_of[-1]
            skip = network.skip_source(index) if index < len(network.hidden) else None
            feedforward = layer.feedforward_current(
                x, outputs_of[skip] if skip is not None else None
            )
            recurrent = layer.recurrent_current(spike_prev)
            current = feedforward if recurrent is None else feedforward + recurrent
            new_state, spike = layer.model.step(current, state, spike_prev, coeffs)
            jac = layer.model.jacobians(current, state, spike_prev, coeffs)
            dz_ds = jac.dz_ds
            rec_pre = spike_prev
            if official and layer.recurrence != "none":
                rec_pre = spike
                recurrent = layer.recurrent_current(spike)
                assert recurrent is not None
                jac = layer.model.jacobians(feedforward + recurrent, state, spike_prev, coeffs)
            presynaptic = {"w_in": x, "bias": torch.ones_like(x[:, :1])}
            if skip is not None:
                presynaptic["w_skip"] = outputs_of[skip]
            if layer.recurrence != "none":
                presynaptic["w_rec"] = rec_pre
            # eligibility recursion, one tensor per parameter; layouts (B, N, P, d) and (B, N, d)
            A = jac.A.permute(2, 3, 0, 1)  # (B, N, d, d)
            c = jac.c.permute(1, 2, 0)  # (B, N, d)
            trace = traces[index]
            for name, pre in presynaptic.items():
                previous = trace.get(name)
                if name == "w_rec" and layer.recurrence == "self":
                    fresh = c * pre[..., None]
                    carried = (A @ previous[..., None]).squeeze(-1) if previous is not None else 0
                else:
                    fresh = c[:, :, None, :] * pre[:, None, :, None]
                    carried = (
                        torch.einsum("bnij,bnpj->bnpi", A, previous) if previous is not None else 0
                    )
                trace[name] = carried + fresh
            for k, pname in enumerate(layer.model.param_names):
                previous = trace.get("params." + pname)
                carried = (A @ previous[..., None]).squeeze(-1) if previous is not None else 0
                trace["params." + pname] = carried + jac.K[k].permute(1, 2, 0)
            jacobians.append((jac, dz_ds))
            pre_of.append(presynaptic)
            states[index] = (new_state, spike)
            outputs_of.append(spike)
        # learning signals of step t, top-down, instantaneous only
        _, signal = per_step_ce_window(outputs_of[-1][:, None], labels, t, ignore_first)
        downward: dict[int, Tensor] = {len(layers): signal[:, 0]}
        for index in range(len(layers) - 1, -1, -1):
            layer = layers[index]
            jac, dz_ds = jacobians[index]
            learning = downward[index + 1][..., None] * dz_ds.permute(1, 2, 0)  # (B, N, d)
            prefix = f"hidden.{index}." if index < len(network.hidden) else "readout."
            for name, trace_value in traces[index].items():
                if trace_value.dim() == 4:  # (B, N, P, d)
                    grad = torch.einsum("bnd,bnpd->np", learning, trace_value)
                    if name == "bias":
                        grad = grad[:, 0]
                else:  # (B, N, d)
                    grad = (learning * trace_value).sum((0, 2))
                grads[prefix + name] += grad / valid
            adjoint = (learning * jac.c.permute(1, 2, 0)).sum(-1)  # (B, N)
            if index > 0:
                downward[index] = downward.get(index, 0) + adjoint @ layer.w_in
            skip = network.skip_source(index) if index < len(network.hidden) else None
            if skip is not None and skip > 0:
                downward[skip] = downward.get(skip, 0) + adjoint @ layer.w_skip
    return grads

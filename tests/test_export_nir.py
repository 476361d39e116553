"""NIR export and import (deploy/nir.py, docs/export.md): round trips through ``nir.read``,
the extension convention, refusals, and snnTorch's NIR importer on our LIF / CubaLIF nodes."""

from __future__ import annotations

from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch

from deploy import nir as nir_export
from hwloop.config import build_config
from hwloop.errors import UserError
from hwloop.runs import RunRecord, now_iso, read_run, rebuild_network, write_run
from hwloop.tasks import make_task
from hwloop.trainer import make_network
from hwloop.training import resume, task_description, train

TASK = {"task": "cue", "task_options": {"num_samples": 32}, "epochs": 1, "batch_size": 16}


def write_network_run(directory: Path, neuron: str, recurrence: str = "full",
                      **extra: object) -> RunRecord:
    """A run file holding a network of ``neuron`` built from its config (no training), with
    weights and a bias scaled up so that the neurons spike."""
    config = build_config({**TASK, "neuron": neuron, "hidden": [12, 10],
                           "recurrence": recurrence,
                           "dtype": "float64" if neuron.startswith("loihi") else "float32",
                           **extra})
    task = make_task(config.task, config.task_options, config.seed)
    network = make_network(config, task.input_size, task.num_classes)
    with torch.no_grad():
        for layer in network.hidden:
            layer.w_in.mul_(12.0 if layer.model.name == "adlif" else 4.0)
            if layer.model.current_bias:
                layer.bias.uniform_(-0.2, 0.3)
    weights = network.state_dict()
    directory.mkdir()
    write_run(directory, config=config.to_dict(), task=task_description(task), created=now_iso(),
              epochs=[], steps=[], checkpoint={"network": weights, "best_weights": weights})
    return read_run(directory)


def spikes(network: torch.nn.Module, seed: int = 0) -> list[torch.Tensor]:
    """Every layer's output on a random spike input (B=3, T=40)."""
    generator = torch.Generator().manual_seed(seed)
    dtype = network.readout.w_in.dtype
    inputs = (torch.rand(3, 40, network.input_size, generator=generator) < 0.3).to(dtype)
    with torch.no_grad():
        return network.trace(inputs)


def assert_same_network(original: torch.nn.Module, imported: torch.nn.Module) -> None:
    first, second = original.state_dict(), imported.state_dict()
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == second[name].dtype, name
        assert torch.equal(first[name], second[name]), name
    for a, b in zip(spikes(original), spikes(imported)):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> RunRecord:
    """A tiny LIF run trained by hwloop."""
    out = tmp_path_factory.mktemp("trained") / "run"
    return train(build_config({**TASK, "neuron": "lif", "hidden": [16]}), out)


def test_trained_lif_run_round_trips_through_nir_read_and_import(
        trained: RunRecord, tmp_path: Path) -> None:
    path = nir_export.export(trained, tmp_path / "net.nir")
    graph = nir.read(path)  # NIR's own reader takes the file as is
    assert isinstance(graph.nodes["layer0.neuron"], nir.LIF)
    assert isinstance(graph.nodes["readout.neuron"], nir.LI)
    assert ("layer0.neuron", "layer0.w_rec") in graph.edges
    assert ("layer0.w_rec", "layer0.neuron") in graph.edges
    assert float(graph.metadata["dt"]) == nir_export.DT
    assert graph.metadata["integration"] == "forward_euler"
    export = nir_export.read(path)
    assert (export.header.format, export.header.weights) == ("nir", "final")
    assert export.header.source_run == str(trained.path) and len(export.header.checksum) == 64

    imported = nir_export.import_run(path, tmp_path / "imported")
    original = rebuild_network(trained)
    assert_same_network(original, rebuild_network(imported))
    again = resume(tmp_path / "imported", epochs=1)  # training continues from the import
    assert len(again.epochs) == 1


def test_lif_parameter_translation_reproduces_hwloop_under_forward_euler(
        trained: RunRecord, tmp_path: Path) -> None:
    graph = nir_export.read(nir_export.export(trained, tmp_path / "net.nir")).graph
    network = rebuild_network(trained)
    layer = network.hidden[0]
    node = graph.nodes["layer0.neuron"]
    alpha = nir_export._coefficients(layer)["alpha"]
    dt = nir_export.DT
    np.testing.assert_allclose(1.0 - dt / node.tau, alpha, rtol=0, atol=1e-15)
    np.testing.assert_allclose(node.r * dt / node.tau, 1.0, rtol=1e-15)
    assert np.all(node.v_leak == 0) and np.all(node.v_threshold == layer.model.thr)
    gain = 1.0 - alpha
    np.testing.assert_allclose(graph.nodes["layer0.w_in"].weight,
                               gain[:, None] * layer.w_in.detach().double().numpy(), rtol=1e-15)
    # Euler at dt on the NIR parameters == hwloop's step (one neuron, reset to zero)
    current = torch.randn(50, layer.size, dtype=torch.float64)
    v = np.zeros(layer.size)
    u = z = torch.zeros(layer.size, dtype=torch.float64)
    coefficients = {"alpha": torch.from_numpy(alpha)}
    for step in current:
        v = v + dt / node.tau * (node.v_leak - v + node.r * gain * step.numpy())
        (u,), z = layer.model.step(step, (u,), z, coefficients)
        np.testing.assert_allclose(v, u.numpy(), atol=1e-12)
        v = np.where(v > node.v_threshold, node.v_reset, v)


@pytest.mark.parametrize("neuron, recurrence", [
    ("lif", "self"), ("alif", "full"), ("adlif", "full"), ("brf", "full"), ("lif", "full"),
    ("eprop_alif", "full"), ("loihi_lif", "full"),
])
def test_round_trip_gives_identical_parameters_and_outputs(
        neuron: str, recurrence: str, tmp_path: Path) -> None:
    record = write_network_run(tmp_path / "run", neuron, recurrence,
                               skip=neuron == "lif" and recurrence == "full")
    path = nir_export.export(record, tmp_path / "net.nir")
    network, overrides = nir_export.to_network(nir.read(path))
    original = rebuild_network(record)
    assert any(float(s.mean()) > 0.01 for s in spikes(original)[:-1])  # the neurons spike
    assert_same_network(original, network)
    assert overrides["neuron"] == neuron and overrides["recurrence"] == recurrence


@pytest.mark.parametrize("neuron", ["alif", "adlif", "brf"])
def test_models_without_a_nir_node_become_named_extension_nodes(
        neuron: str, tmp_path: Path) -> None:
    record = write_network_run(tmp_path / "run", neuron)
    graph = nir.read(nir_export.export(record, tmp_path / "net.nir"))
    node = graph.nodes["layer1.neuron"]
    assert isinstance(node, nir.NIRGraph) and node.metadata["hwloop_extension"] == neuron
    layer = rebuild_network(record).hidden[1]
    for name, value in layer.params.items():
        np.testing.assert_array_equal(node.metadata["hwloop_params"][name],
                                      value.detach().numpy())
    with pytest.raises(UserError, match=f"'{neuron}'.*faithfully") as caught:
        nir_export.export(record, tmp_path / "standard.nir", standard_only=True)
    assert "\n" not in str(caught.value) and not (tmp_path / "standard.nir").exists()


def test_standard_only_accepts_lif_and_refuses_lava_integers(
        trained: RunRecord, tmp_path: Path) -> None:
    assert nir_export.export(trained, tmp_path / "lif.nir", standard_only=True).is_file()
    record = write_network_run(tmp_path / "loihi", "loihi_lif")
    with pytest.raises(UserError, match="'loihi_lif'.*integer truncation"):
        nir_export.export(record, tmp_path / "loihi.nir", standard_only=True)


def test_damaged_files_are_refused_with_one_line(trained: RunRecord, tmp_path: Path) -> None:
    path = nir_export.export(trained, tmp_path / "net.nir")
    changed = tmp_path / "changed.nir"
    changed.write_bytes(path.read_bytes())
    with h5py.File(changed, "a") as file:
        file["node/nodes/layer0.w_rec/weight"][0, 0] += 1.0
    truncated = tmp_path / "truncated.nir"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    foreign = tmp_path / "foreign.nir"
    nir.write(foreign, nir.read(path))  # a valid NIR file without hwloop's header
    text = tmp_path / "text.nir"
    text.write_text("not a graph\n")
    for bad, reason in ((changed, "checksum"), (truncated, "truncated"),
                        (foreign, "not an hwloop export"), (text, "truncated"),
                        (tmp_path / "missing.nir", "does not exist")):
        with pytest.raises(UserError, match=reason) as caught:
            nir_export.read(bad)
        assert "\n" not in str(caught.value)
        with pytest.raises(UserError):
            nir_export.import_run(bad, tmp_path / f"run-{bad.stem}")
        assert not (tmp_path / f"run-{bad.stem}").exists()


def test_export_refuses_an_existing_file_and_leaves_no_temporary(
        trained: RunRecord, tmp_path: Path) -> None:
    path = nir_export.export(trained, tmp_path / "net.nir")
    before = path.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        nir_export.export(trained, path)
    assert path.read_bytes() == before
    nir_export.export(trained, path, weights="best", overwrite=True)
    assert nir_export.read(path).header.weights == "best"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.nir"]


def _hidden_only(graph: nir.NIRGraph, size: int) -> nir.NIRGraph:
    """The first hidden layer of an export with its spikes as the output (snnTorch's importer
    has no LI readout)."""
    nodes = {k: v for k, v in graph.nodes.items() if k in
             ("input", "layer0.w_in", "layer0.neuron", "layer0.w_rec")}
    nodes["output"] = nir.Output(np.array([size]))
    edges = [e for e in graph.edges if e[0] in nodes and e[1] in nodes and e[1] != "output"]
    return nir.NIRGraph(nodes=nodes, edges=[*edges, ("layer0.neuron", "output")])


def _snntorch_run(graph: nir.NIRGraph, inputs: torch.Tensor) -> torch.Tensor:
    """Spikes (T, B, N) of snnTorch's import of ``graph``'s recurrent layer.

    snnTorch 1.0.0's ``import_from_nir`` wraps LIF/CubaLIF ⇄ Linear cycles into subgraphs
    but then hands them to nirtorch, which routes the input through W_rec (its cycle has
    the input entering the Linear); we use snnTorch's own node conversion
    (``_nir_to_snntorch_module``: RLeaky, Synaptic) on the graph it builds instead.
    """
    import_nir = pytest.importorskip("snntorch.import_nir",
                                     reason="snntorch (with nirtorch) is not installed")
    wrapped = import_nir._replace_rnn_subgraph_with_nirgraph(graph)
    linear = import_nir._nir_to_snntorch_module(wrapped.nodes["layer0.w_in"])
    cell = import_nir._nir_to_snntorch_module(wrapped.nodes.get("layer0")
                                              or wrapped.nodes["layer0.neuron"])
    state = cell.reset_mem()
    outputs = []
    with torch.no_grad():
        for step in inputs:
            output = cell(linear(step), *state)  # (spk, mem) or (spk, syn, mem)
            outputs.append(output[0])
            state = output[len(output) - len(state):]
    return torch.stack(outputs)


def test_snntorch_importer_gives_the_same_lif_spikes(trained: RunRecord, tmp_path: Path) -> None:
    """Forward Euler with β = 1 − dt/tau = α: snnTorch's RLeaky is hwloop's LIF (float
    rounding of α aside), so the spikes are identical."""
    network = rebuild_network(trained)
    with torch.no_grad():
        network.hidden[0].w_in.mul_(3.0)  # more spikes
    graph = _hidden_only(nir_export.to_graph(network), network.hidden[0].size)
    inputs = (torch.rand(60, 4, network.input_size, generator=torch.Generator().manual_seed(1))
              < 0.3).float()
    reference = network.trace(inputs.transpose(0, 1))[0].transpose(0, 1).detach()
    assert float(reference.mean()) > 0.02
    assert torch.equal(_snntorch_run(graph, inputs), reference)


def test_snntorch_importer_runs_loihi_lif_as_cubalif_within_lava_rounding(
        tmp_path: Path) -> None:
    """loihi_lif exports as CubaLIF (tau_syn = dt/(1 − αu), tau_mem = dt/(1 − αv),
    w_in = tau_syn/dt, r = tau_mem/dt): snnTorch's RSynaptic runs the float dynamics, hwloop
    Lava's integers, which truncate u and v toward zero each step (< 2^-18 each, in host
    units). A spike may therefore differ only where hwloop's v lies within T·2·2^-18 of the
    threshold (T steps of accumulated truncation), and the spike trains agree until then.
    Feed-forward: snnTorch 1.0.0's RSynaptic with reset_delay=False computes its reset into
    a local and drops it (the next step then zeroes v including its new input), so a
    recurrent CubaLIF cannot match."""
    record = write_network_run(tmp_path / "run", "loihi_lif", "none")
    network = rebuild_network(record)
    layer = network.hidden[0]
    with torch.no_grad():  # weights on Lava's grid (what the loihi2 backend holds)
        layer.w_in.copy_(torch.round(layer.w_in * 4096) / 4096)
    graph = _hidden_only(nir_export.to_graph(network), layer.size)
    assert isinstance(graph.nodes["layer0.neuron"], nir.CubaLIF)
    steps = 40
    inputs = (torch.rand(steps, 3, network.input_size, generator=torch.Generator().manual_seed(2))
              < 0.3).double()
    snn = _snntorch_run(graph, inputs.float()).double()
    with torch.no_grad():
        reference = network.trace(inputs.transpose(0, 1))[0].transpose(0, 1)
    assert float(reference.mean()) > 0.02
    mismatch = snn != reference
    if bool(mismatch.any()):  # only near the threshold, before any other difference
        first = int(mismatch.any(-1).any(-1).nonzero()[0])
        states = _voltages(network, inputs)[first]
        close = (states - layer.model.vth / 4096).abs() < steps * 2 * 2.0**-18
        assert bool(close[mismatch[first]].all())
    assert float(mismatch.double().mean()) < 0.01


def _voltages(network: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """hwloop's pre-reset v (T, B, N) of the first hidden layer."""
    layer = network.hidden[0]
    state, spike = layer.initial_state(inputs.shape[1], inputs)
    voltages = []
    with torch.no_grad():
        for step in inputs:
            current = torch.nn.functional.linear(step, layer.w_in, layer.bias)
            current = current + layer.recurrent_current(spike)
            state, spike = layer.model.step(current, state, spike, layer.coefficients())
            voltages.append(state[1])
    return torch.stack(voltages)


@pytest.mark.parametrize("neuron", ["lif", "loihi_lif"])
def test_snntorchs_public_importer_runs_feed_forward_exports_with_our_spikes(
        neuron: str, tmp_path: Path) -> None:
    """snnTorch's ``import_from_nir`` end to end (the public API; its recurrent path is the one
    the tests above work around): a feed-forward LIF export (Leaky) and a CubaLIF one
    (Synaptic, weights on Lava's grid) spike exactly as hwloop does on a test input."""
    import_nir = pytest.importorskip("snntorch.import_nir",
                                     reason="snntorch (with nirtorch) is not installed")
    network = rebuild_network(write_network_run(tmp_path / "run", neuron, "none"))
    layer = network.hidden[0]
    with torch.no_grad():
        if neuron == "lif":
            layer.w_in.mul_(3.0)  # more spikes
        else:
            layer.w_in.copy_(torch.round(layer.w_in * 4096) / 4096)
    model = import_nir.import_from_nir(_hidden_only(nir_export.to_graph(network), layer.size))
    inputs = (torch.rand(40, 3, network.input_size, generator=torch.Generator().manual_seed(2))
              < 0.3).to(layer.w_in.dtype)
    spikes, state = [], None
    with torch.no_grad():
        for step in inputs.float():
            output, state = model(step) if state is None else model(step, state)
            spikes.append(output)
        reference = network.trace(inputs.transpose(0, 1))[0].transpose(0, 1)
    assert float(reference.mean()) > 0.02
    assert torch.equal(torch.stack(spikes).to(reference.dtype), reference)

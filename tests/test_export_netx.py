"""The Lava NetX HDF5 export (``deploy.netx``; spec loihi2_lava_nir.md §7): the layout NetX
reads, the device's integers, the same spikes and readout as the ``loihi2`` backend, NetX's own
``fixed_pt`` run where lava-dl is installed, and one-line refusals that write nothing."""

from __future__ import annotations

import shutil
import sys
import types
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from deploy import netx
from deploy.container import HEADER_ATTRIBUTES, MAGIC
from hwloop.config import build_config
from hwloop.errors import UserError
from hwloop.runs import RunRecord, read_run, rebuild_network
from hwloop.session import device_layers, network_groups
from hwloop.tasks import make_task
from hwloop.training import train
from simulators.loihi2.backend import Loihi2Backend, aligned_run, device_inputs, padded
from simulators.loihi2.isolation import call_isolated
from simulators.loihi2.network import emulate

TASK = {"seq_len": 5, "delay": 5, "num_samples": 48}
SMALL = dict(task="cue", neuron="loihi_lif", dtype="float64", epochs=1, batch_size=16,
             task_options=TASK, seed=1)
EXPORTABLE = dict(SMALL, hidden=[8], recurrence="full", init_gain=0.0625,
                  neuron_options={"vth": 256})
"""Weights small against a low threshold: every layer fits exponent 0 on the device."""
LAVA_TIMEOUT = 300.0


def _train(root: Path, name: str, **settings: object) -> RunRecord:
    train(build_config(None, [], **settings), root / name)
    return read_run(root / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunRecord]:
    root = tmp_path_factory.mktemp("netx_runs")
    return {
        # trained in the loop on the emulator, every layer at exponent 0
        "hil": _train(root, "hil", **EXPORTABLE, backend="loihi2",
                      backend_options={"range_factor": 0.05}),
        # trained on the host; wide enough that the readout's initial weights are small
        "host": _train(root, "host", **dict(SMALL, hidden=[2048], recurrence="none",
                                            lr=1e-4, neuron_options={"vth": 64})),
    }


@pytest.fixture(scope="module")
def exports(runs: dict[str, RunRecord], tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("netx_files")
    return {name: netx.export(record, root / f"{name}.h5") for name, record in runs.items()}


def _backend(record: RunRecord) -> Loihi2Backend:
    """The ``loihi2`` backend running the run's network: the device state of a run trained on
    it, otherwise the run's weights programmed at the smallest unclipped exponents."""
    network = rebuild_network(record)
    backend = Loihi2Backend(bits=8, range_factor=1.0)
    backend.declare_network(network_groups(network))
    if record.is_hardware_in_the_loop:
        backend.load_state_dict(record.checkpoint["device"])
        return backend
    for name, parameter in device_layers(network).items():
        backend.declare(name, tuple(parameter.shape))
        assert backend.program(name, parameter.detach().numpy()).clipped == 0
    return backend


def _test_inputs(record: RunRecord) -> np.ndarray:
    task = make_task("cue", record.config["task_options"], record.config["seed"])
    return device_inputs(task.test.inputs.numpy())


# --- layout ----------------------------------------------------------------------------------

def _text(dataset: h5py.Dataset) -> bytes:
    assert dataset.dtype == np.dtype("S10") and dataset.shape == (1,)
    return dataset[0]


def test_the_layout_is_what_netx_reads_field_by_field(runs: dict[str, RunRecord],
                                                      exports: dict[str, Path]) -> None:
    record = runs["hil"]
    held = record.checkpoint["device"]["held"]
    exponents = record.checkpoint["device"]["exponents"]
    with h5py.File(exports["hil"], "r") as file:
        assert sorted(file) == ["hwloop", "layer"]
        assert sorted(file["layer"], key=int) == ["0", "1", "2"]
        first = file["layer/0"]
        assert sorted(first) == ["shape", "type"]  # shape only: spikes reach layer 1's Dense
        assert _text(first["type"]) == b"input" and first["shape"][()].tolist() == [15]
        for index, (name, kind, size, width) in enumerate(
                [("hidden.0", b"dense_rec", 8, 15), ("readout", b"dense", 2, 8)], start=1):
            layer = file[f"layer/{index}"]
            assert _text(layer["type"]) == kind
            assert layer["shape"][()].tolist() == [size]
            assert layer["inFeatures"][()] == width and layer["outFeatures"][()] == size
            weight = layer["weight"][()]
            assert weight.dtype.kind == "i" and weight.shape == (size, width)
            np.testing.assert_array_equal(weight, held[f"{name}.w_in"]
                                          << exponents[f"{name}.w_in"])
            if kind == b"dense_rec":
                np.testing.assert_array_equal(layer["weight_rec"][()], held[f"{name}.w_rec"]
                                              << exponents[f"{name}.w_rec"])
            else:
                assert "weight_rec" not in layer and "bias" not in layer
            neuron = layer["neuron"]
            assert sorted(neuron) == ["gradedSpike", "iDecay", "refDelay", "type", "vDecay",
                                      "vThMant"]
            assert _text(neuron["type"]) == b"CUBA"
            vth = 256 if name == "hidden.0" else 131071
            # iDecay = du + 1 (NetX passes du = iDecay − 1 to Lava's LIF), vDecay = dv
            assert (neuron["iDecay"][()], neuron["vDecay"][()], neuron["vThMant"][()]) == \
                (4096, 410, vth)
            assert all(dataset.shape == () for key, dataset in neuron.items() if key != "type")
            assert not layer.attrs and not neuron.attrs  # NetX reads datasets only
        assert file.attrs["magic"] == MAGIC and file.attrs["format"] == "netx"
        assert set(file.attrs) == set(HEADER_ATTRIBUTES)
        assert file.attrs["source_run"] == str(record.path)
        assert file["hwloop/bits"][()] == 8


def test_read_gives_the_devices_integers_and_exponents(runs: dict[str, RunRecord],
                                                       exports: dict[str, Path]) -> None:
    exported = netx.read(exports["hil"])
    assert exported.header.weights == "final" and exported.input_size == 15
    assert [layer.model for layer in exported.layers] == ["loihi_lif", "loihi_li"]
    device = _backend(runs["hil"]).network()
    for ours, theirs in zip(exported.device_network().layers, device.layers):
        for connection in ("w_in", "w_rec"):
            a, b = getattr(ours, connection), getattr(theirs, connection)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a.weights, b.weights)
                assert (a.weight_exp, a.num_weight_bits) == (b.weight_exp, b.num_weight_bits)
        assert (ours.neurons.du, ours.neurons.dv, ours.neurons.vth) == \
            (theirs.neurons.du, theirs.neurons.dv, theirs.neurons.vth)


# --- behaviour ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["hil", "host"])
def test_the_file_runs_like_the_loihi2_backend(name: str, runs: dict[str, RunRecord],
                                               exports: dict[str, Path]) -> None:
    record = runs[name]
    inputs = _test_inputs(record)
    expected = _backend(record).run(inputs)
    for network in (netx.load_network(exports[name]), netx.read(exports[name]).device_network()):
        steps = padded(inputs, len(network.layers))
        got = aligned_run(emulate(network, steps)[0], inputs.shape[1])
        for ours, theirs in zip(got.spikes, expected.spikes):
            np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(got.outputs, expected.outputs)
    assert all(float(spikes.sum()) > 0 for spikes in expected.spikes), "the hidden layers spike"
    assert float(np.abs(expected.outputs).max()) > 0


def run_netx_in_lava(path: str, inputs: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Load ``path`` with ``netx.hdf5.Network`` and run one sample (T, M) with
    ``Loihi2SimCfg(select_tag="fixed_pt")``; every block's u, v and spikes (T, N)."""
    _allow_netx_import()
    from lava.lib.dl import netx as lava_netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    steps = inputs.shape[0]
    network = lava_netx.hdf5.Network(net_config=path)
    source = RingBuffer(data=np.asarray(inputs, dtype=np.int32).T)
    source.s_out.connect(network.inp)
    probes = []
    for block in network.layers:
        targets = {"u": block.neuron.u, "v": block.neuron.v, "spikes": block.neuron.s_out}
        monitors = {name: Monitor() for name in targets}
        for name, monitor in monitors.items():
            monitor.probe(targets[name], steps)
        probes.append((block.neuron, targets, monitors))
    try:
        network.run(condition=RunSteps(num_steps=steps),
                    run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        return [{name: np.rint(np.asarray(monitors[name].get_data()[neuron.name]
                                          [target.name], np.float64)).astype(np.int64)
                 for name, target in targets.items()}
                for neuron, targets, monitors in probes]
    finally:
        network.stop()


def _allow_netx_import() -> None:
    """lava-dl's slayer imports an object-detection module that needs cv2 and torchvision;
    a placeholder lets NetX load without them (spec install.md)."""
    import hwloop  # noqa: F401  (installs the import fix lava-nc 0.10.0 needs on Python 3.11)

    name = "lava.lib.dl.slayer.object_detection"
    sys.modules.setdefault(name, types.ModuleType(name))


@pytest.mark.parametrize("name", ["hil", "host"])
def test_netx_fixed_pt_gives_exactly_the_emulators_spikes(name: str, runs: dict[str, RunRecord],
                                                          exports: dict[str, Path]) -> None:
    _allow_netx_import()
    pytest.importorskip("lava.lib.dl.netx", reason="lava-dl is not installed (optional: "
                        "pip install --no-deps --ignore-requires-python lava-dl==0.6.0); the "
                        "layout test checks the file against the spec instead")
    inputs = _test_inputs(runs[name])
    network = netx.load_network(exports[name])
    sample = padded(inputs[:1], len(network.layers))
    trajectory = emulate(network, sample)[0]
    lava = call_isolated(run_netx_in_lava, str(exports[name]), sample[0], timeout=LAVA_TIMEOUT)
    assert len(lava) == len(trajectory.layers)
    for ours, theirs in zip(trajectory.layers, lava):
        for key in ("spikes", "u", "v"):
            np.testing.assert_array_equal(ours[key][0], theirs[key], err_msg=key)
    assert int(trajectory.spikes[0].sum()) > 0


# --- refusals --------------------------------------------------------------------------------

def _refused(out: Path, *args: object, **options: object) -> str:
    before = sorted(out.parent.iterdir())
    with pytest.raises(UserError) as caught:
        netx.export(*args, out, **options)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message and "\n" not in message
    assert sorted(out.parent.iterdir()) == before, "nothing is written"
    return message


@pytest.mark.parametrize("settings,expected", [
    (dict(SMALL, neuron="lif", hidden=[4]), "loihi_lif"),
    (dict(SMALL, hidden=[4, 4, 4], skip=True), "skip"),
    (dict(SMALL, hidden=[8]), "NetX cannot hold layer"),  # default vth: weights too large
])
def test_networks_netx_cannot_hold_are_refused(settings: dict, expected: str,
                                               tmp_path: Path) -> None:
    record = _train(tmp_path, "run", **settings)
    (tmp_path / "out").mkdir()
    assert expected in _refused(tmp_path / "out" / "x.h5", record)


def test_bad_bits_weights_and_existing_outputs_are_refused(runs: dict[str, RunRecord],
                                                           exports: dict[str, Path],
                                                           tmp_path: Path) -> None:
    assert "bits" in _refused(tmp_path / "x.h5", runs["host"], bits=9)
    assert "bits" in _refused(tmp_path / "x.h5", runs["hil"], bits=4)  # the device's are kept
    assert "weights" in _refused(tmp_path / "x.h5", runs["hil"], weights="last")
    assert "no final weights" in _refused(tmp_path / "x.h5",
                                          replace(runs["host"], final_weights=None))
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"keep")
    assert "--overwrite" in _refused(existing, runs["hil"])
    assert existing.read_bytes() == b"keep"
    netx.export(runs["hil"], existing, overwrite=True)
    assert netx.read(existing).header.format == "netx"


def test_best_weights_of_a_loihi2_run_export_on_the_device_grid(runs: dict[str, RunRecord],
                                                                tmp_path: Path) -> None:
    best = netx.read(netx.export(runs["hil"], tmp_path / "best.h5", weights="best"))
    assert best.header.weights == "best" and best.layers[0].weight_exp == 0


def test_damaged_files_are_refused_in_one_line(exports: dict[str, Path], tmp_path: Path) -> None:
    changed = tmp_path / "changed.h5"
    shutil.copy(exports["hil"], changed)
    with h5py.File(changed, "r+") as file:
        file["layer/1/weight"][0, 0] += 2
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(exports["hil"].read_bytes()[:1500])
    for path, expected in ((changed, "checksum"), (truncated, "truncated"),
                           (tmp_path / "missing.h5", "does not exist")):
        for reader in (netx.read, netx.load_network):
            with pytest.raises(UserError, match=expected) as caught:
                reader(path)
            assert "\n" not in str(caught.value)


def test_netx_arithmetic_edges() -> None:
    # mixed, odd values above 127: 9 weight bits, nothing truncated
    stored, bits, exponent = netx.netx_weight_bits(np.array([[200, -50, 3]]))
    assert (stored.tolist(), bits, exponent) == ([[200, -50, 3]], 9, 0)
    # small mixed values are scaled up and shifted back exactly
    dense = netx.netx_connections(np.array([[10, -20], [3, 0], [100, 50]]))[0]
    assert dense.weight_exp == -1
    np.testing.assert_array_equal(netx.effective_weights(dense), [[10, -20], [3, 0], [100, 50]])
    # NetX calls negatives-and-zeros mixed, Lava's Dense inhibitory: −1 becomes 0 (lossy)
    lossy = netx.netx_connections(np.array([[-1, 0, -1]]))[0]
    assert not np.array_equal(netx.effective_weights(lossy), [[-1, 0, -1]])
    # a one-signed matrix beyond 255 vanishes
    assert not netx.netx_weight_bits(np.array([[512, 300, 7]]))[0].any()
    with pytest.raises(ValueError, match="all its weights are 0"):
        netx.netx_weight_bits(np.zeros((2, 2), dtype=np.int64))

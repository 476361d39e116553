"""Exports for hardware (issue 11): the shared container, PCM conductance maps and SpiNNaker 2
images, each proven by loading it into its backend and running the test set."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deploy import export_run, pcm, spinnaker2
from hwloop.backends import Backend, open_backend
from hwloop.cli import main
from hwloop.config import build_config
from hwloop.errors import UserError
from hwloop.evaluation import evaluate
from hwloop.runs import read_run, rebuild_network
from hwloop.session import device_layers
from hwloop.tasks import make_task
from hwloop.trainer import evaluate_network
from simulators.spinnaker2.server import start_server

SMALL = ["task_options.num_samples=128", "hidden=[24]", "--quiet"]


def train(out: Path, *args: str, small: tuple[str, ...] = tuple(SMALL)) -> Path:
    result = CliRunner().invoke(main, ["train", "--out", str(out), *args, *small])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("runs")
    return {
        "pcm": train(folder / "pcm", "--backend", "pcm://?noise=false", "--bits", "4",
                     "--scheme", "mixed", "--epochs", "3"),
        "pcm-noisy": train(folder / "pcm-noisy", "--backend", "pcm", "--bits", "4",
                           "--scheme", "mixed", "--epochs", "3"),
        "spinnaker2": train(folder / "s2", "--backend", "spinnaker2", "--bits", "8",
                            "--epochs", "3"),
        "host": train(folder / "host", "--epochs", "2"),
    }


def device_accuracy(run: Path, device: Backend) -> float:
    """Test accuracy of the run's network with the weights ``device`` holds."""
    record = read_run(run)
    network = rebuild_network(record)
    with torch.no_grad():
        for name, parameter in device_layers(network).items():
            parameter.copy_(torch.from_numpy(device.read(name)))
    config = build_config(record.config)
    task = make_task(config.task, config.task_options, config.seed)
    return evaluate_network(network, task.test, config, task.ignore_first)[0]


def trained_device(run: Path) -> Backend:
    """The run's own device as training left it (its checkpoint)."""
    record = read_run(run)
    assert record.config is not None
    device = open_backend(record.config["backend"], bits=record.config["bits"])
    device.load_state_dict(record.checkpoint["device"])  # type: ignore[index]
    return device


def test_a_pcm_map_programs_the_levels_the_trained_device_held(runs: dict[str, Path],
                                                               tmp_path: Path) -> None:
    out = export_run(runs["pcm"], "pcm", tmp_path / "map.h5")
    conductance_map = pcm.read(out)
    trained = trained_device(runs["pcm"])
    loaded = pcm.load_into(conductance_map, noise=False)
    assert [layer.name for layer in conductance_map.layers] == list(trained.shapes)
    for layer in conductance_map.layers:
        np.testing.assert_array_equal(layer.levels, trained.arrays[layer.name].levels)
        g_plus, g_minus = conductance_map.targets(layer)
        assert g_plus.min() >= conductance_map.g_min and g_minus.max() <= conductance_map.g_max
        np.testing.assert_array_equal(loaded.read(layer.name), trained.read(layer.name))
    own = evaluate(runs["pcm"], device_seeds=0).rows[0]
    assert own.device == "trained"
    assert device_accuracy(runs["pcm"], loaded) == own.accuracy


def test_a_noisy_pcm_map_reaches_the_recorded_accuracy_within_seed_noise(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    conductance_map = pcm.read(export_run(runs["pcm-noisy"], "pcm", tmp_path / "map.h5"))
    recorded = read_run(runs["pcm-noisy"]).epochs[-1].test_accuracy
    accuracies = [device_accuracy(runs["pcm-noisy"], pcm.load_into(conductance_map, seed=seed))
                  for seed in range(3)]
    assert abs(np.mean(accuracies) - recorded) <= 0.1, (accuracies, recorded)


def test_the_map_of_a_host_run_quantizes_like_a_fresh_device(runs: dict[str, Path],
                                                             tmp_path: Path) -> None:
    conductance_map = pcm.read(export_run(runs["host"], "pcm", tmp_path / "map.h5"))
    weights = read_run(runs["host"]).final_weights
    for layer in conductance_map.layers:
        assert np.abs(layer.levels).max() == 7  # 4 bits, scale max|W|/7
        np.testing.assert_allclose(layer.levels * layer.scale, weights[layer.name],  # type: ignore[index]
                                   atol=float(layer.scale.max()) / 2 + 1e-12)


def test_a_spinnaker2_image_holds_what_the_trained_chip_held(runs: dict[str, Path],
                                                             tmp_path: Path) -> None:
    image = spinnaker2.read(export_run(runs["spinnaker2"], "spinnaker2", tmp_path / "img.h5"))
    trained = trained_device(runs["spinnaker2"])
    loaded = spinnaker2.load_into(image)
    assert image.routes == ()  # weights only: no packets to route
    for name in trained.shapes:
        np.testing.assert_array_equal(loaded.read(name), trained.read(name))
    own = evaluate(runs["spinnaker2"], device_seeds=0).rows[0]
    assert device_accuracy(runs["spinnaker2"], loaded) == own.accuracy
    with start_server(n_pe=152) as server:  # the same image over the serial link
        remote = spinnaker2.load_into(image, port=server.url)
        try:
            for name in trained.shapes:
                np.testing.assert_array_equal(remote.read(name), trained.read(name))
        finally:
            remote.close()


def test_an_eprop_network_becomes_an_image_with_its_mapping_and_router(tmp_path: Path) -> None:
    run = train(tmp_path / "eprop", "--neuron", "eprop_alif", "--epochs", "1")
    image = spinnaker2.read(export_run(run, "spinnaker2", tmp_path / "img.h5",
                                       weight_format="int8"))
    assert image.chip["config"]["kind"] == "eprop"
    assert len(image.memories) == 4  # input PE, two workers of 12 neurons, the readout
    assert image.routes, "an e-prop mapping routes inputs, spikes and learning signals"
    loaded = spinnaker2.load_into(image)
    network = rebuild_network(read_run(run))
    inputs = torch.from_numpy(
        (np.random.default_rng(0).random((2, 60, 15)) < 0.3).astype(np.float64))
    with torch.no_grad():
        for name, parameter in device_layers(network).items():
            parameter.copy_(torch.from_numpy(loaded.read(name)))
        host_spikes = network.double().trace(inputs)[0]
    np.testing.assert_array_equal(loaded.run(inputs.numpy()).spikes[0], host_spikes.numpy())


def test_a_network_too_big_for_the_chip_is_refused_before_writing(tmp_path: Path) -> None:
    run = train(tmp_path / "big", "--epochs", "1", "hidden=[2000]", "--quiet",
                "task_options.num_samples=8", "batch_size=4", small=())
    with pytest.raises(UserError, match="does not fit SpiNNaker 2"):
        export_run(run, "spinnaker2", tmp_path / "img.h5")
    assert not (tmp_path / "img.h5").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["big"]


def flip_one_payload_byte(path: Path) -> None:
    with h5py.File(path, "r+") as file:
        dataset = file["payload/layers/hidden.0.w_in/levels"]
        values = dataset[()]
        values.flat[0] = values.flat[0] + 1
        dataset[...] = values


@pytest.mark.parametrize("damage,message", [
    ("flip", "does not match its checksum"),
    ("truncate", "cannot be read as an hwloop export"),
    ("text", "cannot be read as an hwloop export"),
    ("missing", "does not exist"),
])
def test_damaged_exports_are_refused_in_one_line(runs: dict[str, Path], tmp_path: Path,
                                                 damage: str, message: str) -> None:
    out = export_run(runs["pcm"], "pcm", tmp_path / "map.h5")
    if damage == "flip":
        flip_one_payload_byte(out)
    elif damage == "truncate":
        out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    elif damage == "text":
        out.write_text("not hdf5\n")
    else:
        out.unlink()
    with pytest.raises(UserError, match=message) as refused:
        pcm.read(out)
    assert "\n" not in str(refused.value)


def test_a_file_of_another_format_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    out = export_run(runs["pcm"], "pcm", tmp_path / "map.h5")
    with pytest.raises(UserError, match="holds a 'pcm' export, not 'spinnaker2'"):
        spinnaker2.read(out)


def test_the_cli_exports_refuses_in_one_line_and_never_overwrites(runs: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "map.h5"
    result = CliRunner().invoke(main, ["export", str(runs["pcm"]), "--format", "pcm", "--out",
                                       str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    assert '"format": "pcm"' in result.stdout and out.exists()
    before = out.read_bytes()
    for args, message in (
        (["--format", "pcm", "--out", str(out)], "already exists"),
        (["--format", "nope", "--out", str(tmp_path / "x.h5")], "Invalid value for '--format'"),
        (["--format", "pcm", "--out", str(tmp_path / "no" / "x.h5")], "does not exist"),
        (["--format", "pcm", "--out", str(tmp_path / "x.h5"), "--weight-format", "int8"],
         "applies to --format spinnaker2 only"),
    ):
        result = CliRunner().invoke(main, ["export", str(runs["pcm"]), *args])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    result = CliRunner().invoke(main, ["export", str(tmp_path / "nothing"), "--format", "pcm",
                                       "--out", str(tmp_path / "y.h5")])
    assert result.exit_code == 2
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.h5"]
    help_text = CliRunner().invoke(main, ["export", "--help"]).stdout
    assert "pcm:" in help_text and "spinnaker2:" in help_text


def test_the_checksum_reads_variable_length_strings_by_their_text(tmp_path: Path) -> None:
    from deploy.container import payload_checksum

    path = tmp_path / "strings.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("s", data=np.array(["a", "bc"], dtype=h5py.string_dtype()))
        written = payload_checksum(file)
    with h5py.File(path) as file:
        assert payload_checksum(file) == written  # not the addresses of the strings
    with h5py.File(path, "r+") as file:
        file["s"][1] = "bd"
    with h5py.File(path) as file:
        assert payload_checksum(file) != written


def test_a_nir_import_of_a_run_trained_in_the_loop_holds_what_its_device_held(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    nir_file = tmp_path / "net.nir"
    result = CliRunner().invoke(main, ["export", str(runs["pcm"]), "--format", "nir", "--out",
                                       str(nir_file)])
    assert result.exit_code == 0, result.stderr
    result = CliRunner().invoke(main, ["import", str(nir_file), "--out", str(tmp_path / "imp")])
    assert result.exit_code == 0, result.stderr
    imported = read_run(tmp_path / "imp")
    assert imported.config["backend"] == "none" and imported.config["scheme"] == "direct"  # type: ignore[index]
    trained = trained_device(runs["pcm"])
    for name in trained.shapes:  # noise off: the device's levels, in the float32 network
        np.testing.assert_allclose(imported.final_weights[name], trained.read(name),  # type: ignore[index]
                                   rtol=1e-7, atol=0)
    own = evaluate(runs["pcm"], device_seeds=0).rows[0]
    assert evaluate(tmp_path / "imp").rows[0].accuracy == own.accuracy
    result = CliRunner().invoke(main, ["import", str(nir_file), "--out", str(tmp_path / "imp")])
    assert result.exit_code == 2 and "already holds a run" in result.stderr

"""Backend options: typed and range-checked at open time, one-line errors; declared steps,
drift compensation, the device clock; plugins that fail to load (docs/backends.md)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwloop.backends import (
    available_backends,
    backend_listing,
    broken_backends,
    open_backend,
    parse_backend_spec,
)
from hwloop.backends.ideal import IdealBackend
from hwloop.errors import UserError
from hwloop.quantize import symmetric_levels
from simulators.pcm import PCMBackend


def one_line_error(spec: str, **options: Any) -> str:
    """The message of the UserError that opening ``spec`` must raise; checked to be one line."""
    with pytest.raises(UserError) as caught:
        open_backend(spec, **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "spec,option",
    [
        # types: spec values are parsed (int, float, true/false, text), then converted
        ("pcm://?seed=abc", "seed"),
        ("pcm://?seed=1.5", "seed"),
        ("pcm://?seed=1e3", "seed"),
        ("pcm://?seed=true", "seed"),
        ("pcm://?seed=", "seed"),
        ("pcm://?bits=4.0", "bits"),
        ("pcm://?bits=nan", "bits"),
        ("pcm://?noise=off", "noise"),
        ("pcm://?gdc=1", "gdc"),
        ("pcm://?per_channel=yes", "per_channel"),
        ("pcm://?mode=1", "mode"),
        ("pcm://?g_max=nan", "g_max"),
        ("pcm://?g_max=inf", "g_max"),
        ("pcm://?refresh_threshold=nan", "refresh_threshold"),
        ("pcm://?refresh_threshold=-inf", "refresh_threshold"),
        ("pcm://?tolerance=inf", "tolerance"),
        ("pcm://?range_factor=1e999", "range_factor"),
        ("ideal://?bits=four", "bits"),
        ("ideal://?range_factor=nan", "range_factor"),
        ("ideal://?per_channel=1", "per_channel"),
        # ranges
        ("pcm://?bits=0", "bits"),
        ("pcm://?bits=1", "bits"),
        ("pcm://?bits=9", "bits"),
        ("ideal://?bits=1", "bits"),
        ("ideal://?bits=9", "bits"),
        ("ideal://?range_factor=0", "range_factor"),
        ("ideal://?range_factor=101", "range_factor"),
        ("pcm://?range_factor=-1", "range_factor"),
        ("pcm://?g_max=0", "g_max"),
        ("pcm://?g_max=-5", "g_max"),
        ("pcm://?g_max=1001", "g_max"),
        ("pcm://?fit=hermes&g_max=25", "g_max"),
        ("pcm://?g_min=-1", "g_min"),
        ("pcm://?g_min=25", "g_min"),
        ("pcm://?g_max=10&g_min=12", "g_min"),
        ("pcm://?prog_noise_scale=-0.1", "prog_noise_scale"),
        ("pcm://?drift_scale=-1", "drift_scale"),
        ("pcm://?read_noise_scale=1000", "read_noise_scale"),
        ("pcm://?tolerance=0", "tolerance"),
        ("pcm://?tolerance=-0.5", "tolerance"),
        ("pcm://?tolerance=15", "tolerance"),
        ("pcm://?g_max=" + "9" * 400, "g_max"),
        ("pcm://?seed=" + "9" * 400, "seed"),
        ("pcm://?max_iterations=0", "max_iterations"),
        ("pcm://?max_iterations=10001", "max_iterations"),
        ("pcm://?tile=0", "tile"),
        ("pcm://?tile=4097", "tile"),
        ("pcm://?tile=1000000000", "tile"),
        ("pcm://?dac_bits=1", "dac_bits"),
        ("pcm://?dac_bits=17", "dac_bits"),
        ("pcm://?adc_bits=0", "adc_bits"),
        ("pcm://?adc_bits=64", "adc_bits"),
        ("pcm://?output_noise=-0.01", "output_noise"),
        ("pcm://?output_noise=1e300", "output_noise"),
        ("pcm://?refresh_threshold=0", "refresh_threshold"),
        ("pcm://?refresh_threshold=25.5", "refresh_threshold"),
        ("pcm://?mode=verify&refresh_threshold=11", "refresh_threshold"),
        ("pcm://?write_cycle_seconds=0", "write_cycle_seconds"),
        ("pcm://?write_cycle_seconds=-1e-6", "write_cycle_seconds"),
        ("pcm://?write_cycle_seconds=1e300", "write_cycle_seconds"),
        ("pcm://?seed=-1", "seed"),
        ("pcm://?seed=9223372036854775808", "seed"),
        ("pcm://?seed=" + "9" * 5000, "seed"),
        ("pcm://?mode=fast", "mode"),
        ("pcm://?fit=rram", "fit"),
        # unknown and repeated keys
        ("pcm://?colour=red", "colour"),
        ("ideal://?seed=1", "seed"),
        ("pcm://?seed=1&seed=2", "seed"),
        ("pcm://?seed=1&seed=1", "seed"),
    ],
)
def test_bad_spec_options_name_the_option(spec: str, option: str) -> None:
    message = one_line_error(spec)
    assert option in message
    assert "backend 'pcm'" in message or "backend 'ideal'" in message or spec in message


@pytest.mark.parametrize(
    "spec,options,option",
    [
        ("pcm", {"seed": -1}, "seed"),
        ("pcm", {"seed": 2**63}, "seed"),
        ("pcm", {"seed": 1.5}, "seed"),
        ("pcm", {"seed": True}, "seed"),
        ("pcm", {"seed": "1"}, "seed"),
        ("pcm", {"bits": 4.0}, "bits"),
        ("pcm", {"tile": 10**9}, "tile"),
        ("pcm", {"g_max": math.nan}, "g_max"),
        ("pcm", {"g_max": math.inf}, "g_max"),
        ("pcm", {"refresh_threshold": math.nan}, "refresh_threshold"),
        ("pcm", {"refresh_threshold": math.inf}, "refresh_threshold"),
        ("pcm", {"noise": 0}, "noise"),
        ("pcm", {"output_noise": -1.0}, "output_noise"),
        ("pcm", {"g_max": 10**400}, "g_max"),
        ("pcm", {"colour": "red"}, "colour"),
        ("ideal", {"bits": 1}, "bits"),
        ("ideal", {"bits": "4"}, "bits"),
        ("ideal", {"range_factor": math.inf}, "range_factor"),
        ("ideal", {"per_channel": None}, "per_channel"),
        # given in the spec and as an option with another value
        ("pcm://?seed=1", {"seed": 2}, "seed"),
        ("pcm://?noise=false", {"noise": True}, "noise"),
        ("ideal://?bits=4", {"bits": 8}, "bits"),
        ("pcm://?g_max=20", {"g_max": None}, "g_max"),
    ],
)
def test_bad_keyword_options_name_the_option(
    spec: str, options: dict[str, Any], option: str
) -> None:
    assert option in one_line_error(spec, **options)


def test_conflicting_values_are_both_named() -> None:
    message = one_line_error("pcm://?seed=1", seed=2)
    assert "'seed'" in message and "1" in message and "2" in message


def test_unknown_options_list_the_valid_ones() -> None:
    message = one_line_error("pcm://?colour=red")
    assert "unknown option 'colour' for backend 'pcm'" in message
    assert "valid: bits, mode, fit, g_max, g_min, noise" in message
    assert "valid: bits, range_factor, per_channel" in one_line_error("ideal", colour="red")


def test_good_options_are_converted() -> None:
    backend = open_backend("pcm://?g_max=20&refresh_threshold=5&tolerance=1", seed=3)
    assert isinstance(backend, PCMBackend)
    assert backend.fit.g_max == 20.0 and isinstance(backend.fit.g_max, float)
    assert backend.refresh_threshold == 5.0 and backend.verify.tolerance == 1.0
    assert backend.seed == 3
    # the same value in the spec and as an option is fine (an int where a float is expected)
    assert open_backend("pcm://?seed=7&g_max=20", seed=7, g_max=20.0).seed == 7
    ideal = open_backend("ideal://?bits=4&range_factor=2&per_channel=true")
    assert isinstance(ideal, IdealBackend)
    assert (ideal.bits, ideal.range_factor, ideal.per_channel) == (4, 2.0, True)


@pytest.mark.parametrize(
    "spec",
    [
        "pcm://?bits=2", "pcm://?bits=8", "pcm://?seed=0", "pcm://?seed=9223372036854775807",
        "pcm://?tile=1", "pcm://?tile=4096", "pcm://?max_iterations=10000",
        "pcm://?tolerance=14", "pcm://?bits=8&tolerance=254",
        "pcm://?dac_bits=2&adc_bits=16", "pcm://?g_max=1000&refresh_threshold=1000",
        "pcm://?prog_noise_scale=0&drift_scale=100&read_noise_scale=0&output_noise=0",
        "pcm://?write_cycle_seconds=1", "pcm://?range_factor=100", "ideal://?bits=2",
        "ideal://?bits=8&range_factor=100", "pcm://?", "ideal://",
    ],
)
def test_the_ends_of_each_range_are_accepted(spec: str) -> None:
    open_backend(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "", "://", "://?bits=4", "pcm://host", "pcm://host?bits=4", "pcm:///path",
        "pcm://?bits", "pcm://?bits=4&", "pcm://[", "pcm://?bits=4#top", "pcm://?bits=%ff",
        "pcm://?=4", "pcm?bits=4", " pcm", "pcm://?a=1;b=2", "nope://?x=1", "\x00",
        "pcm://?seed=1&&bits=4", "pcm://" + "?bits=4" * 3,
    ],
)
def test_malformed_specs_are_one_line_user_errors(spec: str) -> None:
    one_line_error(spec)


def test_a_spec_must_be_a_string() -> None:
    one_line_error(4)  # type: ignore[arg-type]


def test_spec_keys_given_twice_are_refused() -> None:
    with pytest.raises(UserError, match="gives option 'seed' twice"):
        parse_backend_spec("pcm://?seed=1&seed=1")
    assert parse_backend_spec("my_chip://?gain=2") == ("my_chip", {"gain": 2})


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_no_string_gives_a_traceback(text: str) -> None:
    for spec in (text, "pcm://?" + text, "ideal://?bits=" + text, "pcm://?seed=" + text):
        try:
            open_backend(spec)
        except UserError as error:
            assert "\n" not in str(error)


@pytest.mark.parametrize(
    "options,option",
    [
        ({"tile": 10**9}, "tile"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"g_max": math.nan}, "g_max"),
        ({"refresh_threshold": math.inf}, "refresh_threshold"),
        ({"bits": True}, "bits"),
        ({"noise": "false"}, "noise"),
    ],
)
def test_constructors_check_their_options_too(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ValueError, match=option):
        PCMBackend(**options)


def test_ideal_refuses_one_bit_and_nan_directly() -> None:
    with pytest.raises(ValueError, match="bits >= 2"):
        IdealBackend(bits=1)
    with pytest.raises(ValueError, match="range_factor"):
        IdealBackend(range_factor=math.nan)


def test_the_pcm_clock_cannot_run_to_overflow() -> None:
    backend = PCMBackend(noise=False)
    backend.declare("layer", (3, 2))
    backend.program("layer", np.ones((3, 2)))
    clock = backend.clock
    with pytest.raises(ValueError, match="device clock would pass"):
        backend.advance_time(1e305)
    assert backend.clock == clock
    assert np.isfinite(backend.read("layer")).all()


# --- declare(step=) --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["ideal://?bits=4", "pcm://?bits=4&noise=false"])
@pytest.mark.parametrize("step", [np.array([[0.125]]), np.linspace(0.1, 0.3, 6).reshape(6, 1)])
def test_a_declared_step_puts_levels_on_the_device_exactly(spec: str, step: np.ndarray) -> None:
    weights = np.random.default_rng(0).uniform(-1.0, 1.0, (6, 4))
    backend = open_backend(spec)
    backend.declare("layer", (6, 4), step=step)
    backend.program("layer", weights)
    np.testing.assert_array_equal(backend.weight_step("layer"), np.broadcast_to(step, step.shape))
    levels = symmetric_levels(weights, 4, scale=step)[0]
    np.testing.assert_allclose(backend.read("layer"), levels * step, rtol=1e-12, atol=0)


def test_the_float_ideal_backend_checks_and_ignores_a_step() -> None:
    backend = IdealBackend()
    weights = np.random.default_rng(1).normal(size=(3, 2))
    backend.declare("layer", (3, 2), step=np.array([[0.5]]))
    backend.program("layer", weights)
    np.testing.assert_array_equal(backend.read("layer"), weights)
    with pytest.raises(ValueError, match="step"):
        backend.declare("layer", (3, 2), step=np.array([[-0.5]]))


@pytest.mark.parametrize("spec", ["ideal://?bits=4", "pcm"])
def test_a_programmed_layer_keeps_its_step(spec: str) -> None:
    backend = open_backend(spec)
    backend.declare("layer", (3, 2))
    backend.program("layer", np.random.default_rng(2).normal(size=(3, 2)))
    held = backend.weight_step("layer")
    backend.declare("layer", (3, 2), step=held)  # the same step: fine (a resumed session)
    with pytest.raises(ValueError, match="already holds weights at another step"):
        backend.declare("layer", (3, 2), step=held * 2)
    np.testing.assert_array_equal(backend.weight_step("layer"), held)
    backend.reset()
    backend.declare("layer", (3, 2), step=held * 2)
    backend.program("layer", np.zeros((3, 2)))
    np.testing.assert_array_equal(backend.weight_step("layer"), held * 2)


def test_a_pcm_step_declared_before_a_checkpoint_survives_it() -> None:
    weights = np.random.default_rng(3).normal(size=(5, 4))
    step = np.array([[0.2]])
    first = PCMBackend(seed=1)
    first.declare("layer", (5, 4), step=step)
    copy = PCMBackend(seed=2)
    copy.load_state_dict(first.state_dict())
    for backend in (first, copy):
        backend.program("layer", weights)
    np.testing.assert_array_equal(copy.weight_step("layer"), step)
    np.testing.assert_array_equal(first.read("layer"), copy.read("layer"))


@pytest.mark.parametrize(
    "shape",
    [(3,), (3, 2, 1), (0, 2), (3, -1), (3.0, 2), (True, 2)],
)
def test_declare_refuses_bad_shapes(shape: tuple) -> None:
    for backend in (IdealBackend(), PCMBackend()):
        with pytest.raises(ValueError, match="shape"):
            backend.declare("layer", shape)
        assert backend.shapes == {}


# --- drift compensation ----------------------------------------------------------------------


def test_set_compensation_drops_the_cached_products() -> None:
    weights = np.random.default_rng(4).normal(size=(6, 5))
    inputs = np.random.default_rng(5).uniform(size=(3, 5))
    switched = PCMBackend(seed=1, output_noise=0.0, gdc=True)
    plain = PCMBackend(seed=1, output_noise=0.0, gdc=False)
    for backend in (switched, plain):
        backend.declare("layer", weights.shape)
        backend.program("layer", weights)
        backend.advance_time(1e5)
    compensated = switched.mvm("layer", inputs)  # cached with the GDC factor
    switched.set_compensation(False)
    assert not switched.gdc
    np.testing.assert_array_equal(switched.mvm("layer", inputs), plain.mvm("layer", inputs))
    np.testing.assert_array_equal(switched.read("layer"), plain.read("layer"))
    assert not np.allclose(compensated, plain.mvm("layer", inputs))
    switched.set_compensation(True)
    np.testing.assert_array_equal(switched.mvm("layer", inputs), compensated)


def test_capabilities_say_which_backends_compensate() -> None:
    assert open_backend("pcm").capabilities().compensation
    assert not open_backend("ideal").capabilities().compensation
    with pytest.raises(NotImplementedError, match="'ideal'"):
        open_backend("ideal").set_compensation(True)
    with pytest.raises(ValueError, match="compensation must be true or false"):
        open_backend("pcm").set_compensation(1)  # type: ignore[arg-type]


# --- plugins that fail to load ---------------------------------------------------------------


GOOD_PLUGIN = '''
from typing import Any

from hwloop.backends.ideal import IdealBackend


class Loose(IdealBackend):
    name = "loose"

    def __init__(self, gain: float = 1.0, **extra: Any) -> None:
        super().__init__()
        self.gain, self.extra = gain, extra


class Failing(IdealBackend):
    name = "failing"

    def __init__(self) -> None:
        raise RuntimeError("no board\\nconnected")
'''


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution whose hwloop.backends entry points are broken in every way,
    plus two that load (one of them cannot be opened with its defaults)."""
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[hwloop.backends]\n"
        "broken = no_such_module:Backend\n"
        "raising = hwloop_test_raising_plugin:Backend\n"
        "missing = hwloop_test_good_plugin:NoSuchClass\n"
        "notabackend = json:dumps\n"
        "loose = hwloop_test_good_plugin:Loose\n"
        "failing = hwloop_test_good_plugin:Failing\n"
    )
    (tmp_path / "hwloop_test_raising_plugin.py").write_text(
        'raise RuntimeError("driver missing\\nsecond line")\n'
    )
    (tmp_path / "hwloop_test_good_plugin.py").write_text(GOOD_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.usefixtures("plugins")
def test_broken_plugins_do_not_break_the_others() -> None:
    broken = broken_backends()
    assert set(broken) == {"broken", "raising", "missing", "notabackend"}
    assert {"ideal", "pcm", "loose", "failing"} <= set(available_backends())
    assert not set(broken) & set(available_backends())
    assert broken["broken"] == "ModuleNotFoundError: No module named 'no_such_module'"
    assert broken["raising"] == "RuntimeError: driver missing second line"
    assert broken["missing"].startswith("AttributeError: ")
    assert broken["notabackend"] == "json:dumps is not a Backend subclass"
    assert isinstance(open_backend("ideal://?bits=4"), IdealBackend)
    assert isinstance(open_backend("pcm://?seed=1"), PCMBackend)
    for name in broken:
        message = one_line_error(name)
        assert message == f"backend {name!r} is installed but broken: {broken[name]}"


@pytest.mark.usefixtures("plugins")
def test_plugin_options_are_typed_and_open_ended_where_declared() -> None:
    loose = open_backend("loose://?gain=2&anything=text")
    assert (loose.gain, loose.extra) == (2.0, {"anything": "text"})  # type: ignore[attr-defined]
    assert "gain" in one_line_error("loose://?gain=high")


@pytest.mark.usefixtures("plugins")
def test_backend_listing_shows_every_installed_backend() -> None:
    listing = backend_listing()
    names = [entry["name"] for entry in listing]
    assert names == sorted(names)
    assert {"broken", "raising", "missing", "notabackend", "loose", "failing", "ideal",
            "pcm"} <= set(names)
    by_name = {entry["name"]: entry for entry in listing}
    assert by_name["pcm"]["broken"] is None and by_name["pcm"]["compensation"] is True
    assert by_name["pcm"]["weight_format"] == "conductance_pair"
    assert by_name["ideal"]["broken"] is None and by_name["ideal"]["compensation"] is False
    assert by_name["broken"] == {"name": "broken", "broken": broken_backends()["broken"]}
    assert by_name["failing"]["broken"] == "RuntimeError: no board connected"
    assert all("\n" not in (entry["broken"] or "") for entry in listing)


def test_without_plugins_nothing_is_broken() -> None:
    assert broken_backends() == {}
    listing = backend_listing()
    assert {"ideal", "pcm"} <= {entry["name"] for entry in listing}
    assert all(entry["broken"] is None for entry in listing)

"""Trials that talk to one physical device run one at a time; simulators run in parallel."""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest

from hwloop.study import build_study, open_cluster
from hwloop.study.trial import _device_lock

BASE = {"task": "digits", "neuron": "lif", "epochs": 1, "hidden": [8]}


def hold(name: str | None, seconds: float) -> tuple[float, float]:
    """Hold the device lock ``name`` (None: none) for ``seconds``; returns (start, end)."""
    with _device_lock(name):
        start = time.time()
        time.sleep(seconds)
        return start, time.time()


def test_a_port_names_the_device_a_trial_locks() -> None:
    linked = build_study({
        "base": {**BASE, "backend": "spinnaker2", "bits": 8,
                 "backend_options": {"port": "socket://127.0.0.1:7000"}},
        "grid": {"training": ["in-the-loop", "float"]},
        "evaluate": {"drift": ["0"], "device_seeds": 1},
    })
    assert {trial.device_lock for trial in linked.trials} == {
        "hwloop-device-spinnaker2-socket://127.0.0.1:7000"}  # deployment uses the port too
    simulated = build_study({"base": {**BASE, "backend": "pcm"}, "grid": {"bits": [2, 4]}})
    assert {trial.device_lock for trial in simulated.trials} == {None}


@pytest.mark.deadline(90)
def test_trials_on_one_device_never_overlap_on_a_real_cluster() -> None:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    cluster = open_cluster(2, None, 1)
    try:
        client = cluster.client
        client.wait_for_workers(2, timeout=30)
        locked = client.gather([client.submit(hold, "hwloop-device-test", 0.5, pure=False)
                                for _ in range(4)])
        free = client.gather([client.submit(hold, None, 1.0, pure=False) for _ in range(2)])
    finally:
        cluster.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    spans = sorted(locked)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    (start_a, end_a), (start_b, end_b) = free
    assert start_a < end_b and start_b < end_a  # two workers: the unlocked ones overlap


def test_the_dashboard_without_bokeh_is_refused_in_one_line(monkeypatch) -> None:
    from hwloop.errors import UserError
    from hwloop.study.runner import check_cluster_options

    monkeypatch.setitem(sys.modules, "bokeh", None)  # import bokeh now raises ImportError
    with pytest.raises(UserError, match=r"--dashboard needs bokeh: pip install 'bokeh>=3.1'"):
        check_cluster_options(1, None, 1, dashboard=True)
    check_cluster_options(1, None, 1, dashboard=False)

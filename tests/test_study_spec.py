"""Study files: parsing, overrides, grid expansion, trial sharing, seeds, refusals; the study
store (atomic trials, locking, same-plan rule); and the CLI's refusals before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwloop.cli import main
from hwloop.errors import UserError
from hwloop.seeds import derive_seed
from hwloop.study import StudyStore, build_study, load_study, read_study
from hwloop.study.spec import check_trials
from hwloop.study.trial import figures_of, run_trial

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pcm_4bit_drift.toml"

BASE = {"task": "digits", "neuron": "lif", "learner": "hypr", "lam": 5, "epochs": 1,
        "hidden": [8], "backend": "pcm", "scheme": "mixed"}


def small(grid: dict | None = None, **tables: dict) -> dict:
    """A study document with tiny trainings."""
    document = {"study": {"replicates": 2}, "base": dict(BASE),
                "grid": grid if grid is not None else {"training": ["float", "qat",
                                                                    "in-the-loop"],
                                                       "bits": [2, 4]},
                "evaluate": {"drift": ["0", "1d"], "device_seeds": 1}}
    for name, table in tables.items():
        document[name] = {**document.get(name, {}), **table}
    return document


def test_example_expands_to_shared_float_trainings() -> None:
    study = load_study(EXAMPLE)
    assert len(study.points) == 3 * 3 * 3  # training × bits × replicates
    kinds = [trial.training for trial in study.trials]
    # a float training serves all three bit widths: one per replicate
    assert kinds.count("float") == 3 and kinds.count("qat") == 9
    assert kinds.count("in-the-loop") == 9
    float_trial = next(t for t in study.trials if t.training == "float")
    assert [e.settings["bits"] for e in float_trial.evaluations] == [2, 3, 4]
    assert float_trial.config["backend"] == "none" and float_trial.config["bits"] is None
    qat = next(t for t in study.trials if t.training == "qat")
    assert qat.config["backend"] == "ideal" and qat.config["bits"] == 2
    assert qat.evaluations[0].settings["backend"] == "pcm"
    loop = next(t for t in study.trials if t.training == "in-the-loop")
    assert loop.config["backend"] == "pcm" and loop.evaluations[0].settings["backend"] is None
    assert len({t.id for t in study.trials}) == len(study.trials)


def test_replicate_seeds_pair_points_and_ids_are_stable() -> None:
    study = build_study(small())
    for trial in study.trials:
        replicate = trial.key["replicate"]
        assert trial.config["seed"] == derive_seed(0, "replicate", replicate)
    again = build_study(small())
    assert [t.id for t in again.trials] == [t.id for t in study.trials]
    other_seed = build_study(small(study={"seed": 1, "replicates": 2}))
    assert {t.id for t in other_seed.trials}.isdisjoint({t.id for t in study.trials})


def test_drift_and_gdc_axes_share_one_evaluation() -> None:
    document = small({"bits": [4], "evaluate.drift": ["0", "1d", "1mo"],
                      "evaluate.gdc": ["on", "off"]})
    study = build_study(document, name="d")  # the axis wins over [evaluate] drift
    assert len(study.trials) == 2  # replicates; drift and gdc add no training
    (evaluation,) = study.trials[0].evaluations
    assert evaluation.settings["drift"] == ["0", "1d", "1mo"]
    assert evaluation.settings["gdc"] == "both" and len(evaluation.points) == 6


def test_device_seed_axis_adds_evaluations_not_trainings() -> None:
    study = build_study(small({"bits": [4], "evaluate.device_seeds": [1, 2]}))
    assert len(study.trials) == 2
    assert [e.settings["device_seeds"] for e in study.trials[0].evaluations] == [1, 2]


def test_overrides_reach_every_table() -> None:
    study = build_study(small(), ["epochs=2", "study.replicates=1", "grid.bits=[3]",
                                  'evaluate.drift=["0"]', "backend_options.drift_scale=0.5"])
    assert study.settings.replicates == 1 and study.axes["bits"] == [3]
    assert all(t.config["epochs"] == 2 for t in study.trials)
    loop = next(t for t in study.trials if t.training == "in-the-loop")
    assert loop.config["backend_options"] == {"drift_scale": 0.5}
    deploy = next(t for t in study.trials if t.training == "float")
    assert deploy.config["backend_options"] == {}
    assert deploy.evaluations[0].settings["backend_options"] == {"drift_scale": 0.5}
    assert deploy.evaluations[0].settings["drift"] == ["0"]


@pytest.mark.parametrize("document, overrides, message", [
    (small({"bitz": [2]}), [], "grid axis 'bitz' is not a config key"),
    (small({"bits": []}), [], "grid axis 'bits' is empty"),
    (small({"bits": 4}), [], "must be a list of values"),
    (small({"bits": [2, 2]}), [], "lists a value twice"),
    (small({}), [], "[grid] names no axes"),
    (small({"training": ["deploy"]}), [], "'deploy' is not known"),
    (small({"bits": ["four"]}), [], "bits"),
    (small({"bits": [4]}, base={"seed": 3}), [], "[base] seed"),
    (small({"bits": [4]}, base={"epochz": 3}), [], "unknown config key 'epochz'"),
    (small({"bits": [4]}, study={"replicates": 0}), [], "replicates must be an integer"),
    (small({"bits": [4]}, study={"replicates": "3"}), [], "replicates must be an integer"),
    (small({"bits": [4]}, study={"colour": 1}), [], "unknown [study] key 'colour'"),
    (small({"bits": [4]}, evaluate={"drift": ["soon"]}), [], "is not a duration"),
    (small({"bits": [4]}, evaluate={"gdc": "maybe"}), [], "evaluate gdc 'maybe'"),
    (small({"bits": [4]}, evaluate={"device_seeds": 0}), [], "device_seeds"),
    (small({"bits": [4]}, evaluate={"when": 1}), [], "unknown [evaluate] key 'when'"),
    ({**small({"bits": [4]}), "extra": {}}, [], "unknown table 'extra'"),
    (small({"training": ["qat"]}), [], "training qat needs bits"),
    (small({"training": ["in-the-loop"]}, base={"backend": "none", "scheme": "direct"}), [],
     "training in-the-loop needs a device"),
    (small({"bits": [4]}), ["grid.bits=[]"], "grid axis 'bits' is empty"),
    (small({"bits": [4]}), ["epochs"], "must look like key=value"),
])
def test_bad_studies_are_refused_in_one_line(document: dict, overrides: list[str],
                                              message: str) -> None:
    with pytest.raises(UserError) as caught:
        build_study(document, overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_check_trials_refuses_configs_that_cannot_run() -> None:
    check_trials(build_study(small({"bits": [4]})))  # a good one passes
    with pytest.raises(UserError, match="lr must be a positive number"):
        check_trials(build_study(small({"lr": [0.01, -1.0]})))
    with pytest.raises(UserError, match="deployment device"):
        check_trials(build_study(small({"training": ["float"], "bits": [4]},
                                       base={"backend_options": {"g_max": -3.0}})))


def _trial_result(study, index: int = 0) -> tuple[str, dict]:
    trial = study.trials[index]
    return trial.id, run_trial({**trial.to_dict(), "threads": 1})


def test_store_keeps_trials_whole_and_refuses_another_plan(tmp_path: Path) -> None:
    study = build_study(small({"training": ["in-the-loop"], "bits": [4]}))
    store = StudyStore(tmp_path / "s", study)
    assert store.check() is None and not (tmp_path / "s").exists()
    store.open()
    trial_id, result = _trial_result(study)
    store.save_done(trial_id, result, attempts=1)
    store.save_failed(study.trials[1].id, "RuntimeError: boom", attempts=3)
    # a second process cannot open it while the first holds it
    with pytest.raises(UserError, match="in use by another hwloop process"):
        StudyStore(tmp_path / "s", study).open()
    store.close()
    state = read_study(tmp_path / "s")
    assert state.status(trial_id) == "done" and state.status(study.trials[1].id) == "failed"
    assert state.failed[study.trials[1].id]["error"] == "RuntimeError: boom"
    folder = tmp_path / "s" / "trials" / trial_id
    assert sorted(p.name for p in folder.iterdir()) == ["curves.png", "curves.svg",
                                                        "result.json", "run.h5"]
    assert not list((tmp_path / "s" / "trials").glob(".*"))
    assert figures_of(state.results[trial_id]) == figures_of(json.loads(json.dumps(
        result["metrics"])))
    other = build_study(small({"training": ["in-the-loop"], "bits": [4]}), ["epochs=2"])
    with pytest.raises(UserError, match=r"holds a different study \(base.epochs: stored 1, "
                                        r"now 2\)"):
        StudyStore(tmp_path / "s", other).check()
    # the same plan continues: finished trials are kept, the failed one is pending again
    reopened = StudyStore(tmp_path / "s", study)
    state = reopened.open()
    assert set(state.results) == {trial_id}
    reopened.close()


def test_store_drops_half_written_and_damaged_trials(tmp_path: Path) -> None:
    study = build_study(small({"training": ["in-the-loop"], "bits": [4]}))
    store = StudyStore(tmp_path / "s", study)
    store.open()
    trial_id, result = _trial_result(study)
    store.save_done(trial_id, result, attempts=1)
    store.close()
    trials = tmp_path / "s" / "trials"
    (trials / f".{study.trials[1].id}.tmp-dead").mkdir()  # a driver killed mid-write
    (trials / trial_id / "result.json").write_text("{ not json")
    state = read_study(tmp_path / "s")
    assert state.damaged == [trial_id] and state.status(trial_id) == "pending"
    state = StudyStore(tmp_path / "s", study).open()
    assert state.results == {} and sorted(p.name for p in trials.iterdir()) == []


def test_a_trial_result_depends_only_on_its_plan() -> None:
    import torch

    study = build_study(small({"training": ["qat"], "bits": [3]}, study={"replicates": 1}))
    torch.set_num_threads(2)
    _, first = _trial_result(study)  # runs with [study] threads = 1 ...
    assert first["metrics"]["torch_threads"] == 1
    assert torch.get_num_threads() == 2  # ... and gives the caller's count back
    _, second = _trial_result(study)
    assert figures_of(first["metrics"]) == figures_of(second["metrics"])
    evaluation = first["metrics"]["evaluations"][0]
    assert {row["drift"] for row in evaluation["rows"]} == {"0", "1d"}
    assert evaluation["writes"] and all(w["write_error"] >= 0 for w in evaluation["writes"])


def _tree(path: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("arguments, message", [
    (["grid.bitz=[2]"], "grid axis 'bitz' is not a config key"),
    (["grid.bits=[]"], "grid axis 'bits' is empty"),
    (["study.replicates=x"], "replicates must be an integer"),
    (["lr=-1"], "lr must be a positive number"),
    (["--workers", "64"], "exceeds the"),
    (["--workers", "1", "--scheduler", "tcp://127.0.0.1:1"], "give one of them"),
    (["--scheduler", "not an address"], "is not an address"),
    (["epochs=2"], "holds a different study (base.epochs: stored 1, now 2)"),
])
def test_cli_refuses_bad_input_and_leaves_the_study_alone(tmp_path: Path, arguments: list[str],
                                                         message: str) -> None:
    study_file = tmp_path / "s.toml"
    study_file.write_text(EXAMPLE.read_text())
    out = tmp_path / "out"
    study = load_study(study_file, ["epochs=1", "study.replicates=1"])
    store = StudyStore(out, study)
    store.open()
    store.save_failed(study.trials[0].id, "ValueError: x", attempts=1)
    store.close()
    before = _tree(out)
    overrides = {"epochs": "epochs=1", "study.replicates": "study.replicates=1"}
    overrides |= {a.partition("=")[0]: a for a in arguments if "=" in a and "--" not in a}
    options = [a for a in arguments if a not in overrides.values()]
    result = CliRunner().invoke(main, ["study", "run", str(study_file), "--out", str(out),
                                       *overrides.values(), *options])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1
    assert _tree(out) == before


@pytest.mark.parametrize("content, message", [
    ("[grid\nbits = [2]", "is not valid TOML"),
    ("[base]\ntask = \"cue\"\n", "[grid] names no axes"),
    ("[grid]\nbits = [2]\n[base]\nneuron = \"nope\"\nbackend = \"pcm\"\n", "nope"),
])
def test_cli_refuses_bad_files_without_creating_out(tmp_path: Path, content: str,
                                                    message: str) -> None:
    study_file = tmp_path / "bad.toml"
    study_file.write_text(content)
    result = CliRunner().invoke(main, ["study", "run", str(study_file), "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()
    missing = CliRunner().invoke(main, ["study", "run", str(tmp_path / "none.toml"), "--out",
                                        str(tmp_path / "out")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_cli_dry_run_lists_trials_and_writes_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["study", "run", str(EXAMPLE), "--out",
                                       str(tmp_path / "out"), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.output)
    assert outcome["trials"] == 21 and outcome["points"] == 27
    assert len(outcome["to_run"]) == 21 and not (tmp_path / "out").exists()


def test_show_and_report_refuse_what_is_not_a_study(tmp_path: Path) -> None:
    for command in ("show", "report"):
        result = CliRunner().invoke(main, ["study", command, str(tmp_path)])
        assert result.exit_code == 2 and "is not a hwloop study" in result.output


@pytest.mark.deadline(120)
def test_cli_runs_a_study_and_a_rerun_skips_it(tmp_path: Path) -> None:
    """The real command on a 1-worker local cluster, then again: nothing is recomputed."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hwloop.cli", "study", "run", str(EXAMPLE), "--out",
               str(out), "epochs=1", "hidden=[8]", "study.replicates=1", "grid.bits=[4]",
               'grid.training=["float","in-the-loop"]', 'evaluate.drift=["0"]',
               "evaluate.device_seeds=1", "--workers", "1", "--json"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=110,
                           env={**os.environ, "PYTHONPATH": str(EXAMPLE.parents[1])})
    assert first.returncode == 0, first.stderr
    outcome = json.loads(first.stdout)
    assert (outcome["done"], outcome["skipped"], outcome["failed"]) == (2, 0, 0)
    assert outcome["layout"]["workers"] == 1 and outcome["layout"]["torch_threads"] == 1
    before = _tree(out / "trials")
    second = subprocess.run(command, capture_output=True, text=True, timeout=110)
    assert second.returncode == 0, second.stderr
    assert (json.loads(second.stdout)["done"], json.loads(second.stdout)["skipped"]) == (0, 2)
    assert _tree(out / "trials") == before
    shown = CliRunner().invoke(main, ["study", "show", str(out), "--json"])
    assert shown.exit_code == 0
    status = json.loads(shown.output)
    assert status["counts"] == {"done": 2, "failed": 0, "pending": 0}
    assert len(status["sessions"]) == 2 and status["sessions"][1]["skipped"] == 2


def test_qat_trains_with_the_weight_range_of_its_deployment_device() -> None:
    study = build_study(small({"training": ["qat"], "bits": [2]}),
                        ["backend_options.range_factor=1.5", "backend_options.drift_scale=2.0"])
    (trial, *_) = study.trials
    assert trial.config["backend"] == "ideal"
    assert trial.config["backend_options"] == {"range_factor": 1.5}
    assert trial.evaluations[0].settings["backend_options"] == {"range_factor": 1.5,
                                                                "drift_scale": 2.0}


def test_losing_the_race_for_a_new_directory_never_deletes_the_winners(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwloop.rundir import LOCK_FILE, RunDirectory

    target = tmp_path / "new" / "study"
    winner, loser = RunDirectory(target), RunDirectory(target)
    original = Path.mkdir
    raced: list[bool] = []

    def mkdir_after_the_winner(self: Path, *args, **kwargs) -> None:
        if not raced and self == tmp_path / "new":  # the loser saw nothing, then lost
            raced.append(True)
            winner.acquire()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir_after_the_winner)
    with pytest.raises(UserError, match="in use by another hwloop process"):
        loser.acquire()
    assert raced and (target / LOCK_FILE).exists() and winner.created == tmp_path / "new"
    with pytest.raises(UserError, match="in use by another hwloop process"):
        loser.check_free()
    winner.release()
    loser.check_free()  # free again


def test_a_full_disk_stops_the_study_in_one_line_and_keeps_what_finished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from hwloop.errors import RunError
    from hwloop.study import store as store_module

    study = build_study(small({"training": ["in-the-loop"], "bits": [4]}))
    store = StudyStore(tmp_path / "s", study)
    store.open()
    first_id, first = _trial_result(study, 0)
    store.save_done(first_id, first, attempts=1)
    second_id, second = _trial_result(study, 1)

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "_write_durably", full)
    with pytest.raises(RunError) as caught:
        store.save_done(second_id, second, attempts=1)
    store.close()
    message = str(caught.value)
    assert f"cannot store trial {second_id}" in message and "No space left" in message
    assert "its 1 finished trials are kept" in message and "\n" not in message
    assert sorted(p.name for p in (tmp_path / "s" / "trials").iterdir()) == [first_id]
    assert set(read_study(tmp_path / "s").results) == {first_id}

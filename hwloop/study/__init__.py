"""Device-noise robustness studies: grids of trainings and evaluations on Dask (docs/studies.md).

    from hwloop.study import load_study, open_cluster, run_study, StudyStore

    study = load_study("examples/pcm_4bit_drift.toml", ["study.replicates=1"])
    store = StudyStore("studies/x", study)
    ...

``hwloop study run|show|report`` (hwloop.study.commands) is the command line.
"""

from hwloop.study.runner import Cluster, ThreadLayout, open_cluster, run_study
from hwloop.study.spec import Study, Trial, build_study, check_trials, load_study
from hwloop.study.store import StudyState, StudyStore, read_study

__all__ = [
    "Cluster",
    "Study",
    "StudyState",
    "StudyStore",
    "ThreadLayout",
    "Trial",
    "build_study",
    "check_trials",
    "load_study",
    "open_cluster",
    "read_study",
    "run_study",
]

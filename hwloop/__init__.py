"""hwloop: train spiking neural networks with the neuromorphic device in the loop.

The names a user needs are here (docs/api.md shows them at work)::

    import hwloop

    config = hwloop.build_config(task="cue", epochs=5, backend="pcm", bits=4, scheme="mixed")
    run = hwloop.train(config, "runs/demo")              # a run directory with run.h5
    result = hwloop.evaluate(run, drift="0,1h,1d", device_seeds=5, gdc="both")
"""

from hwloop.threads import set_openmp_defaults

set_openmp_defaults()  # before anything imports torch: OpenMP reads them then

from hwloop import _lava_compat  # noqa: E402

__version__ = "0.1.0"

_lava_compat.install()

from hwloop.backends import (  # noqa: E402
    Backend,
    Capabilities,
    WriteReport,
    available_backends,
    open_backend,
)
from hwloop.config import TrainConfig, build_config  # noqa: E402
from hwloop.errors import RunError, UserError  # noqa: E402
from hwloop.evaluation import Evaluation, EvalRow, evaluate, save_evaluation  # noqa: E402
from hwloop.learning.network import SpikingNetwork  # noqa: E402
from hwloop.learning.streaming import StreamingHYPR  # noqa: E402
from hwloop.runs import RunRecord, compare_runs, find_runs, read_run, rebuild_network  # noqa: E402
from hwloop.seeds import derive_seed  # noqa: E402
from hwloop.session import HILSession, open_session_backend  # noqa: E402
from hwloop.tasks import Task, make_task  # noqa: E402
from hwloop.trainer import EpochMetrics, StepMetrics, Trainer, evaluate_network  # noqa: E402
from hwloop.training import TrainingCallbacks, plan_training, resume, train  # noqa: E402

__all__ = [
    "Backend",
    "Capabilities",
    "EpochMetrics",
    "EvalRow",
    "Evaluation",
    "HILSession",
    "RunError",
    "RunRecord",
    "SpikingNetwork",
    "StepMetrics",
    "StreamingHYPR",
    "Task",
    "TrainConfig",
    "Trainer",
    "TrainingCallbacks",
    "UserError",
    "WriteReport",
    "available_backends",
    "build_config",
    "compare_runs",
    "derive_seed",
    "evaluate",
    "evaluate_network",
    "find_runs",
    "make_task",
    "open_backend",
    "open_session_backend",
    "plan_training",
    "read_run",
    "rebuild_network",
    "resume",
    "save_evaluation",
    "train",
]

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# "ci" (the default) runs the same examples every time, so a run's outcome does not depend on
# luck; "explore" draws fresh examples each run and keeps failures in .hypothesis/ to replay.
# Pick one with HYPOTHESIS_PROFILE=...; tests' own @settings override these keys.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked ``@pytest.mark.deadline(seconds)`` (or a module with that ``pytestmark``)
    fails with TimeoutError instead of hanging past ``seconds`` (SIGALRM)."""
    marker = request.node.get_closest_marker("deadline")
    if marker is None:
        yield
        return
    seconds = int(marker.args[0])

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"test exceeded {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

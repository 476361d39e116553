import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# "ci" (the default) runs the same examples every time, so a run's outcome does not depend on
# luck; "explore" draws fresh examples each run and keeps failures in .hypothesis/ to replay.
# Pick one with HYPOTHESIS_PROFILE=...; tests' own @settings override these keys.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

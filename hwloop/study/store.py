"""The study directory: the plan, one run directory per finished trial, and an index.

Layout::

    DIR/study.json              the study as validated (format, version, source, plan); written
                                once, when the directory is created
    DIR/index.json              failed trials with their errors and attempts, and one entry per
                                ``study run`` session (thread layout, cluster, times)
    DIR/trials/<id>/            the trial's run directory (run.h5, curves.png/.svg) ...
    DIR/trials/<id>/result.json ... and its figures; a trial is finished when this file exists
    DIR/report/                 what ``hwloop study report`` writes
    DIR/.hwloop.lock            held (flock) by the process running the study

Only the driver writes here. A finished trial is first written to a temporary folder beside
its place (``trials/.<id>.tmp-…``) and then renamed into place, so a trial directory is always
whole; ``index.json`` is replaced atomically. The files of finished trials are the truth; the
index is rebuilt from them if a driver died between the two writes. A second process that
tries to run the same study directory is refused (the lock), and a study directory is only
ever continued with the very same plan.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwloop.atomic import TEMPORARY_MARK, atomic_write
from hwloop.errors import RunError, UserError
from hwloop.jsonout import dumps
from hwloop.rundir import LOCK_FILE, RunDirectory
from hwloop.runs import now_iso
from hwloop.study.spec import Study

FORMAT = "hwloop-study"
FORMAT_VERSION = 1
PLAN_FILE = "study.json"
INDEX_FILE = "index.json"
TRIALS_FOLDER = "trials"
RESULT_FILE = "result.json"


@dataclass
class StudyState:
    """A study directory read back.

    Attributes:
        directory: the study directory.
        source, created: the study file it was first run from, and when (ISO 8601, UTC).
        plan: ``Study.plan()`` as stored (document, settings, axes, trials).
        results: figures of finished trials by trial id (``result.json``).
        failed: by trial id: ``{"error": one line, "attempts": n}`` of trials that failed in the
            latest session that ran them.
        sessions: one entry per ``study run`` (layout, started, finished, counts).
        damaged: trial ids whose result.json could not be read (they count as pending).
    """

    directory: Path
    plan: dict[str, Any]
    source: str = ""
    created: str = ""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)

    @property
    def trial_ids(self) -> list[str]:
        return [trial["id"] for trial in self.plan["trials"]]

    def status(self, trial_id: str) -> str:
        """``done``, ``failed`` or ``pending``."""
        if trial_id in self.results:
            return "done"
        return "failed" if trial_id in self.failed else "pending"


def read_study(directory: str | Path) -> StudyState:
    """Read a study directory (UserError if it is not one)."""
    directory = Path(directory)
    plan_path = directory / PLAN_FILE
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory; give the --out of a hwloop study run")
    if not plan_path.is_file():
        raise UserError(f"{directory} holds no {PLAN_FILE}, so it is not a hwloop study; give "
                        "the --out of a hwloop study run")
    stored = _read_json(plan_path)
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        raise UserError(f"{plan_path} is not a hwloop study file")
    if stored.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{plan_path} has format version {stored.get('format_version')}; this "
                        f"hwloop reads version {FORMAT_VERSION}")
    state = StudyState(directory=directory, plan=stored["plan"],
                       source=str(stored.get("source", "")), created=str(stored.get("created", "")))
    for trial_id in state.trial_ids:
        path = directory / TRIALS_FOLDER / trial_id / RESULT_FILE
        if path.is_file():
            try:
                state.results[trial_id] = _read_json(path)
            except UserError:
                state.damaged.append(trial_id)
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        try:
            index = _read_json(index_path)
            state.failed = {k: v for k, v in index.get("failed", {}).items()
                            if k not in state.results}
            state.sessions = list(index.get("sessions", []))
        except (UserError, AttributeError):
            pass  # the index is rebuilt from the trial folders at the next run
    return state


class StudyStore:
    """A study directory opened for running: created if new, locked, checked against the plan.

    Call ``check`` (writes nothing) before starting any work, ``open`` to create and lock.
    """

    def __init__(self, directory: str | Path, study: Study) -> None:
        self.run_directory = RunDirectory(directory)
        self.directory = self.run_directory.path
        self.study = study
        self.plan = json.loads(dumps(study.plan()))
        self.state: StudyState | None = None

    def check(self) -> StudyState | None:
        """Refuse a directory that cannot hold this study (UserError); writes nothing.
        Returns the stored state when the directory already holds this study."""
        self.run_directory.check()
        if not self.directory.exists():
            return None
        if not self.directory.is_dir():
            raise UserError(f"--out {self.directory} is a file; choose a directory")
        if not (self.directory / PLAN_FILE).exists():
            if any(p.name != LOCK_FILE for p in self.directory.iterdir()):
                raise UserError(f"--out {self.directory} is not empty and holds no study; "
                                "choose a new or empty directory")
            return None
        self.run_directory.check_free()
        state = read_study(self.directory)
        if state.plan != self.plan:
            difference = _difference(state.plan, self.plan)
            raise UserError(f"{self.directory} holds a different study ({difference}); choose "
                            "another --out, or run it with its own study file and overrides")
        return state

    def open(self) -> StudyState:
        """Create (if new) and lock the directory; returns the state to continue from."""
        self.run_directory.acquire()
        try:
            state = self.check()
            if state is None:
                atomic_write(self.directory / PLAN_FILE, (dumps({
                    "format": FORMAT, "format_version": FORMAT_VERSION, "created": now_iso(),
                    "source": self.study.source, "plan": self.plan,
                }, indent=1) + "\n").encode())
                state = read_study(self.directory)
            trials = self.directory / TRIALS_FOLDER
            trials.mkdir(exist_ok=True)
            for stale in trials.glob(f".*{TEMPORARY_MARK}*"):
                shutil.rmtree(stale, ignore_errors=True)
            for trial_id in state.damaged:
                shutil.rmtree(trials / trial_id, ignore_errors=True)
            state.damaged = []
        except BaseException:
            self.run_directory.release()
            raise
        self.state = state
        return state

    def close(self) -> None:
        """Unlock the directory."""
        self.run_directory.release()

    def save_done(self, trial_id: str, result: dict[str, Any], attempts: int) -> None:
        """Write a finished trial's files and figures into place, then the index."""
        assert self.state is not None
        place = self.directory / TRIALS_FOLDER / trial_id
        temporary = place.with_name(f".{trial_id}{TEMPORARY_MARK}{secrets.token_hex(4)}")
        metrics = {**result["metrics"], "status": "done", "attempts": attempts}
        files = {**result["files"], RESULT_FILE: (dumps(metrics, indent=1) + "\n").encode()}
        try:
            for relative, data in files.items():
                if Path(relative).is_absolute() or ".." in Path(relative).parts:
                    raise RunError(f"trial {trial_id} returned a file outside its folder")
                _write_durably(temporary / relative, data)
            if place.exists():  # a folder without result.json (damaged): replaced
                shutil.rmtree(place)
            os.replace(temporary, place)
        except OSError as error:
            raise RunError(f"cannot store trial {trial_id} in {self.directory} "
                           f"({error.strerror or error}); its {len(self.state.results)} finished "
                           "trials are kept: free some space (or fix the cause) and run the "
                           "same command to continue") from None
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)
        self.state.results[trial_id] = json.loads(dumps(metrics))
        self.state.failed.pop(trial_id, None)
        self._write_index()

    def save_failed(self, trial_id: str, error: str, attempts: int) -> None:
        """Record that a trial failed for good (the rest of the study goes on)."""
        assert self.state is not None
        self.state.failed[trial_id] = {"error": error, "attempts": attempts, "when": now_iso()}
        self._write_index()

    def add_session(self, session: dict[str, Any]) -> int:
        """Record a ``study run`` session (its layout); returns its index."""
        assert self.state is not None
        self.state.sessions.append(session)
        self._write_index()
        return len(self.state.sessions) - 1

    def update_session(self, number: int, **values: Any) -> None:
        assert self.state is not None
        self.state.sessions[number].update(values)
        self._write_index()

    def _write_index(self) -> None:
        assert self.state is not None
        index = {"format": FORMAT, "format_version": FORMAT_VERSION,
                 "done": sorted(self.state.results), "failed": self.state.failed,
                 "sessions": self.state.sessions}
        atomic_write(self.directory / INDEX_FILE, (dumps(index, indent=1) + "\n").encode())


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` (parents created) and flush it to the disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} cannot be read ({error})") from None


def _difference(stored: Any, new: Any, where: str = "") -> str:
    """The first place where two plans differ, for people (``document.base.epochs: 1 → 2``)."""
    if isinstance(stored, dict) and isinstance(new, dict):
        for key in list(stored) + [k for k in new if k not in stored]:
            if stored.get(key) != new.get(key):
                return _difference(stored.get(key), new.get(key), f"{where}.{key}".lstrip("."))
    if where.startswith("trials") or where == "":
        return "its trials differ"
    return f"{where.removeprefix('document.')}: stored {_short(stored)}, now {_short(new)}"


def _short(value: Any) -> str:
    text = "(not set)" if value is None else dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."

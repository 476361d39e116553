"""The Python examples in the docs run as written.

Every ```python block of a page below runs, in order, in one namespace per page, in an empty
working directory (so examples that write run directories write them there).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES_WITH_EXAMPLES = ["getting_started.md", "streaming.md", "api.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: str) -> list[str]:
    return BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES)
def test_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(page)
    assert blocks, f"docs/{page} has no python examples"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page}"}
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"docs/{page} (example {number})", "exec")
        exec(code, namespace)  # noqa: S102 - the examples are the project's own docs


def test_every_public_object_has_a_docstring() -> None:
    import inspect

    import hwloop

    missing = []
    for name in hwloop.__all__:
        exported = getattr(hwloop, name)
        if not (exported.__doc__ or "").strip():
            missing.append(name)
        if not inspect.isclass(exported):
            continue
        for attribute in dir(exported):
            member = inspect.getattr_static(exported, attribute)
            if attribute.startswith("_") or not (callable(member) or isinstance(member, property)):
                continue
            function = member.fget if isinstance(member, property) else member
            if not (inspect.getdoc(getattr(exported, attribute)) or function.__doc__ or ""):
                missing.append(f"{name}.{attribute}")
    assert missing == []


def test_the_learners_do_not_depend_on_the_training_loop_or_the_session() -> None:
    """Layering: hwloop.learning (networks, learners) sits below the session and the trainer."""
    import ast

    above = ("hwloop.session", "hwloop.trainer", "hwloop.training", "hwloop.runs", "hwloop.cli")
    for path in (DOCS.parent / "hwloop" / "learning").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith(above)], f"{path.name} imports {names}"

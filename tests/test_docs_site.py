"""The documentation site builds with warnings as errors, and every public module has an API page."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _public_modules() -> list[str]:
    import meta
    import mtl

    names = []
    for package in (mtl, meta):
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            parts = info.name.split(".")
            if info.ispkg or any(p.startswith("_") for p in parts) or parts[-1].startswith("cli"):
                continue
            names.append(info.name)
    return sorted(names)


def test_every_public_module_has_an_api_page():
    documented = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        documented.update(re.findall(r"^::: ([\w.]+)\s*$", page.read_text(encoding="utf-8"), flags=re.M))
    missing = [m for m in _public_modules() if m not in documented]
    assert not missing, f"modules without an API page under docs/api/: {missing}"


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is in the 'test' extra: pip install -e '.[test]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = (tmp_path / "site" / "api" / "backbones" / "index.html").read_text(encoding="utf-8")
    assert "create_backbone" in html  # the API reference was generated from the docstrings


def test_readme_cli_lines_parse():
    """Every complete ``mtlmeta ...`` line of the README is accepted by the parser."""
    import shlex

    from mtl.cli import build_parser

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line.split("#")[0].strip() for line in readme.splitlines() if line.startswith("mtlmeta ")]
    lines = [line for line in lines if "..." not in line]
    assert len(lines) >= 8
    parser = build_parser()
    for line in lines:
        argv = shlex.split(line)[1:]
        while argv and argv[0] == "--import":
            argv = argv[2:]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"README command does not parse: {line}") from exc


def test_readme_library_example_runs():
    """The README's ten-line example, with a tiny budget and fewer test tasks, runs as written."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Library in ten lines", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    shrunk = block.replace("Budget(seconds=60)", "Budget(iterations=2)").replace("num_tasks=600", "num_tasks=4")
    assert shrunk != block and "Budget(iterations=2)" in shrunk and "num_tasks=4" in shrunk
    shrunk = shrunk.replace("MetaTrainerConfig()", "MetaTrainerConfig(progress=False)")
    namespace: dict = {}
    exec(compile(shrunk, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert callable(namespace["predict"])

"""``mtl`` is the base layer: it never imports ``meta``."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_source_file_of_mtl_imports_meta():
    pattern = re.compile(r"^\s*(from\s+meta(\.|\s)|import\s+meta(\.|\s|$))", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "mtl").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_importing_mtl_loads_no_meta_module():
    code = (
        "import sys, mtl, mtl.data, mtl.utils, mtl.backbones\n"
        "bad = [m for m in sys.modules if m == 'meta' or m.startswith('meta.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""The DANN tutorial runs end to end with --smoke and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_example_dann_smoke(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "dann.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "proxy A-distance" in proc.stdout and "DANN recovers" in proc.stdout
    metrics = json.loads((out / "results.json").read_text())
    assert set(metrics) == {"source-only", "dann", "adda", "target-supervised"}
    assert all(0 <= m["a_distance"] <= 2 for m in metrics.values())
    assert (out / "features.png").stat().st_size > 1000

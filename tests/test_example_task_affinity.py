"""The task-affinity tutorial runs end to end with --smoke and writes what it says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_task_affinity_example_smoke(tmp_path):
    out = tmp_path / "aff"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "task_affinity.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert "TAG top pairs:" in text and "Transfer top pairs:" in text
    assert "TAG best split into 2 groups:" in text
    for name in ("tag.png", "transfer.png", "result.json"):
        assert (out / name).stat().st_size > 0
    result = json.loads((out / "result.json").read_text())
    assert result["tag"]["task_names"] == ["t1", "t2", "t3", "t4"]
    assert len(result["transfer"]["gain"]) == 4
    flat = sorted(t for g in result["best_split"]["groups"] for t in g)
    assert flat == ["t1", "t2", "t3", "t4"] and len(result["best_split"]["groups"]) == 2
    assert sorted(result["groups"]["metrics"]) == flat == sorted(result["one_network"]["metrics"])

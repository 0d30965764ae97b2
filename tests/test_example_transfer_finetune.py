"""The transfer tutorial runs end to end with --smoke and reports what it did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_example_runs_with_smoke(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "transfer_finetune.py"), "--smoke", "--out",
                           str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "21 restored" in proc.stdout and "9 not selected" in proc.stdout
    assert "5. advice:" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert all(n.startswith("features.block") and n.split(".")[1] in {"block1", "block2", "block3"}
               for n in summary["restore"]["matched"])
    assert set(summary["accuracy"]) == {"partial:block4 (restored blocks 1-3)", "linear_probe", "full"}
    assert all(0.0 <= a <= 1.0 for a in summary["accuracy"].values())
    assert (out / "source.pt").is_file()
    again = subprocess.run([sys.executable, str(ROOT / "examples" / "transfer_finetune.py"), "--smoke", "--out",
                            str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode != 0 and "--overwrite" in again.stderr

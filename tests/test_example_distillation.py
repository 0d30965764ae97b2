"""The distillation tutorial runs end to end with --smoke and reports every model it trains."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "distillation.py"


def test_example_runs_with_smoke(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--smoke", "--out", str(out)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for text in ("glyphs: 6 classes, 90 training and 30 test drawings", "teacher   (conv4, 8 filters)",
                 "from scratch:", "distilled:", "generation 2: test accuracy", "ensemble of generations 1-2"):
        assert text in proc.stdout
    # kd_loss of student (0, 0) vs teacher (1, 0), label 0, T=4, alpha=0.5: 0.5 log 2 + 0.5 * 16 * KL
    assert "kd_loss on one example: 0.4086" in proc.stdout
    result = json.loads((out / "results.json").read_text())
    assert set(result) >= {"teacher", "scratch", "distilled", "scratch_agreement", "distilled_agreement"}
    assert [g["generation"] for g in result["born_again"]["generations"]] == [0, 1, 2]
    assert all(0 <= result[k] <= 1 for k in ("teacher", "scratch", "distilled"))

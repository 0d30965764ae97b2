"""The tutorials in examples/ run end to end with --smoke (their full runs take minutes)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--smoke", *args],
                            cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_maml_omniglot_smoke(tmp_path):
    out = run_example("maml_omniglot.py", "--dataset", "glyphs", "--out", str(tmp_path / "maml"), cwd=tmp_path)
    assert re.search(r"meta-trained 10 iterations", out)
    acc = float(re.search(r"accuracy ([\d.]+) \+- [\d.]+ %", out).group(1))
    assert 0.0 <= acc <= 100.0
    assert (tmp_path / "maml" / "best.pt").is_file() and (tmp_path / "maml" / "learning_curve.png").is_file()


def test_maml_omniglot_without_data_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "maml_omniglot.py"), "--smoke",
                             "--root", str(tmp_path / "nothing")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "--download" in result.stderr


def test_multitask_sharing_smoke(tmp_path):
    out = run_example("multitask_sharing.py", "--dataset", "glyphs", "--out", str(tmp_path / "mt"), cwd=tmp_path)
    for arch in ("single", "hard", "soft"):
        assert re.search(rf"^\s*{arch}\s+[\d,]+ parameters", out, flags=re.M)
    assert re.search(r"Delta-m of soft over single-task: [+-][\d.]+ %", out)
    assert (tmp_path / "mt" / "hard" / "curves.png").is_file()


def test_self_training_smoke(tmp_path):
    out = run_example("self_training.py", cwd=tmp_path)
    assert "round 1:" in out and re.search(r"supervised only: [\d.]+ % -> after self-training: [\d.]+ %", out)

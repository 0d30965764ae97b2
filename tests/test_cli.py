"""The mtlmeta console script: discovery commands and error handling."""

import json
import subprocess
import sys

from mtl.cli import main


def test_backbones_lists_builtins(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    for name in ("mlp", "conv4", "resnet12"):
        assert name in out


def test_backbones_json_details(capsys):
    assert main(["backbones", "conv*", "--details", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "conv4" and rows[0]["out_features"] == 64


def test_no_match_is_exit_2(capsys):
    assert main(["backbones", "zzz*"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no backbone matches 'zzz*'" in err


def test_datasets(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "glyphs" in out and "omniglot" in out and "sinusoid" in out


def test_console_script_bad_argument_exit_code():
    proc = subprocess.run([sys.executable, "-m", "mtl.cli", "nonsense"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_import_option_registers_user_backbones(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_backbones.py").write_text(
        "from torch import nn\n"
        "from mtl.backbones import Backbone, register_backbone\n"
        "@register_backbone('user_tiny', overwrite=True)\n"
        "def user_tiny(num_classes=None):\n"
        "    '''A user's own backbone.'''\n"
        "    return Backbone(nn.Flatten(), 784, (1, 28, 28), num_classes)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--import", "my_backbones", "backbones", "user*"]) == 0
    assert "user_tiny" in capsys.readouterr().out


def test_import_of_missing_module_is_exit_2(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["--import", "no_such_module_xyz", "backbones"])
    assert exc.value.code == 2 and "no_such_module_xyz" in capsys.readouterr().err

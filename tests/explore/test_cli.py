"""``hope explore`` on the command line: help without torch or Gradio, and the app's handlers wired."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_help_imports_neither_torch_nor_gradio():
    code = ("import sys\nfrom hope.cli import main\ntry:\n    main(['explore', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src")}).stdout
    assert "--share-nothing" in out and "--checkpoint" in out and out.strip().endswith("False False")


def test_bad_port_is_a_user_error(capsys):
    from hope.cli import main

    assert main(["explore", "--port", "0"]) == 2
    assert "--port" in capsys.readouterr().err


def test_app_builds_offline():
    pytest.importorskip("gradio", reason="needs the explore extra")
    from hope.explore.app import build_app, draw_inspection

    app, theme = build_app(None)
    assert app.analytics_enabled is False
    assert all("googleapis" not in str(font) for font in theme._font)
    assert draw_inspection(None) == (None, None, None)

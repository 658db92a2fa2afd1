"""The ``hope explore`` page in a real browser: Debian's chromium, headless, driven by Playwright.

For each figure: move one slider, see the plot's image change; the inspector reads a text of a tiny checkpoint;
no console errors. ``HOPE_EXPLORE_SCREENSHOTS=docs/explore`` also writes the screenshots of the README there.
Skips (with the reason) without Gradio, Playwright or a chromium binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="hope explore needs the explore extra (gradio)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
CHROMIUM = next((p for p in (os.environ.get("HOPE_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).exists()), None)
if CHROMIUM is None:
    pytest.skip("no chromium binary (apt-get install -y chromium)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
FIGURES = range(1, 7)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    from hope.checkpoint import save_checkpoint
    from hope.data.tokenizer import BytesTokenizer
    from hope.models import build

    torch.manual_seed(0)
    checkpoint = tmp_path_factory.mktemp("explore") / "checkpoint"
    save_checkpoint(checkpoint, build("hope", "tiny", vocab_size=257, d_model=32, n_layers=2, n_heads=2),
                    BytesTokenizer())
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hope", "explore", "--checkpoint", str(checkpoint), "--port",
                             str(port), "--share-nothing"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"hope explore exited: {proc.stdout.read().decode()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _image(page, selector: str, timeout: float = 60_000) -> str:
    page.wait_for_selector(f"{selector} img", timeout=timeout)
    return page.locator(f"{selector} img").first.get_attribute("src")


@pytest.mark.slow
def test_every_figure_redraws_and_no_console_errors(server, tmp_path):
    shots = Path(os.environ.get("HOPE_EXPLORE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    errors = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        for index in FIGURES:
            before = _image(page, f"#fig{index}")
            page.locator(f"#fig{index}-s0 input[type=range]").press("ArrowRight")  # one step of the first slider
            page.wait_for_function(
                "([sel, old]) => { const i = document.querySelector(sel); return i && i.getAttribute('src') !== old; }",
                arg=[f"#fig{index} img", before], timeout=30_000)
            page.locator(f"#fig{index}").scroll_into_view_if_needed()
            page.locator(f"#fig{index}").screenshot(path=str(shots / f"fig{index}.png"))
        for name in ("loss", "gates", "memory"):
            _image(page, f"#fig7-{name}", timeout=120_000)
            page.locator(f"#fig7-{name}").screenshot(path=str(shots / f"fig7-{name}.png"))
        assert "tokens, mean loss" in page.locator("#status").inner_text()
        browser.close()
    assert not errors, errors

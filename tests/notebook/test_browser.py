"""A real JupyterLab in Debian's chromium: run 01_quickstart and watch ε climb while training runs.

Starts JupyterLab on 127.0.0.1 with a temporary token, opens the notebook through the `playwright`
Python package driving /usr/bin/chromium, runs all cells, samples the dashboard's ε text while the
training cell is still executing, checks the final value against get_dp_metrics() as printed by the
notebook, and saves a screenshot under reports/browser/.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (make dev installs it: apt-get install chromium)")
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", root)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, TINKER_NB_FAST="1", TINKER_NB_STEPS="300", HF_HUB_OFFLINE="1", TINKER_NB_KEY_DIR=str(tmp_path / "keys"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jcfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "jrt"))
    # Render every cell (no virtual windowing), so the dashboard stays in the DOM while later cells run.
    settings = tmp_path / "jcfg" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    (tmp_path / "jcfg" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (tmp_path / "jcfg" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension" /
     "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "jcfg" / "lab" / "user-settings")
    jupyter = Path(sys.executable).parent / "jupyter"
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.root_dir={root}",
         f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True",
         "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "wb"), cwd=root)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
    yield base, token
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_quickstart_dashboard_live_in_real_browser(lab):
    from playwright.sync_api import sync_playwright

    base, token = lab
    shots = ROOT / "reports" / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/lab/tree/01_quickstart.ipynb?token={token}")
        page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=120_000)
        page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.status === 'idle'; }", timeout=120_000)
        # Fire and forget: awaiting the command's promise would return only after every cell ran.
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        eps_text = '.tnb-dash [data-k="epsilon"]'
        seen: list[tuple[float, float, bool]] = []  # (time, ε shown, training output already printed?)
        t0 = time.time()
        while time.time() - t0 < 400:
            done_printed = page.locator("text=/ε = [0-9.]+ \\(pld/").count() > 0
            if page.locator(eps_text).count():
                try:
                    seen.append((time.time() - t0, float(page.locator(eps_text).first.inner_text()), done_printed))
                except ValueError:
                    pass
            if done_printed and page.locator(eps_text).count():
                break
            time.sleep(0.1)
        print("samples:", [(round(t, 1), v, d) for t, v, d in seen][:: max(1, len(seen) // 30)])
        seen2 = [(v, d) for _, v, d in seen]
        live = sorted({v for v, printed in seen2 if not printed and v > 0})
        page.locator(eps_text).first.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "quickstart-live.png"))
        assert len(live) >= 2, f"ε did not change while training ran: {seen[:20]}…"
        page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " return w.sessionContext.session.kernel.status === 'idle'; }", timeout=300_000)
        time.sleep(1.0)
        out = page.inner_text(".jp-Notebook")
        m = re.search(r"ε = ([0-9.]+) \(pld", out)
        assert m, "the training cell's get_dp_metrics() line is missing"
        final_dash = float(page.locator(eps_text).first.inner_text())
        assert abs(final_dash - float(m.group(1))) < 1e-3
        assert "Traceback" not in out
        page.screenshot(path=str(shots / "quickstart.png"), full_page=False)
        browser.close()

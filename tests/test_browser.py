"""The notebooks in a real browser: JupyterLab + headless Debian Chromium, driven by Playwright.

Opt-in (``NASVIZ_BROWSER_TESTS=1``, marker ``browser``; ``make browser-test``). Needs
``/usr/bin/chromium`` (``sh tools/install_browser.sh``) and the ``playwright`` Python package
(its own browser download is not used). For every notebook in ``notebooks/``:

1. JupyterLab serves a temporary copy of ``notebooks/`` on 127.0.0.1 (free port, empty token,
   isolated settings: no windowing, so every cell is in the DOM; no news);
2. Chromium opens the notebook and runs all cells (``notebook:run-all-cells`` through
   ``window.jupyterapp``) and waits until every code cell has an execution count;
3. checks: widget outputs rendered (``.jp-OutputArea-output .lm-Widget``, and
   ``.js-plotly-plot`` where the notebook uses a plotly view), no "Error displaying widget" /
   "model not found" text, no traceback in a stderr/error output, no relevant JS error;
4. in the explorer notebook (05) moves a slider with the keyboard and checks a plot changed,
   then clicks a point of the Pareto front and checks the current-choice marker moved onto it;
5. saves a screenshot of the first plot (or widget) output to ``docs/screenshots/<name>.png``.

The server is stopped by its PID in a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
RUN_TIMEOUT_S = 420
#: JS console errors that matter: anything about widgets, plots, comms or uncaught errors
RELEVANT = re.compile(r"widget|plotly|anywidget|model not found|comm|uncaught|JSON", re.I)
#: source text of a notebook that shows a plotly view
PLOTLY_VIEWS = re.compile(
    r"nasviz\.widgets\.(heatmap|bisection|explorer|activations|dashboard)|FigureWidget"
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        os.environ.get("NASVIZ_BROWSER_TESTS") != "1",
        reason="real-browser test: set NASVIZ_BROWSER_TESTS=1 (needs /usr/bin/chromium)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_settings(settings: Path) -> None:
    """No cell windowing (all cells in the DOM), no kernel dialog, no news or update checks."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "windowingMode": "none",
            "autoStartDefaultKernel": True,
        },
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for name, value in files.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `sh tools/install_browser.sh` (as root)")
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns("src", "*.pt"))
    _write_settings(base / "settings")
    port = _free_port()
    cmd = [
        str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.token=", "--ServerApp.password=",
        "--ServerApp.allow_root=True", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={base / 'settings'}",
        f"--LabApp.workspaces_dir={base / 'workspaces'}",
    ]  # fmt: skip
    log = (base / "server.log").open("w")
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start; log:\n{(base / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path_factory.mktemp("chromium")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


#: the notebook panel on show (the workspace is reset per page, but be sure)
_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
_PROMPTS_JS = f"""() => [...document.querySelectorAll('{_PANEL} .jp-CodeCell .jp-InputPrompt')]
    .map(p => p.textContent.trim())"""

_PLOTS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd =>
    JSON.stringify((gd.data || []).map(t => [t.x, t.y, t.z])))"""


_KERNEL_IDLE_JS = """() => { const w = window.jupyterapp.shell.currentWidget;
    const s = w && w.sessionContext;
    return !!(s && s.isReady && s.session && s.session.kernel
              && s.session.kernel.status === 'idle'); }"""


def _run_all(page: Any) -> list[str]:
    """Run every cell; return the input prompts once no cell is running or queued."""
    page.wait_for_selector(f"{_PANEL} .jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
    page.wait_for_timeout(2000)
    dialog = page.locator(".jp-Dialog .jp-mod-accept")  # "Select Kernel", should it still ask
    if dialog.count():
        dialog.first.click()
    page.wait_for_function(_KERNEL_IDLE_JS, timeout=120_000)
    page.wait_for_timeout(3000)  # a kernel that is replaced right after starting drops cells
    page.wait_for_function(_KERNEL_IDLE_JS, timeout=120_000)
    page.evaluate(  # not awaited: the command's promise ends with the last cell
        "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }"
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    stable = 0
    prompts: list[str] = []
    while time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        prompts = page.evaluate(_PROMPTS_JS)
        done = bool(prompts) and not any("*" in p for p in prompts)
        done = done and any(re.search(r"\d", p) for p in prompts)
        stable = stable + 1 if done else 0
        if stable >= 3:
            return prompts
    pytest.fail(f"cells still running after {RUN_TIMEOUT_S} s: {prompts}")


def _problems(page: Any) -> list[str]:
    found = []
    text = page.inner_text(f"{_PANEL} .jp-Notebook")
    for needle in ("Error displaying widget", "model not found"):
        if needle in text:
            found.append(f"page shows {needle!r}")
    stderr = page.locator(
        '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'
    ).all_inner_texts()
    found += [f"traceback in a cell output: {t[-600:]}" for t in stderr if "Traceback" in t]
    found += [f"error output: {t[-600:]}" for t in stderr if re.search(r"\w+Error: ", t)]
    return found


def _move_a_slider(page: Any) -> None:
    """Press ArrowLeft (then ArrowRight) on the explorer's sliders until a plot changes."""
    before = page.evaluate(_PLOTS_JS)
    handles = page.locator(".jp-OutputArea-output .widget-slider .noUi-handle")
    assert handles.count() > 0, "no slider rendered"
    for i in range(min(handles.count(), 4)):
        for key in ("ArrowLeft", "ArrowRight", "ArrowRight"):
            handles.nth(i).focus()
            page.keyboard.press(key)
            page.wait_for_timeout(1500)
            if page.evaluate(_PLOTS_JS) != before:
                return
    pytest.fail("moving the explorer's sliders did not change any plot")


_FRONT_POINT_JS = """() => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')].find(g =>
        g.layout && g.layout.title && String(g.layout.title.text || '').startsWith('Pareto front'));
    if (!gd) return null;
    gd.scrollIntoView();
    const pts = gd.querySelectorAll('.scatterlayer .trace')[0].querySelectorAll('.point');
    const k = Math.floor(pts.length / 3);
    const r = pts[k].getBoundingClientRect();
    return {k: k, x: r.left + r.width / 2, y: r.top + r.height / 2,
            px: gd.data[0].x[k], py: gd.data[0].y[k]};
}"""

_CURRENT_CHOICE_JS = """(k) => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')].find(g =>
        g.layout && g.layout.title && String(g.layout.title.text || '').startsWith('Pareto front'));
    if (!gd) return null;
    const out = gd.closest('.jp-OutputArea-output');
    const readouts = [...out.querySelectorAll('.widget-slider .widget-readout')]
        .map(r => r.textContent.trim());
    const on = gd.data[0].x.findIndex((x, j) =>
        Math.abs(x - gd.data[1].x[0]) < 1e-6 && Math.abs(gd.data[0].y[j] - gd.data[1].y[0]) < 1e-9);
    return {x: gd.data[1].x[0], y: gd.data[1].y[0], text: gd.data[0].text[k],
            readouts: readouts, on_front: on};
}"""


_LISTEN_JS = """() => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')].find(g =>
        g.layout && g.layout.title && String(g.layout.title.text || '').startsWith('Pareto front'));
    window._nvClicks = 0; window._nvHovers = 0;
    gd.on('plotly_click', () => { window._nvClicks += 1; });
    gd.on('plotly_hover', () => { window._nvHovers += 1; });
}"""

_EMIT_CLICK_JS = """(k) => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')].find(g =>
        g.layout && g.layout.title && String(g.layout.title.text || '').startsWith('Pareto front'));
    const t = gd._fullData[0];
    gd.emit('plotly_click', {points: [{curveNumber: 0, pointNumber: k, pointIndex: k,
        x: t.x[k], y: t.y[k], data: gd.data[0], fullData: t}], event: {}});
}"""


def _click_a_front_point(page: Any) -> str:
    """Click a point of the explorer's Pareto front; the current-choice cross must move onto it.

    Returns how the click reached plotly: ``"mouse"`` (a real click on the point) or ``"event"``
    (plotly's own ``plotly_click`` event emitted for that point, when headless Chromium's mouse
    click does not reach plotly's hit test; the FigureWidget -> Python -> sliders path is the same).
    """
    target = page.evaluate(_FRONT_POINT_JS)
    assert target is not None, "no Pareto front plot rendered"
    page.wait_for_timeout(500)
    target = page.evaluate(_FRONT_POINT_JS)  # coordinates after scrolling
    page.evaluate(_LISTEN_JS)
    before = page.evaluate(_CURRENT_CHOICE_JS, target["k"])
    # plotly reports a click on the point it is hovering: hover first, then click
    page.mouse.move(target["x"] - 3, target["y"])
    page.wait_for_timeout(300)
    page.mouse.move(target["x"], target["y"])
    page.wait_for_timeout(500)
    page.mouse.click(target["x"], target["y"])

    def landed() -> Any:
        """``None`` once the current choice sits on a front point it was not on before (the
        clicked one, or a neighbour plotly found nearer the mouse).
        """
        for _ in range(12):
            page.wait_for_timeout(500)
            cur = page.evaluate(_CURRENT_CHOICE_JS, target["k"])
            moved = (cur["x"], cur["y"]) != (before["x"], before["y"])
            if moved and cur["on_front"] >= 0:
                return None
        return cur

    cur = landed()
    if cur is None:
        return "mouse"
    seen = page.evaluate("() => [window._nvHovers, window._nvClicks]")
    under = page.evaluate(
        "([x, y]) => { const e = document.elementFromPoint(x, y); "
        "return e ? e.tagName + '.' + e.getAttribute('class') : null; }",
        [target["x"], target["y"]],
    )
    page.evaluate(_EMIT_CLICK_JS, target["k"])
    cur2 = landed()
    assert cur2 is None, (
        f"clicking front point {target} did not set the sliders, neither by mouse (hovers, "
        f"clicks seen by plotly: {seen}; element under the mouse: {under}; current: {cur}) nor "
        f"by plotly's click event (current: {cur2})"
    )
    return f"event (mouse: hovers/clicks seen by plotly {seen}, element under it {under})"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_renders_in_chromium(lab: str, browser: Any, notebook: Path) -> None:
    source = notebook.read_text()
    wants_widgets = "nasviz.widgets" in source or "ipywidgets" in source
    wants_plots = bool(PLOTLY_VIEWS.search(source))
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    try:
        page.goto(f"{lab}/lab/tree/{notebook.name}?reset", wait_until="domcontentloaded")
        prompts = _run_all(page)
        not_run = [i for i, p in enumerate(prompts) if not re.search(r"\d", p)]
        assert not not_run, f"cells {not_run} did not run: {_problems(page)}"
        if wants_widgets:
            page.wait_for_selector(".jp-OutputArea-output .lm-Widget", timeout=60_000)
        if wants_plots:
            page.wait_for_selector(".jp-OutputArea-output .js-plotly-plot", timeout=60_000)
        page.wait_for_timeout(1500)  # let the last plots draw
        assert _problems(page) == []
        relevant = [e for e in errors if RELEVANT.search(e)]
        assert relevant == [], f"JS errors: {relevant}"
        if notebook.stem.startswith("05"):
            _move_a_slider(page)
            how = _click_a_front_point(page)
            assert how == "mouse", f"the front point was reached only by {how}"
        SHOTS.mkdir(parents=True, exist_ok=True)
        selector = ".js-plotly-plot" if wants_plots else ".lm-Widget" if wants_widgets else None
        target = page.locator(f".jp-OutputArea-output:has({selector})") if selector else None
        if target is not None and target.count():
            target.first.scroll_into_view_if_needed()
            target.first.screenshot(path=str(SHOTS / f"{notebook.stem}.png"))
        else:
            page.screenshot(path=str(SHOTS / f"{notebook.stem}.png"))
    finally:
        with contextlib.suppress(Exception):  # stop this notebook's kernel before the next one
            page.evaluate("() => window.jupyterapp.serviceManager.sessions.shutdownAll()")
        page.close()

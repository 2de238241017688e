"""Browser tests: a real JupyterLab (started as `make lab` starts it) on a temporary clone of the course,
driven in headless Chromium by Playwright. Without a browser they skip, naming the install command;
with LLMCOURSE_REQUIRE_BROWSER=1 (as in .ci/run) they fail instead."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ENV, REQUIRE_ENV = "LLMCOURSE_CHROMIUM", "LLMCOURSE_REQUIRE_BROWSER"
INSTALL = "apt-get install chromium (Debian/Ubuntu), or set LLMCOURSE_CHROMIUM to a Chromium or Chrome binary"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS: list[Path] = []


def find_chromium() -> str | None:
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV]
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
                None)


def _need(what: str) -> None:
    if os.environ.get(REQUIRE_ENV, "").strip() in {"1", "true", "yes"}:
        pytest.fail(f"{REQUIRE_ENV}=1 but {what}")
    pytest.skip(what)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        _need(f"no Chromium for the browser tests: {INSTALL}")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _need("the playwright package is not installed: pip install -e '.[test]'")
    return path


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "browser-screenshots"
    folder.mkdir(exist_ok=True)
    SCREENSHOTS.append(folder)
    return folder


def pytest_terminal_summary(terminalreporter):
    for folder in SCREENSHOTS:
        shots = sorted(p.name for p in folder.glob("*.png"))
        if shots:
            terminalreporter.write_line(f"browser screenshots ({len(shots)}): {folder}")


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A learner's clone of the course (what is committed), with their copy of chapter 02's exercises, and
    chapter 02 released to the instructor's gradebook (for formgrader)."""
    folder = tmp_path_factory.mktemp("course") / "llm-course"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(folder)], check=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for args in (["-m", "llmcourse.cli", "start", "02"], ["-m", "llmcourse.cli", "grade", "release", "02"]):
        subprocess.run([sys.executable, *args], cwd=folder, env=env, check=True, capture_output=True)
    return folder


@pytest.fixture(scope="module")
def lab(course, tmp_path_factory):
    """JupyterLab on the course, started the way `make lab` starts it (llmcourse.lab.LabServer) on a free port
    with a token and its own config, runtime, settings and workspaces folders; shut down through its API."""
    from llmcourse.lab import LabServer, free_port

    state = tmp_path_factory.mktemp("jupyter-state")
    settings = {  # no news pop-up; every cell in the page (JupyterLab 4 renders only the visible ones by default)
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"windowingMode": "none"},
    }
    for name, values in settings.items():
        path = state / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    server = LabServer(course, port=free_port(), state_dir=state, open_browser=False)
    log = open(state / "server.log", "w")
    proc = subprocess.Popen(server.argv(), cwd=course, env=server.env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{server.url}/api/status?token={server.token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start:\n{(state / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield server
    finally:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{server.url}/api/shutdown?token={server.token}",
                                                          method="POST"), timeout=10)
            proc.wait(timeout=60)
        except Exception:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
